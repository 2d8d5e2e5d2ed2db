"""`make bench`: run every benchmark script in turn and keep each one's report under benchmarks/results/.

Each ``bench_*.py`` is a standalone script (it prints its own table); this runner only sequences them so
that one failing benchmark does not hide the others, and records machine and date with the output.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "bench_extract.py", "bench_smpl.py", "bench_distill.py", "bench_setup_memory.py", "bench_render.py",
    "bench_folders.py",
)  # fmt: skip


def machine() -> str:
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:
        gpu = "torch missing"
    return f"{platform.machine()}, {os.cpu_count()} cores, {gpu}, python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--only", nargs="*", help="script names to run (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for script in SCRIPTS:
        if args.only and script not in args.only and script.removesuffix(".py") not in args.only:
            continue
        if not (HERE / script).exists():
            continue
        print(f"\n=== {script} ===", flush=True)
        proc = subprocess.run([sys.executable, str(HERE / script)], capture_output=True, text=True)
        print(proc.stdout, end="")
        if proc.returncode:
            print(proc.stderr[-4000:], file=sys.stderr)
            failed.append(script)
        header = f"# {script}  {datetime.datetime.now().isoformat(timespec='seconds')}  ({machine()})\n"
        (args.out / f"{script.removesuffix('.py')}.txt").write_text(header + proc.stdout)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
