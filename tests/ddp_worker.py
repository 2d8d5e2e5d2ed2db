"""Run by ``accelerate launch`` from test_scale_out.py: the training loop with a stand-in network on every
process. Each rank records, per step, the sample indices it trained on, its own loss and a digest of its
weights (``RUN/rank{r}.jsonl``), so the test can check disjoint samples, equal weights and the logged mean."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import nn

from animlcm.stages.distill.ema import ema_names, make_target, update_ema
from animlcm.stages.distill.trainer import TrainJob, make_accelerator, prepare_run_dir, train

# the loop settings of the single-process tests (this script's folder, tests/, is first on sys.path)
from test_trainer import LoopCfg


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


def main(out: str, max_steps: str, resume: str, grad_accum: str = "1", precision: str = "no") -> None:
    cfg = LoopCfg(
        max_steps=int(max_steps), resume=resume == "resume", weight_decay=0.0, grad_accum=int(grad_accum),
        mixed_precision=precision,
    )  # fmt: skip
    run = Path(out)
    accelerator = make_accelerator(cfg)
    prepare_run_dir(run, cfg, frozenset({"max_steps", "resume"}), write=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))
    target = make_target(net)
    names = ema_names(net)
    record = run / f"rank{accelerator.process_index}.jsonl"
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
        (run / f"result-rank{accelerator.process_index}.txt").write_text(str(steps))
        return run

    job = TrainJob(out=run, student=net, step_fn=step_fn, dataset=Stream(), finish=finish,
                   target=target, target_names=names, after_step=after, accelerator=accelerator)  # fmt: skip
    train(job, cfg)


if __name__ == "__main__":
    main(*sys.argv[1:])
