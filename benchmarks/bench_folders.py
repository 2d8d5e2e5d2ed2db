"""Model folders on disk: what a student costs when it links the parts it shares with its teacher, against a
self-contained one, and what the link's sha256 check adds to loading.

    python benchmarks/bench_folders.py                     # tiny (seconds)
    python benchmarks/bench_folders.py --preset sd15       # real size, random weights (~3 min, 25 GB disk)

The student is the teacher with a changed denoiser (what a full distillation changes: the frozen reference
net, CLIP encoder and VAE stay the teacher's). Sizes are the folders' bytes; load times are wall seconds of
``load_model_folder`` with a warm page cache (each folder is loaded twice, the second time counts).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def load_seconds(folder: Path) -> float:
    from animlcm.models.io import load_model_folder

    load_model_folder(folder)  # warm the page cache
    t0 = time.perf_counter()
    load_model_folder(folder)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=("tiny", "sd15"))
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_folders"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    import torch

    from animlcm.models.io import load_model_folder, read_folder_meta, save_model_folder
    from animlcm.models.teacher import TeacherInitConfig, init_teacher

    work = args.work / args.preset
    shutil.rmtree(work, ignore_errors=True)
    teacher = init_teacher(
        TeacherInitConfig(preset=args.preset, random=args.preset == "sd15", out=work / "t")
    )
    loaded = load_model_folder(teacher)
    with torch.no_grad():
        for param in loaded.net.unet.parameters():
            param.add_(1e-3)
    rows = {}
    for name, share in (("linked", teacher), ("standalone", None)):
        folder = work / name
        t0 = time.perf_counter()
        save_model_folder(loaded.net, loaded.vae, folder, "student", meta={"segments": 1},
                          links={"teacher": teacher}, share_from=share)  # fmt: skip
        rows[name] = {
            "bytes": folder_bytes(folder),
            "save_s": round(time.perf_counter() - t0, 2),
            "load_s": round(load_seconds(folder), 2),
            "shared": sorted(read_folder_meta(folder).get("shared") or {}),
        }
    rows["teacher"] = {"bytes": folder_bytes(teacher), "load_s": round(load_seconds(teacher), 2)}
    print(f"model folders at {args.preset} (float32, random weights where sd15)")
    print("| folder | GB | save s | load s | linked to the teacher |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['bytes'] / 1e9:.3f} | {r.get('save_s', '')} | {r['load_s']} | "
              f"{', '.join(r.get('shared', []))} |")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({args.preset: rows}, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
