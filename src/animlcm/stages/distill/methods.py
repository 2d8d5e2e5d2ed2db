"""The four methods as presets of switches (nerfstudio's ``method_configs`` idea), per stage.

A method is nothing but values for `DistillConfig`'s switch fields; every one of them is also a flag, so an
ablation is one flag away (``--method dancelcm --segments 1`` is DanceLCM without segments). Values are the
papers' (DESIGN section 4) where they state one; where they do not, the choice is marked.
"""

from __future__ import annotations

from typing import Any

from animlcm.errors import AnimlcmError

# Base LCD (Luo et al.; AnimateLCM eq. 3-8). Every method starts from these.
_BASE: dict[str, Any] = dict(
    lr=1e-5,
    w=2.5,  # pose-guided teachers run CFG around 2.5-3.5; CoSeC uses 2.5 (spatial)
    w_range=None,
    ema=0.95,
    adjacent=True,  # t_n one solver step below t_{n+k} (LCM); False: DanceLCM eq. 4 literally
    loss="huber",
    share_reference=False,
    segments=1,
    aux_head=0.0,
    motion_weight=0.0,
    face_tokens=False,
    eta=0.0,
    cons=0.0,
    temporal_sdm=0.0,
    lora_rank=0,
    lora_targets="all",  # LCM-LoRA's layer set (attention, feed-forward, proj_in/out, convolutions)
    lora_init_strategy=False,
    timestep_weighting=None,
    teacher_free=False,
    train_modules="all",
)

# method -> (switches for both stages, extra switches per stage)
_METHODS: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {
    "lcm": ({}, {"spatial": {}, "temporal": {}}),
    # DanceLCM (Adam lr 2e-5; K = 2 best in Table 5; lambda_1 = 0.5; lambda_2 = 0.1; VAE face tokens)
    "dancelcm": (
        dict(lr=2e-5, segments=2, aux_head=0.1, motion_weight=0.5, face_tokens=True),
        {"spatial": {}, "temporal": {}},
    ),
    # CoSeC-LCD on ReferenceLCM (lr 1e-6, EMA 0.95; w 2.5 / 1.5; ETA 0.1 / 0.05; CoNS 0.02 / 0).
    # The temporal self-dependency weight lambda is not stated in the paper: 0.1 is our choice.
    "cosec": (
        dict(lr=1e-6, share_reference=True),
        {
            "spatial": dict(w=2.5, eta=0.1, cons=0.02),
            "temporal": dict(w=1.5, eta=0.05, cons=0.0, temporal_sdm=0.1),
        },
    ),
    # AnimateLCM: spatial LoRA (rank 64, lr 1e-4) then motion modules with the init strategy; lambda_n
    # with delta 0.5, gamma 2 (the paper gives the form, not the values: ours).
    "animatelcm": (
        dict(lora_rank=64, lora_init_strategy=True, timestep_weighting=(0.5, 2.0)),
        {
            "spatial": dict(lr=1e-4, train_modules="lora"),
            "temporal": dict(lr=1e-5, train_modules="motion"),
        },
    ),
}

METHODS = tuple(_METHODS)


def method_switches(method: str, stage: str) -> dict[str, Any]:
    """All switch values of ``method`` for ``stage`` (base LCD, then the method's, then the stage's)."""
    if method not in _METHODS:
        raise AnimlcmError(f"unknown method '{method}': choose one of {', '.join(METHODS)}")
    if stage not in ("spatial", "temporal"):
        raise AnimlcmError(f"unknown stage '{stage}': choose spatial or temporal")
    both, per_stage = _METHODS[method]
    return {**_BASE, **both, **per_stage[stage]}


def method_table() -> dict[str, dict[str, dict[str, Any]]]:
    """``{method: {stage: switches}}``: what ``animlcm distill --help`` and the README show."""
    return {m: {s: method_switches(m, s) for s in ("spatial", "temporal")} for m in METHODS}


# Switches that are training hyper-parameters rather than parts of a method: not named in ablation labels.
_NOT_ABLATIONS = frozenset({"lr", "ema", "w", "w_range"})


def ablation_label(cfg: Any) -> str:
    """The switches of a resolved config that differ from its method's preset (``segments=1,face_tokens=off``;
    "" for the method's full configuration): the ``ablation`` column of eval and the quality table."""
    full = type(cfg)(preset=cfg.preset, method=cfg.method, stage=cfg.stage).with_method_defaults()
    parts = []
    for key in method_switches(cfg.method, cfg.stage):
        mine, value = getattr(cfg, key), getattr(full, key)
        if (
            key in _NOT_ABLATIONS
            or mine == value
            or (isinstance(value, tuple) and tuple(mine or ()) == value)
        ):
            continue
        shown = (
            {True: "on", False: "off", None: "off"}.get(mine, mine)
            if isinstance(mine, (bool, type(None)))
            else mine
        )
        if isinstance(shown, tuple):
            shown = ",".join(f"{x:g}" for x in shown)
        parts.append(f"{key}={shown:g}" if isinstance(shown, float) else f"{key}={shown}")
    return ",".join(parts)


def merge_ablations(earlier: str, current: str) -> str:
    """The ablation label of a student whose earlier stage (``--init``) was ablated too: the earlier stage's
    switches, then this stage's new ones (``cons=0`` is off in CoSeC's temporal preset anyway, so a
    temporal student of a ``cons=0`` spatial run would otherwise read as the full method)."""
    parts = [p for p in earlier.split(",") if p]
    return ",".join(parts + [p for p in current.split(",") if p and p not in parts])
