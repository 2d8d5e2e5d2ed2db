"""`DistillConfig`: every setting of a distillation run, flat, so each switch is one flag or YAML key.

Layering (later wins): size preset (``tiny``/``sd15``) <- method preset (``methods.py``, per stage) <- YAML
<- command-line flags. The method switches default to ``None`` here, meaning "take the method's value";
``with_method_defaults()`` fills them in, and the run folder's ``config.yaml`` records the resolved values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from animlcm.config import SIZES, check_preset
from animlcm.errors import AnimlcmError
from animlcm.stages.distill.loop_config import MIXED_PRECISION as MIXED_PRECISION  # re-exported
from animlcm.stages.distill.loop_config import RESUMABLE_CHANGES as RESUMABLE_CHANGES  # re-exported
from animlcm.stages.distill.loop_config import STAGES, LoopSettings

LOSSES = ("huber", "l2")
TINY_LORA_RANK = 4


@dataclass(frozen=True)
class DistillConfig(LoopSettings):
    """A consistency-distillation run (DESIGN section 4). ``None`` switches take the method's value.

    Run folder, stage and loop settings come from ``LoopSettings`` (``init``: start the student from that
    run's student, e.g. the spatial run for --stage temporal; ``lr`` None: the method's).
    """

    teacher: Path | None = None
    """Teacher model folder (`animlcm teacher init` / `train-teacher` / `import`)."""
    method: str = "lcm"
    """lcm | dancelcm | cosec | animatelcm (a preset of the switches below)."""

    # --- base LCD
    num_ddim_steps: int = 50
    """N: the skipping grid has N of the 1000 training steps (skip k = 1000 / N)."""
    w: float | None = None
    """CFG scale of the teacher's DDIM step, x0 = x0_c + w (x0_c - x0_u)."""
    w_range: tuple[float, float] | None = None
    """Draw w uniformly from [w_min, w_max] per sample instead of the fixed w."""
    ema: float | None = None
    """EMA decay mu of the target network."""
    adjacent: bool | None = None
    """t_n one solver step below t_{n+k} (LCM, the default); False: t_n uniform over the levels of t_{n+k}'s
    segment below it (DanceLCM eq. 4 literally; the teacher bridges the gap with ONE DDIM step)."""
    loss: str | None = None
    """huber (pseudo-Huber) | l2."""
    huber_c: float = 0.001
    """c of the per-element pseudo-Huber distance (diffusers' LCM script's huber_c)."""
    share_reference: bool | None = None
    """ReferenceLCM: reference features and image tokens computed once per batch, shared by all three nets."""
    reuse_reference: bool = True
    """Run the frozen reference net once per step wherever the target's or teacher's features would be the
    student's bit for bit (no face tokens, equal frozen weights, one dtype): exact, only faster."""
    batched_cfg: bool = False
    """The teacher's conditional and unconditional passes in one call of twice the batch (the unconditional
    rows' reference keys masked out): fewer, larger calls; equal to two calls up to float rounding."""
    share_base: bool = True
    """LoRA-only runs: teacher and EMA target are the student's base network seen through its adapters (off;
    a second, EMA adapter) instead of two more copies of the network: exact, less memory."""
    standalone: bool = False
    """Write a self-contained student folder; by default a full student links the parts it shares with its
    teacher bit for bit (reference net, CLIP encoder, VAE) instead of storing them again."""

    # --- DanceLCM
    segments: int | None = None
    """K of segmented consistency distillation (1 = plain LCD)."""
    aux_head: float | None = None
    """lambda_2 of the GT-latent auxiliary head loss (0 = off)."""
    motion_weight: float | None = None
    """lambda_1 of the motion-focused loss (0 = off)."""
    motion_delta: float | None = None
    """Recompute the motion masks with this threshold (None: the cache's masks)."""
    face_tokens: bool | None = None

    # --- CoSeC
    eta: float | None = None
    """phi_1: Equivalent Target Aggregation weight (two references from the same video)."""
    cons: float | None = None
    """phi_2: Contrastive Negative Sampling weight (a reference from another video)."""
    cons_margin: float = 1.0
    """CoNS is a hinge max(0, margin - d): bounded below, unlike the paper's plain -d."""
    temporal_sdm: float | None = None
    """lambda of the temporal self-dependency-matrix loss (temporal stage)."""

    # --- AnimateLCM
    lora_rank: int | None = None
    """LoRA rank (0 = train the full weights)."""
    lora_layers: str = "spatial"
    """Where the LoRA goes: spatial (the SD blocks, the spatial stage's LoRA) | all (the motion modules'
    attention too: LoRA for the temporal stage instead of training the motion modules in full)."""
    lora_targets: str | None = None
    """all (LCM-LoRA's set: attention q/k/v/out, feed-forward, proj_in/out, ResNet and resampling
    convolutions) | attention (q/k/v/out only)."""
    lora_init_strategy: bool | None = None
    """LoRA enters the online student only; the target gets it through EMA."""
    timestep_weighting: tuple[float, float] | None = None
    """(delta, gamma) of lambda_n = (1 - delta n / N)^gamma."""
    teacher_free: bool | None = None
    """No teacher call: x_hat_{t_n} from the real latent and the same noise."""
    train_modules: str | None = None
    """What the student trains: all (unet + pose guider) | motion (motion modules only) | lora."""

    @classmethod
    def from_preset(cls, name: str) -> DistillConfig:
        check_preset(name)
        if name == "sd15":
            return cls(preset=name, mixed_precision="bf16", gradient_checkpointing=True, checkpoint_every=500)
        return cls(preset=name, checkpoint_every=500, num_workers=0)

    # ------------------------------------------------------------------ resolution
    def with_method_defaults(self) -> DistillConfig:
        """Fill every unset switch from the method preset for this stage (explicit values win)."""
        from animlcm.stages.distill.methods import method_switches

        switches = method_switches(self.method, self.stage)
        changes = {k: v for k, v in switches.items() if getattr(self, k) is None}
        if self.preset == "tiny" and "lora_rank" in changes and changes["lora_rank"]:
            changes["lora_rank"] = TINY_LORA_RANK  # rank 64 exceeds the tiny net's 32-wide layers
        if self.num_frames is None:
            changes["num_frames"] = SIZES[self.preset].num_frames
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    @property
    def needs_second_reference(self) -> bool:
        return bool((self.eta or 0) > 0 or (self.temporal_sdm or 0) > 0)

    @property
    def needs_other_reference(self) -> bool:
        return bool((self.cons or 0) > 0)

    def validate(self) -> None:
        from animlcm.stages.distill.methods import METHODS

        def bad(msg: str) -> AnimlcmError:
            return AnimlcmError(f"distill config: {msg}")

        if self.stage not in STAGES:
            raise bad(f"unknown stage '{self.stage}': choose spatial or temporal")
        if self.method not in METHODS:
            raise bad(f"unknown method '{self.method}': choose one of {', '.join(METHODS)}")
        if self.loss is not None and self.loss not in LOSSES:
            raise bad(f"unknown loss '{self.loss}': choose huber or l2")
        self.validate_loop(bad)
        if self.num_frames is not None and self.num_frames < 1:
            raise bad(f"num_frames must be >= 1 (got {self.num_frames})")
        if not 1 <= self.num_ddim_steps <= 1000 or 1000 % self.num_ddim_steps:
            raise bad(f"num_ddim_steps must divide 1000 (got {self.num_ddim_steps}); 50 is the LCM default")
        if self.segments is not None and not 1 <= self.segments <= self.num_ddim_steps:
            raise bad(f"segments must be in [1, num_ddim_steps] (got {self.segments})")
        if self.ema is not None and not 0.0 <= self.ema < 1.0:
            raise bad(f"ema must be in [0, 1) (got {self.ema})")
        if self.w_range is not None and (len(self.w_range) != 2 or self.w_range[0] > self.w_range[1]):
            raise bad(f"w_range must be [w_min, w_max] with w_min <= w_max (got {list(self.w_range)})")
        if self.timestep_weighting is not None and len(self.timestep_weighting) != 2:
            raise bad("timestep_weighting must be two numbers: delta,gamma")
        if self.lora_rank is not None and self.lora_rank < 0:
            raise bad(f"lora_rank must be >= 0 (got {self.lora_rank})")
        if self.train_modules is not None and self.train_modules not in ("all", "motion", "lora"):
            raise bad(f"train_modules '{self.train_modules}': choose all, motion or lora")
        if self.lora_layers not in ("spatial", "all"):
            raise bad(f"lora_layers '{self.lora_layers}': choose spatial or all")
        if self.lora_layers == "all" and self.stage != "temporal":
            raise bad("--lora-layers all puts LoRA on the motion modules, which run only in --stage temporal")
        if self.lora_targets is not None and self.lora_targets not in ("all", "attention"):
            raise bad(f"lora_targets '{self.lora_targets}': choose all or attention")
        if self.train_modules == "lora" and not self.lora_rank:
            raise bad("train_modules lora needs --lora-rank > 0")
        for name in ("aux_head", "motion_weight", "eta", "cons", "temporal_sdm", "lr"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise bad(f"{name} must be >= 0 (got {v})")
        if self.temporal_sdm and self.stage == "spatial":
            raise bad("temporal_sdm needs clips: use it with --stage temporal (or set it to 0)")
        if self.huber_c <= 0:
            raise bad(f"huber_c must be > 0 (got {self.huber_c})")

    def check_paths(self) -> None:
        """The inputs a run needs (checked at run time, not at parse time, so tests can build configs)."""
        if self.cache is None:
            raise AnimlcmError("distill: --cache CACHE is required (a folder written by `animlcm extract`)")
        if self.teacher is None:
            raise AnimlcmError("distill: --teacher DIR is required (a teacher model folder)")
        if self.out is None:
            raise AnimlcmError("distill: --out RUN is required (the run folder to write)")
        if not Path(self.cache).is_dir():
            raise AnimlcmError(f"{self.cache}: cache folder not found; run `animlcm extract` first")
        if not Path(self.teacher).exists():
            raise AnimlcmError(
                f"{self.teacher}: teacher folder not found; make one with `animlcm teacher init`"
            )
        if self.init is not None and not Path(self.init).exists():
            raise AnimlcmError(f"{self.init}: --init run folder not found; run the spatial stage first")
