"""Run by ``accelerate launch`` from test_scale_out.py: the training loop with a stand-in network on every
process. Each rank records, per step, the sample indices it trained on, its own loss and a digest of its
weights (``RUN/rank{r}.jsonl``), so the test can check disjoint samples, equal weights and the logged mean."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from animlcm.stages.distill.ema import ema_names, make_target, update_ema
from animlcm.stages.distill.trainer import TrainJob, make_accelerator, prepare_run_dir, train


@dataclass(frozen=True)
class LoopCfg:
    out: Path
    max_steps: int
    resume: bool
    max_minutes: float | None = None
    batch_size: int = 2
    grad_accum: int = 1
    lr: float = 1e-2
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    mixed_precision: str = "no"
    checkpoint_every: int = 3
    keep_checkpoints: int = 5
    log_every: int = 1
    seed: int = 0
    num_workers: int = 0
    progress: bool = False
    adam_8bit: bool = False


class Stream(torch.utils.data.Dataset):
    def __len__(self):
        return 2**62

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(int(i))
        return {"x": torch.randn(4, generator=g), "index": torch.tensor(int(i))}


def digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode() + p.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def main(out: str, max_steps: str, resume: str) -> None:
    cfg = LoopCfg(out=Path(out), max_steps=int(max_steps), resume=resume == "resume")
    accelerator = make_accelerator(cfg)
    prepare_run_dir(cfg.out, cfg, frozenset({"max_steps", "resume"}), write=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))
    target = make_target(net)
    names = ema_names(net)
    record = cfg.out / f"rank{accelerator.process_index}.jsonl"
    seen: dict[str, object] = {}

    def step_fn(batch, model, gen):
        noise = torch.randn(batch["x"].shape, generator=gen)
        loss = (model(batch["x"] + noise) - batch["x"]).pow(2).mean()
        seen.update(index=batch["index"].tolist(), loss=loss.item())
        return loss, {"mse": loss.detach()}

    def after(student):
        update_ema(target, student, names, 0.9)
        with open(record, "a") as f:
            f.write(json.dumps({**seen, "weights": digest(student)}) + "\n")

    def finish(student, steps):
        (cfg.out / f"result-rank{accelerator.process_index}.txt").write_text(str(steps))
        return cfg.out

    job = TrainJob(out=cfg.out, student=net, step_fn=step_fn, dataset=Stream(), finish=finish,
                   target=target, target_names=names, after_step=after, accelerator=accelerator)  # fmt: skip
    train(job, cfg)


if __name__ == "__main__":
    main(*sys.argv[1:])
