"""Multi-process training as it runs on several GPUs, here on CPU processes (gloo): every rank trains on its
own samples, all ranks hold the same weights after every step, one process writes the run folder, the log
holds the mean loss over processes, and a stopped run resumes bit-exactly."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from animlcm.errors import AnimlcmError

WORKER = Path(__file__).with_name("ddp_worker.py")
DDP_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "ddp.yaml"
ZERO_CONFIG = DDP_CONFIG.with_name("zero2.yaml")
FSDP_CONFIG = DDP_CONFIG.with_name("fsdp.yaml")
ZERO_ENV = {"DS_ACCELERATOR": "cpu"}  # DeepSpeed's CPU accelerator (it looks for CUDA otherwise)
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
TINY_TEACHER = Path(__file__).resolve().parents[1] / "src" / "animlcm" / "assets" / "tiny" / "teacher"


def _launch(
    out: Path, steps: int, mode: str, processes: int = 2, zero: bool = False, loop: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """The worker on ``processes`` (DDP) or one ZeRO-2 process; ``loop``: its accumulation and precision."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if zero:  # DeepSpeed ZeRO-2 through the repo's config, one process on DeepSpeed's CPU accelerator
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ZERO_CONFIG),
               "--num_processes", "1", str(WORKER), str(out), str(steps), mode, *loop]  # fmt: skip
        env.update(ZERO_ENV)
    elif processes == 1:
        cmd = [sys.executable, str(WORKER), str(out), str(steps), mode, *loop]
    else:
        # the repo's own DDP config, as the README's recipe launches it
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG),
               "--num_processes", str(processes), str(WORKER), str(out), str(steps), mode]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _records(out: Path, rank: int) -> list[dict]:
    return [json.loads(x) for x in (out / f"rank{rank}.jsonl").read_text().splitlines()]


def test_two_processes_train_as_one_and_resume_bit_exactly(tmp_path):
    straight = tmp_path / "straight"
    done = _launch(straight, 4, "fresh")
    assert done.returncode == 0, done.stderr[-2000:]
    r0, r1 = _records(straight, 0), _records(straight, 1)
    assert len(r0) == len(r1) == 4
    for a, b in zip(r0, r1, strict=True):
        assert not set(a["index"]) & set(b["index"])  # each rank its own samples
        assert a["weights"] == b["weights"]  # and one model
    assert len({r["weights"] for r in r0}) == 4  # which trained
    seen = [i for r in r0 + r1 for i in r["index"]]
    assert sorted(seen) == list(range(16))  # 4 steps x 2 ranks x batch 2: no sample twice, none skipped
    log = [json.loads(x) for x in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # one writer
    for line, a, b in zip(log, r0, r1, strict=True):
        assert line["loss"] == pytest.approx((a["loss"] + b["loss"]) / 2, rel=1e-6)
        assert line["loss"] != pytest.approx(a["loss"], rel=1e-3)  # not rank 0's own
    assert sorted(p.name for p in straight.glob("result-rank*")) == ["result-rank0.txt"]

    # stopped after 2 steps (its checkpoint), resumed to 4: the same weights as the straight run
    stopped = tmp_path / "stopped"
    assert _launch(stopped, 2, "fresh").returncode == 0
    resumed = _launch(stopped, 4, "resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["weights"] for r in _records(stopped, 0)] == [r["weights"] for r in r0]
    assert [r["weights"] for r in _records(stopped, 1)] == [r["weights"] for r in r1]

    # a checkpoint of 2 processes continued in 1, then in 2 again: the stream goes on where it stopped, no
    # sample read twice or skipped (steps 5-6 read 4 samples, steps 7-8 8)
    alone = _launch(stopped, 6, "resume", processes=1)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert "written by 2 process(es), continued with 1" in alone.stdout
    again = _launch(stopped, 8, "resume")
    assert again.returncode == 0, again.stderr[-2000:]
    seen = [i for rank in (0, 1) for r in _records(stopped, rank) for i in r["index"]]
    assert sorted(seen) == list(range(16 + 4 + 8))


@dataclass(frozen=True)
class _Cfg:
    out: Path
    resume: bool = False
    lr: float = 1e-3


def _prepare_many(out: str) -> int:
    from animlcm.stages.distill.trainer import prepare_run_dir

    for _ in range(40):
        prepare_run_dir(Path(out), _Cfg(out=Path(out)), frozenset())
    return os.getpid()


def test_run_folder_preparation_from_eight_processes_at_once(tmp_path):
    out = str(tmp_path / "run")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        pids = pool.map(_prepare_many, [out] * 8)  # any failure would raise here
    assert len(set(pids)) >= 2
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("out:")
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_resume_compares_paths_as_files_and_accepts_a_moved_run(tmp_path, monkeypatch):
    from animlcm.stages.distill.trainer import prepare_run_dir

    @dataclass(frozen=True)
    class Cfg:
        out: Path
        cache: Path
        resume: bool = False
        lr: float = 1e-3

    (tmp_path / "cache").mkdir()
    monkeypatch.chdir(tmp_path)
    keep = frozenset({"resume"})
    prepare_run_dir(Path("runs/x"), Cfg(out=Path("runs/x"), cache=Path("cache")), keep)
    # the same cache typed absolute, through a symlink, and the run folder moved: all resume
    (tmp_path / "link").symlink_to(tmp_path / "cache")
    (tmp_path / "runs/x").rename(tmp_path / "moved")
    for cache in (tmp_path / "cache", tmp_path / "link"):
        prepare_run_dir(tmp_path / "moved", Cfg(out=tmp_path / "moved", cache=cache, resume=True), keep)
    (tmp_path / "other").mkdir()
    with pytest.raises(AnimlcmError, match=r"cache: .*other.*--out .*moved"):
        prepare_run_dir(tmp_path / "moved", Cfg(out=tmp_path / "moved", cache=Path("other"), resume=True),
                        keep)  # fmt: skip


def test_the_fp16_grad_scaler_is_checkpointed(tmp_path):
    """A fp16 run's loss scale and growth tracker come back on --resume (else the resumed run would start
    again at 2**16 and skip steps on overflow while it re-learns the scale)."""
    import torch

    from animlcm.stages.distill.checkpoint import TrainState, load_checkpoint, save_checkpoint

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    for _ in range(4):  # grow the scale once, leave the growth tracker at 1
        opt.zero_grad()
        scaler.scale(net(torch.ones(1, 3)).sum()).backward()
        scaler.step(opt)
        scaler.update()
    names = [n for n, _ in net.named_parameters()]
    save_checkpoint(tmp_path, TrainState(4, 4), student=net, train_names=names, optimizer=opt, scaler=scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    load_checkpoint(
        next((tmp_path / "checkpoints").iterdir()),
        student=net,
        train_names=names,
        optimizer=opt,
        scaler=fresh,
    )
    assert fresh.state_dict() == scaler.state_dict() and fresh.get_scale() == 2048.0


def test_a_sharded_checkpoint_of_another_process_count_is_refused_before_anything_loads(tmp_path):
    """ZeRO's optimizer state is one shard per process: a checkpoint of 2 processes does not load into 1."""
    import torch

    from animlcm.stages.distill import checkpoint as ckpt

    net = torch.nn.Linear(2, 2)
    names = [n for n, _ in net.named_parameters()]
    opt = torch.optim.AdamW(net.parameters())
    folder = ckpt.save_checkpoint(tmp_path, ckpt.TrainState(3, 6, processes=2, data_offset=4), student=net,
                                  train_names=names, optimizer=opt)  # fmt: skip
    saved = [p.clone() for p in net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    moved = [p.clone() for p in net.parameters()]
    with pytest.raises(ckpt.ProcessCountError, match="written by 2 process") as err:
        ckpt.load_checkpoint(folder, student=net, train_names=names, optimizer=opt, processes=1)
    assert "--num_processes 2" in str(err.value) and "\n" not in str(err.value)
    assert all(torch.equal(a, b) for a, b in zip(moved, net.parameters(), strict=True))  # nothing loaded
    state = ckpt.load_checkpoint(folder, student=net, train_names=names, optimizer=opt)  # (DDP: any count)
    assert (state.processes, state.data_offset, state.consumed()) == (2, 4, 4 + 6 * 2)
    assert all(torch.equal(a, b) for a, b in zip(saved, net.parameters(), strict=True))


def test_megatron_is_refused_in_one_line_and_fsdp_and_deepspeed_go_through():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from animlcm.stages.distill.trainer import check_distributed_type

    kinds = (DistributedType.MULTI_GPU, DistributedType.NO, DistributedType.DEEPSPEED, DistributedType.FSDP)
    for kind in kinds:
        check_distributed_type(SimpleNamespace(distributed_type=kind))
    with pytest.raises(AnimlcmError, match="not supported") as err:
        check_distributed_type(SimpleNamespace(distributed_type=DistributedType.MEGATRON_LM))
    assert "configs/accelerate/fsdp.yaml" in str(err.value) and "\n" not in str(err.value)


def test_fsdp_settings_it_does_not_run_are_refused_in_one_line(monkeypatch):
    from types import SimpleNamespace

    from animlcm.stages.distill import fsdp

    cfg = SimpleNamespace(mixed_precision="bf16")
    accelerator = SimpleNamespace(num_processes=2)
    fsdp.check(accelerator, SimpleNamespace(mixed_precision="fp16"))  # no FSDP launch: nothing to check
    launched = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_OFFLOAD_PARAMS": "false"}
    for key, value in {**launched, "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    fsdp.check(accelerator, cfg)
    refusals = [
        ({"FSDP_VERSION": "1"}, cfg, "fsdp_version: 2"),
        ({"FSDP_OFFLOAD_PARAMS": "true"}, cfg, "fsdp_offload_params: false"),
        ({}, SimpleNamespace(mixed_precision="fp16"), "use --mixed-precision bf16"),
        ({"WORLD_SIZE": "4"}, cfg, "4 processes launched but accelerate sees 2"),
    ]
    for env, settings, message in refusals:
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            with pytest.raises(AnimlcmError, match=message) as err:
                fsdp.check(accelerator, settings)
        assert "\n" not in str(err.value)


def test_fsdp_units_cover_every_layer_both_unets_call_and_keep_the_reference_net_whole():
    """Every layer the motion UNet and its spatial view call is a unit (gathered for its own forward); where
    gradients reach the reference UNet, it is one unit with none inside it (its features leave it from inside
    its layers)."""
    from animlcm.models.io import load_model_folder
    from animlcm.stages.distill.fsdp import layer_units

    net = load_model_folder(TINY_TEACHER, "cpu").net
    units = layer_units(net)
    assert units[-1] is net.reference_unet
    inside = {id(m) for m in net.reference_unet.modules()}
    assert not any(id(u) in inside for u in units[:-1])
    ids = {id(u) for u in units}
    for block in [*net.unet.down_blocks, net.unet.mid_block, *net.unet.up_blocks]:
        for part in ("resnets", "attentions", "motion_modules"):
            assert all(id(layer) in ids for layer in getattr(block, part, None) or [])
    view = net.spatial_unet
    assert all(id(layer) in ids for block in view.down_blocks for layer in block.resnets)
    clip_layers = net.image_encoder.vision_model.encoder.layers
    assert all(id(layer) in ids for layer in clip_layers)
    # where no gradient reaches the reference UNet (frozen, and nothing feeding it trains): its layers instead
    split = {id(u) for u in layer_units(net, whole_reference=False)}
    assert id(net.reference_unet) not in split
    assert all(id(layer) in split for block in net.reference_unet.down_blocks for layer in block.resnets)


def _animlcm(*args: str, config: Path | None = None, processes: int = 2, fails: bool = False) -> str:
    """``python -m animlcm ARGS``, or through ``accelerate launch`` with ``config``; returns its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    head = [sys.executable, "-m", "animlcm"]
    if config is not None:
        head = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                "--num_processes", str(processes), "-m", "animlcm"]  # fmt: skip
        if config == ZERO_CONFIG:
            env.update(ZERO_ENV)
    done = subprocess.run([*head, *args], capture_output=True, text=True, env=env, timeout=300)
    assert (done.returncode != 0) == fails, (args[0], done.stderr[-3000:])
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory) -> Path:
    """Synthetic clips, a tiny teacher without face tokens, and their cache."""
    w = tmp_path_factory.mktemp("inputs")
    _animlcm("synth", "--out", str(w / "v"), "--identities", "2", "--clips", "1", "--frames", "12")
    _animlcm("teacher", "init", "--out", str(w / "t"), "--no-face-tokens")
    t = str(w / "t")
    _animlcm("extract", str(w / "v"), "--out", str(w / "c"), "--pose", "groundtruth", "--teacher", t)
    return w


def _common(inputs: Path, steps: int) -> list[str]:
    return ["--cache", str(inputs / "c"), "--max-steps", str(steps), "--no-progress", "--batch-size", "1"]


def _checkpoint_tensors(run: Path, step: int) -> dict:
    from safetensors.torch import load_file

    folder = run / "checkpoints" / f"step-{step:07d}"
    return {f.stem: load_file(f) for f in sorted(folder.glob("*.safetensors"))}


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]


def test_real_runs_on_two_processes(tmp_path, tiny_inputs):
    """The real commands through the repo's DDP config, 2 gloo processes: a LoRA distillation on a shared base
    (no unused-parameter search: every trained weight gets a gradient), then the teacher training that trains
    the reference net (with the search). Both finish, log every step once and write their result. The teacher
    training again through the FSDP config: the same weights. Then a full fine-tuning distillation through
    the ZeRO-2 config (DeepSpeed's CPU accelerator, one process: accelerate runs DeepSpeed across processes
    only on GPUs)."""
    import torch

    from animlcm.models.io import is_lora_folder, load_model_folder

    w, t = tmp_path, str(tiny_inputs / "t")
    common = _common(tiny_inputs, 2)
    _animlcm("distill", "--teacher", t, "--method", "animatelcm", "--out", str(w / "d"), *common,
             config=DDP_CONFIG)  # fmt: skip
    _animlcm("train-teacher", "--init", t, "--out", str(w / "tt"), *common, config=DDP_CONFIG)
    # FSDP, where the trained reference net stays gathered from its forward to the backward
    _animlcm("train-teacher", "--init", t, "--out", str(w / "ft"), *common, config=FSDP_CONFIG)
    ddp, sharded = _checkpoint_tensors(w / "tt", 2)["student"], _checkpoint_tensors(w / "ft", 2)["student"]
    assert ddp.keys() == sharded.keys() and any("reference_unet" in k for k in ddp)
    for k in ddp:
        torch.testing.assert_close(sharded[k], ddp[k], rtol=1e-4, atol=1e-5)
    assert _losses(w / "ft") == pytest.approx(_losses(w / "tt"), rel=1e-5)
    if HAS_DEEPSPEED:  # (the Makefile installs it: absent only in a hand-made environment)
        _animlcm("distill", "--teacher", t, "--method", "lcm", "--out", str(w / "z"), *common,
                 config=ZERO_CONFIG, processes=1)  # fmt: skip
        assert (w / "z" / "checkpoints" / "step-0000002" / "zero").is_dir()
        assert load_model_folder(w / "z" / "student").kind == "student"
    for run in (w / "d", w / "tt", w / "ft"):
        log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == [1, 2]
    assert is_lora_folder(w / "d" / "student") and load_model_folder(w / "d" / "student").kind == "student"
    assert load_model_folder(w / "tt" / "teacher").kind == "teacher"


def test_fsdp_trains_as_ddp_and_resumes_bit_exactly(tmp_path, tiny_inputs):
    """Through configs/accelerate/fsdp.yaml, 2 gloo processes: student, EMA target and teacher sharded alike.
    The checkpointed student and target weights, the logged losses and the result folder are DDP's (to float
    rounding: a reduce-scatter sums in another order than an all-reduce); every process writes its optimizer
    shard; a run stopped and resumed holds the straight run's weights bit for bit; resuming the sharded
    checkpoint without FSDP is refused in one line naming the launch that reads it."""
    import torch

    from animlcm.models.io import load_model_folder

    w, t = tmp_path, str(tiny_inputs / "t")
    args = ["distill", "--teacher", t, "--method", "lcm"]
    _animlcm(*args, "--out", str(w / "ddp"), *_common(tiny_inputs, 3), config=DDP_CONFIG)
    _animlcm(*args, "--out", str(w / "fsdp"), *_common(tiny_inputs, 3), config=FSDP_CONFIG)
    ddp, sharded = _checkpoint_tensors(w / "ddp", 3), _checkpoint_tensors(w / "fsdp", 3)
    assert sorted(sharded) == ["student", "target"] and ddp.keys() == sharded.keys()
    for name in ddp:
        for k in ddp[name]:
            torch.testing.assert_close(sharded[name][k], ddp[name][k], rtol=1e-4, atol=1e-5)
    assert _losses(w / "fsdp") == pytest.approx(_losses(w / "ddp"), rel=1e-5)
    assert len(set(_losses(w / "ddp"))) == 3
    shards = w / "fsdp" / "checkpoints" / "step-0000003" / "fsdp"
    written = sorted(p.name for p in shards.iterdir())
    assert written == ["optimizer-00000-of-00002.pt", "optimizer-00001-of-00002.pt"]
    assert not (shards.parent / "optimizer.pt").exists()
    mine, theirs = (load_model_folder(w / run / "student").net.state_dict() for run in ("fsdp", "ddp"))
    assert mine.keys() == theirs.keys()
    for k in mine:
        torch.testing.assert_close(mine[k], theirs[k], rtol=1e-4, atol=1e-5)

    stopped = w / "stopped"
    _animlcm(*args, "--out", str(stopped), *_common(tiny_inputs, 2), config=FSDP_CONFIG)
    _animlcm(*args, "--out", str(stopped), *_common(tiny_inputs, 3), "--resume", config=FSDP_CONFIG)
    resumed = _checkpoint_tensors(stopped, 3)
    for name in sharded:
        assert all(torch.equal(resumed[name][k], sharded[name][k]) for k in sharded[name])

    # one process's shard of the newest checkpoint cut short: every process falls back to step 2's together
    shard = stopped / "checkpoints" / "step-0000003" / "fsdp" / "optimizer-00001-of-00002.pt"
    shard.write_bytes(shard.read_bytes()[:100])
    again = _animlcm(*args, "--out", str(stopped), *_common(tiny_inputs, 3), "--resume", config=FSDP_CONFIG)
    assert "optimizer-00001-of-00002.pt" in again and "trying the checkpoint before it" in again
    resumed = _checkpoint_tensors(stopped, 3)
    for name in sharded:
        assert all(torch.equal(resumed[name][k], sharded[name][k]) for k in sharded[name])

    said = _animlcm(*args, "--out", str(stopped), *_common(tiny_inputs, 4), "--resume", fails=True)
    line = [x for x in said.splitlines() if "error" in x.lower()][-1]
    assert "written as FSDP shards" in line and "configs/accelerate/fsdp.yaml --num_processes 2" in line


@pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed (make install installs it)")
def test_zero2_checkpoints_shards_resumes_bit_exactly_and_falls_back(tmp_path):
    """Through configs/accelerate/zero2.yaml: the optimizer state is written by the engine (``zero/``, no
    ``optimizer.pt``), a run stopped and resumed holds the straight run's weights bit for bit, and a cut shard
    in the newest checkpoint is reported and the one before it used. The losses are those of the plain loop
    (ZeRO trains the same problem; its flattened buffers change the last bits)."""
    straight = tmp_path / "straight"
    done = _launch(straight, 4, "fresh", zero=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = straight / "checkpoints" / "step-0000004"
    assert (ckpt / "zero" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").is_file()
    assert not (ckpt / "optimizer.pt").exists()
    want = _records(straight, 0)
    plain = tmp_path / "plain"
    assert _launch(plain, 4, "fresh", processes=1).returncode == 0
    assert [r["loss"] for r in want] == pytest.approx([r["loss"] for r in _records(plain, 0)], rel=1e-5)
    assert len({r["weights"] for r in want}) == 4

    stopped = tmp_path / "stopped"
    assert _launch(stopped, 2, "fresh", zero=True).returncode == 0
    resumed = _launch(stopped, 4, "resume", zero=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["weights"] for r in _records(stopped, 0)] == [r["weights"] for r in want]

    # the newest checkpoint's shard cut short: step 3's is used, and step 4 trained again to the same weights
    shard = stopped / "checkpoints" / "step-0000004" / "zero" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:100])
    again = _launch(stopped, 4, "resume", zero=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trying the checkpoint before it" in again.stdout
    assert _records(stopped, 0)[-1]["weights"] == want[-1]["weights"]

    # accumulation over 2 micro-batches and bf16 (autocast over fp32 weights) train as the plain loop does
    loop = ("2", "bf16")
    runs = {name: tmp_path / f"{name}-accum-bf16" for name in ("zero", "plain")}
    assert _launch(runs["zero"], 3, "fresh", zero=True, loop=loop).returncode == 0
    assert _launch(runs["plain"], 3, "fresh", processes=1, loop=loop).returncode == 0
    zero_losses, plain_losses = ([r["loss"] for r in _records(run, 0)] for run in runs.values())
    assert zero_losses == pytest.approx(plain_losses, rel=1e-5) and len(set(zero_losses)) == 3


def _ds_accelerator(stage: int, processes: int = 1):
    from types import SimpleNamespace

    config = {"zero_optimization": {"stage": stage}, "gradient_clipping": "auto"}
    plugin = SimpleNamespace(deepspeed_config=config)
    return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), num_processes=processes)


def test_zero_config_comes_from_the_run_settings_and_bad_setups_are_refused(monkeypatch):
    from types import SimpleNamespace

    from animlcm.stages.distill import zero

    cfg = SimpleNamespace(batch_size=2, grad_accum=3, grad_clip=0.5, mixed_precision="bf16")
    monkeypatch.setenv("WORLD_SIZE", "4")
    accelerator = _ds_accelerator(stage=2, processes=4)
    zero.configure(accelerator, cfg)
    conf = accelerator.state.deepspeed_plugin.deepspeed_config
    assert conf["train_micro_batch_size_per_gpu"] == 2 and conf["gradient_accumulation_steps"] == 3
    assert conf["train_batch_size"] == 2 * 3 * 4 and conf["gradient_clipping"] == 0.5
    assert conf["bf16"] == {"enabled": False}  # fp32 weights; bf16 is the loop's autocast
    zero.configure(SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None)), cfg)  # DDP: nothing to do

    refusals = [
        (_ds_accelerator(stage=3, processes=4), cfg, "ZeRO-3: not supported"),
        (_ds_accelerator(stage=2, processes=4), SimpleNamespace(**{**vars(cfg), "mixed_precision": "fp16"}),
         "use --mixed-precision bf16"),
        (_ds_accelerator(stage=2, processes=1), cfg, "4 processes launched but accelerate sees 1"),
    ]  # fmt: skip
    for acc, settings, message in refusals:
        with pytest.raises(AnimlcmError, match=message) as err:
            zero.configure(acc, settings)
        assert "\n" not in str(err.value)
