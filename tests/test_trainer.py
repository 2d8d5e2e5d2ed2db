"""The shared training loop with a stand-in network: resume is bit-exact, checkpoints are atomic, the
JSONL log has every term, the NaN guard names the step and the term."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from animlcm.errors import AnimlcmError
from animlcm.stages.distill.checkpoint import latest_checkpoint, list_checkpoints
from animlcm.stages.distill.ema import ema_names, make_target, update_ema
from animlcm.stages.distill.trainer import TrainJob, step_generator, train


@dataclass(frozen=True)
class LoopCfg:
    max_steps: int = 6
    max_minutes: float | None = None
    batch_size: int = 2
    grad_accum: int = 1
    lr: float = 1e-2
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mixed_precision: str = "no"
    checkpoint_every: int = 3
    keep_checkpoints: int = 5
    log_every: int = 1
    seed: int = 0
    num_workers: int = 0
    progress: bool = False
    resume: bool = False
    adam_8bit: bool = False


class Stream(torch.utils.data.Dataset):
    """Each sample a pure function of its index (as DistillDataset's are)."""

    def __len__(self):
        return 2**62

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(int(i))
        return {"x": torch.randn(4, generator=g)}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 4))
        self.frozen = nn.Linear(4, 4).requires_grad_(False)

    def forward(self, x):
        return self.body(self.frozen(x))


def _job(out: Path, poison_at: int | None = None) -> TrainJob:
    net = Net()
    target = make_target(net)
    names = ema_names(net)
    calls = {"n": 0}

    def step_fn(batch, model, gen):
        calls["n"] += 1
        noise = torch.randn(batch["x"].shape, generator=gen)  # the step's own randomness
        pred = model(batch["x"] + noise)
        with torch.no_grad():
            tgt = target(batch["x"])
        mse = (pred - tgt).pow(2).mean()
        aux = pred.abs().mean() * 0.1
        if poison_at is not None and calls["n"] == poison_at:
            aux = aux * float("nan")
        return mse + aux, {"mse": mse, "aux": aux}

    def finish(student, steps):
        out.joinpath("result.txt").write_text(f"done after {steps} steps")
        return out / "result.txt"

    return TrainJob(
        out=out,
        student=net,
        step_fn=step_fn,
        dataset=Stream(),
        finish=finish,
        target=target,
        target_names=names,
        after_step=lambda s: update_ema(target, s, names, 0.9),
    )


def _weights(job: TrainJob) -> dict[str, torch.Tensor]:
    return {
        **{f"s.{k}": v.clone() for k, v in job.student.state_dict().items()},
        **{f"t.{k}": v.clone() for k, v in job.target.state_dict().items()},
    }


def test_resume_is_bit_exact(tmp_path):
    straight = _job(tmp_path / "a")
    train(straight, LoopCfg(max_steps=6))

    first = _job(tmp_path / "b")
    train(first, LoopCfg(max_steps=3))
    torch.manual_seed(1234)  # a fresh process would start from another global RNG state
    resumed = _job(tmp_path / "b")
    train(resumed, LoopCfg(max_steps=6, resume=True))

    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the weights did move, so the comparison means something
    assert not torch.equal(a["s.body.0.weight"], Net().body[0].weight)
    log_a = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == [1, 2, 3, 4, 5, 6]
    assert [r["mse"] for r in log_a] == [r["mse"] for r in log_b]
    assert {"loss", "mse", "aux", "lr", "step"} <= set(log_a[0])


def test_checkpoints_atomic_and_strict(tmp_path):
    job = _job(tmp_path / "r")
    train(job, LoopCfg(max_steps=7, checkpoint_every=2, keep_checkpoints=2))
    names = [p.name for p in list_checkpoints(tmp_path / "r")]
    assert names == ["step-0000006", "step-0000007"]  # every 2 steps and at the end, newest 2 kept
    ckpt = latest_checkpoint(tmp_path / "r")
    assert set(load_file(str(ckpt / "student.safetensors"))) == {
        "body.0.weight",
        "body.0.bias",
        "body.2.weight",
        "body.2.bias",
    }  # trainable only: the frozen layer is rebuilt, not stored
    assert json.loads((ckpt / "state.json").read_text())["data_position"] == 7 * 2
    # a crash mid-write leaves a .tmp folder, which resume ignores
    (tmp_path / "r" / "checkpoints" / "step-0000009.tmp").mkdir()
    assert latest_checkpoint(tmp_path / "r") == ckpt
    # extending a finished run continues from step 7
    job2 = _job(tmp_path / "r")
    res = train(job2, LoopCfg(max_steps=8, resume=True))
    assert res.steps == 8


def test_max_minutes_stops_with_checkpoint_and_result(tmp_path):
    job = _job(tmp_path / "m")
    # a budget every step overruns: the run ends after its first step, as if max_steps were 1
    res = train(job, LoopCfg(max_steps=50, checkpoint_every=40, max_minutes=1e-9))
    assert res.steps == 1
    assert (tmp_path / "m" / "result.txt").read_text() == "done after 1 steps"  # steps taken, not max_steps
    assert [p.name for p in list_checkpoints(tmp_path / "m")] == ["step-0000001"]
    # and it continues from there under --resume, to max_steps when the budget allows
    res = train(_job(tmp_path / "m"), LoopCfg(max_steps=4, resume=True, max_minutes=60.0))
    assert res.steps == 4
    assert (tmp_path / "m" / "result.txt").read_text() == "done after 4 steps"


def test_nan_guard_names_step_and_term(tmp_path):
    job = _job(tmp_path / "n", poison_at=2)
    with pytest.raises(AnimlcmError, match=r"step 2: loss term 'aux' is nan") as err:
        train(job, LoopCfg(max_steps=4, checkpoint_every=1))
    assert "step-0000001" in str(err.value)  # points at the last good checkpoint


def test_step_generator_depends_on_every_key():
    draws = {
        key: torch.randn(3, generator=step_generator(*key)).tolist()
        for key in [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)]
    }
    assert len({tuple(v) for v in draws.values()}) == 5
    assert torch.randn(3, generator=step_generator(0, 0, 0, 0)).tolist() == draws[(0, 0, 0, 0)]


def test_ema_update_and_frozen_weights_shared():
    """The target copies what the EMA follows and shares every frozen tensor with the student."""

    class WithEncoders(nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = nn.Linear(2, 2)
            self.reference_unet = nn.Linear(2, 2).requires_grad_(False)
            self.unet.weight.requires_grad_(False)  # frozen inside a trained module: shared too
            self.register_buffer("table", torch.arange(3.0))

    s = WithEncoders()
    t = make_target(s)
    assert t.reference_unet.weight is s.reference_unet.weight and t.table is s.table
    assert t.unet.weight is s.unet.weight and t.unet.bias is not s.unet.bias
    assert not t.unet.bias.requires_grad and s.unet.bias.requires_grad
    s.unet.weight.requires_grad_(True)
    t = make_target(s)
    assert t.unet.weight is not s.unet.weight
    names = ema_names(s)
    assert names == ["unet.weight", "unet.bias"]
    before = t.unet.weight.clone()
    with torch.no_grad():
        s.unet.weight.add_(1.0)
    update_ema(t, s, names, 0.95)
    torch.testing.assert_close(t.unet.weight, 0.95 * before + 0.05 * s.unet.weight)


@pytest.mark.parametrize(
    "file, damage, says",
    [
        ("student.safetensors", "cut", "unreadable weights"),
        ("target.safetensors", "garbage", "unreadable weights"),
        ("optimizer.pt", "garbage", "optimizer.pt: unreadable"),
        ("optimizer.pt", "cut", "optimizer.pt: unreadable"),
        ("rng.pt", "missing", "rng.pt: missing"),
        ("state.json", "cut", "state.json: not valid JSON"),
    ],
)
def test_a_damaged_checkpoint_names_its_file_and_changes_nothing(tmp_path, file, damage, says):
    train(_job(tmp_path / "r"), LoopCfg(max_steps=3, checkpoint_every=3))
    ckpt = latest_checkpoint(tmp_path / "r")
    path = ckpt / file
    data = path.read_bytes()
    if damage == "cut":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 10)
    else:
        path.unlink()
    job = _job(tmp_path / "r")
    before = {k: v.clone() for k, v in job.student.state_dict().items()}
    with pytest.raises(AnimlcmError) as err:
        train(job, LoopCfg(max_steps=6, resume=True))
    msg = str(err.value)
    assert msg.startswith(str(path)) and says in msg and "\n" not in msg
    assert f"delete {ckpt}" in msg  # and what to do about it
    assert all(torch.equal(before[k], v) for k, v in job.student.state_dict().items())


def test_a_full_disk_names_the_last_checkpoint_and_resume_goes_on(tmp_path, monkeypatch):
    import errno

    from animlcm.stages.distill import checkpoint

    real, calls = checkpoint.save_file, {"n": 0}

    def fills_up(tensors, filename, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # the second checkpoint's first file (student + target per checkpoint)
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, *a, **k)

    monkeypatch.setattr(checkpoint, "save_file", fills_up)
    with pytest.raises(AnimlcmError) as err:
        train(_job(tmp_path / "r"), LoopCfg(max_steps=6, checkpoint_every=3))
    msg = str(err.value)
    first = latest_checkpoint(tmp_path / "r")
    assert first is not None and first.name == "step-0000003"
    assert "student.safetensors: cannot write (the disk is full)" in msg and "\n" not in msg
    assert f"the last complete checkpoint {first} is kept" in msg
    assert not list((tmp_path / "r" / "checkpoints").glob("*.tmp"))  # no half checkpoint
    monkeypatch.setattr(checkpoint, "save_file", real)
    assert train(_job(tmp_path / "r"), LoopCfg(max_steps=6, checkpoint_every=3, resume=True)).steps == 6


def _damage(ckpt: Path, part: str) -> None:
    path = ckpt / part
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut short, as a full disk or a killed copy leaves it


@pytest.mark.parametrize("part", ["student.safetensors", "target.safetensors", "optimizer.pt", "state.json"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys, part):
    straight = _job(tmp_path / "a")
    train(straight, LoopCfg(max_steps=6, checkpoint_every=2))
    stopped = _job(tmp_path / "b")
    train(stopped, LoopCfg(max_steps=4, checkpoint_every=2))
    _damage(tmp_path / "b" / "checkpoints" / "step-0000004", part)
    resumed = _job(tmp_path / "b")
    train(resumed, LoopCfg(max_steps=6, checkpoint_every=2, resume=True))
    said = capsys.readouterr().out
    assert f"step-0000004/{part}" in said and "trying the checkpoint before it" in said
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed from step 2, bit-exact all the same


def test_no_intact_checkpoint_is_one_line(tmp_path):
    train(_job(tmp_path / "r"), LoopCfg(max_steps=2, checkpoint_every=2))
    _damage(tmp_path / "r" / "checkpoints" / "step-0000002", "student.safetensors")
    with pytest.raises(AnimlcmError, match=r"step-0000002/student.safetensors: unreadable weights"):
        train(_job(tmp_path / "r"), LoopCfg(max_steps=4, resume=True))


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_start(tmp_path, capsys):
    straight = _job(tmp_path / "a")
    train(straight, LoopCfg(max_steps=3))
    (tmp_path / "b").mkdir()  # what a run killed during its first steps leaves: the folder, no checkpoint
    resumed = _job(tmp_path / "b")
    train(resumed, LoopCfg(max_steps=3, resume=True))
    assert "no checkpoint yet" in capsys.readouterr().out
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_another_process_count_continues_the_stream(tmp_path, capsys):
    """A checkpoint of 4 processes resumed by 1: it goes on from the first sample the 4 had not read (each of
    them read 2 steps x batch 2, every 4th sample), and the next checkpoint records where that began."""
    from animlcm.stages.distill.data import PositionSampler

    train(_job(tmp_path / "r"), LoopCfg(max_steps=2, checkpoint_every=2))
    state = tmp_path / "r" / "checkpoints" / "step-0000002" / "state.json"
    saved = json.loads(state.read_text())
    assert (saved["processes"], saved["data_position"], saved["data_offset"]) == (1, 4, 0)
    state.write_text(json.dumps({**saved, "processes": 4}))
    train(_job(tmp_path / "r"), LoopCfg(max_steps=4, resume=True, checkpoint_every=2))
    assert "written by 4 process(es), continued with 1: the sample stream goes on from sample 16" in (
        capsys.readouterr().out
    )
    after = json.loads((tmp_path / "r" / "checkpoints" / "step-0000004" / "state.json").read_text())
    assert (after["processes"], after["data_position"], after["data_offset"]) == (1, 4, 16)
    stream = iter(PositionSampler(start=0, rank=1, world=3, offset=16))
    assert [next(stream) for _ in range(3)] == [17, 20, 23]
