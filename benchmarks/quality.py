"""`make bench-quality`: the held-out quality table of teacher and students on the synthetic world.

Held-out dancers (identities and dances never produced by the train split) are generated and extracted;
every student variant is distilled from the same teacher on the training cache with the same budget; then
the teacher (DDIM + CFG at 4, 25, 50 steps) and each student (1, 2, 4, 8 steps) re-animate each held-out clip
from its first frame, compared with ground truth (L1, PSNR, SSIM). Writes ``quality.json`` (the row schema of
``animlcm eval``'s metrics.json, plus a ``budget`` header), ``quality.md`` and ``quality.png``.

Everything is made with the project's own commands; finished pieces in ``--work`` are reused, so a killed
run resumes. The defaults use the built-in teacher and make the training split of ``make models`` (the same
synth call, extracted with that teacher's VAE) in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# variant name -> (method, extra distill flags); ablations name what they remove
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "lcm": ("lcm", []),
    "dancelcm": ("dancelcm", []),
    "cosec": ("cosec", []),
    "animatelcm": ("animatelcm", []),
    "dancelcm-no-segments": ("dancelcm", ["--segments", "1"]),
    "dancelcm-no-aux": ("dancelcm", ["--aux-head", "0"]),
    "dancelcm-no-motion": ("dancelcm", ["--motion-weight", "0"]),
    "dancelcm-no-face": ("dancelcm", ["--no-face-tokens"]),
    "dancelcm-K4": ("dancelcm", ["--segments", "4"]),
    "cosec-no-eta": ("cosec", ["--eta", "0"]),
    "cosec-no-cons": ("cosec", ["--cons", "0"]),
    "cosec-no-temporal-sdm": ("cosec", ["--temporal-sdm", "0"]),
    "animatelcm-no-init-strategy": ("animatelcm", ["--no-lora-init-strategy"]),
    # AnimateLCM's decoupling undone: no spatial stage, one clip-level stage training the whole network
    # (LoRA and motion modules together) on as many frames as the two decoupled stages see
    "animatelcm-coupled": ("animatelcm", ["--train-modules", "all"]),
}
COUPLED = {"animatelcm-coupled"}

# (paper, claim, full variant, ablated variant): the full method should beat the ablation
CLAIMS: list[tuple[str, str, str, str]] = [
    (
        "DanceLCM Table 3",
        "segmented consistency distillation (K=2) beats K=1",
        "dancelcm",
        "dancelcm-no-segments",
    ),
    ("DanceLCM Table 3", "the auxiliary ground-truth head helps", "dancelcm", "dancelcm-no-aux"),
    ("DanceLCM Table 3", "the motion-focused loss helps", "dancelcm", "dancelcm-no-motion"),
    ("DanceLCM Table 4", "face tokens help", "dancelcm", "dancelcm-no-face"),
    ("DanceLCM Table 5", "K=2 segments beat K=4", "dancelcm", "dancelcm-K4"),
    ("CoSeC Table 4", "ETA helps", "cosec", "cosec-no-eta"),
    ("CoSeC Table 4", "CoNS helps", "cosec", "cosec-no-cons"),
    ("CoSeC Table 4", "the temporal self-dependency loss helps", "cosec", "cosec-no-temporal-sdm"),
    (
        "AnimateLCM",
        "decoupled spatial then temporal beats one coupled stage",
        "animatelcm",
        "animatelcm-coupled",
    ),
    ("AnimateLCM", "the LoRA-through-EMA init beats plain init", "animatelcm", "animatelcm-no-init-strategy"),
]


THREADS = {"OMP_NUM_THREADS": "1"}  # per command; main() sets it from --jobs


def animlcm(*args: str) -> None:
    print("$ animlcm " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "animlcm", *args], check=True, env={**os.environ, **THREADS})


def main() -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "quality")
    assets = ROOT / "src" / "animlcm" / "assets" / "tiny"
    parser.add_argument("--teacher", type=Path, default=assets / "teacher")
    parser.add_argument(
        "--train-cache", type=Path, default=None,
        help="cache to distil the variants on (default: made in --work, as `make models` makes its own)",
    )  # fmt: skip
    parser.add_argument(
        "--heldout-cache", type=Path, default=None,
        help="cache of held-out clips to score on (default: made in --work from --identities/--frames)",
    )  # fmt: skip
    parser.add_argument("--builtin", type=Path, default=assets / "student", help="also evaluate this student")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--seeds", default="0,1,2",
        help="every variant is distilled and every row evaluated once per seed (data order, noise, init)",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="pieces (evals, variants) run at once")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads per piece (default: CPU cores / --jobs)"
    )
    parser.add_argument("--batch", type=int, default=4, help="spatial distillation batch (frames)")
    parser.add_argument("--temporal-batch", type=int, default=1, help="temporal distillation batch (clips)")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader workers per distill run")
    parser.add_argument("--device", default="auto", help="eval's device (auto: the GPU if there is one)")
    parser.add_argument("--dtype", default="float32", help="eval's dtype (float32: CPU and GPU agree)")
    # one budget for every variant; make models' student sees 1500 x 4 frames then 350 clips
    parser.add_argument("--spatial-steps", type=int, default=200)
    parser.add_argument("--temporal-steps", type=int, default=20)
    parser.add_argument(
        "--lr", type=float, default=1e-4, help="the same for every variant (see build_models)"
    )
    parser.add_argument(
        "--w", type=float, default=0.5, help="teacher CFG weight in distillation (see build_models)"
    )
    parser.add_argument("--identities", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument(
        "--vs-teacher", type=int, default=25, help="every row's PSNR also against the teacher at N steps"
    )
    parser.add_argument("--cfg", type=float, default=3.5, help="the teacher rows' CFG scale")
    parser.add_argument("--student-steps", default="1,2,4")
    parser.add_argument("--teacher-steps", default="4,25")
    parser.add_argument(
        "--claim-steps", type=int, default=4, help="student steps the paper claims are read at"
    )
    args = parser.parse_args()
    THREADS["OMP_NUM_THREADS"] = str(args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs)))
    seeds = [int(x) for x in args.seeds.split(",") if x]
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    for flag, given in (("--train-cache", args.train_cache), ("--heldout-cache", args.heldout_cache)):
        if given is not None and not (given / "manifest.json").exists():
            print(f"{given}: not a cache; pass a folder from `animlcm extract`, or drop {flag}")
            return 2
    pending = [n for n in args.variants if not (work / n / f"s{seeds[-1]}" / "temporal" / "student").exists()]
    if args.train_cache is None:
        args.train_cache = work / "train_cache"
        if pending and not (args.train_cache / "manifest.json").exists():
            # the training split of `make models` (its synth call), extracted with the teacher's VAE
            videos = work / "train_videos"
            if not (videos / "synth.json").exists():
                synth = "--identities 2000 --clips 1 --frames 16 --size 128 --seed 0"
                animlcm("synth", "--out", str(videos), *synth.split())
            animlcm("extract", str(videos), "--out", str(args.train_cache), "--pose", "groundtruth",
                    "--teacher", str(args.teacher))  # fmt: skip

    # every row is also compared with the teacher's render along the trajectory the students imitate: the
    # teacher guided as in distillation (x0_c + w (x0_c - x0_u) is CFG scale 1 + w). Those renders depend
    # only on the seed: kept in one place and reused by every eval
    student_cfg = 1.0 + args.w
    eval_flags = ["--device", args.device, "--dtype", args.dtype, "--vs-teacher", str(args.vs_teacher),
                  "--vs-teacher-cfg", str(student_cfg),
                  "--reference-cache", str(work / "teacher_renders")]  # fmt: skip
    cache = args.heldout_cache
    if cache is None:
        heldout, cache = work / "heldout", work / "heldout_cache"
        if not (heldout / "synth.json").exists():
            synth = f"--identities {args.identities} --clips 1 --frames {args.frames} --size 128 --seed 0"
            animlcm("synth", "--out", str(heldout), *synth.split(), "--split", "heldout")
        if not (cache / "manifest.json").exists():
            animlcm("extract", str(heldout), "--out", str(cache), "--pose", "groundtruth",
                    "--teacher", str(args.teacher))  # fmt: skip

    from animlcm.models.teacher import folder_info

    budget = {
        "teacher": str(args.teacher),
        "teacher_build": _read_json(args.teacher.parent / "build.json"),
        "builtin_student": str(args.builtin) if args.builtin else None,
        "variants": {
            "spatial_steps": args.spatial_steps,
            "temporal_steps": args.temporal_steps,
            "batch": [args.batch, args.temporal_batch],
            "lr": args.lr,
            "w": args.w,
        },
        "heldout": {"cache": str(cache), "clips": _manifest_count(cache)},
        "train_cache": str(args.train_cache),
        "seeds": seeds,
        "claim_steps": args.claim_steps,
        "sizes": {"teacher": folder_info(args.teacher).total},
        "run": _machine(args),
        "vs_teacher_steps": args.vs_teacher,
        "vs_teacher_cfg": student_cfg,
        "teacher_cfg": args.cfg,
    }

    def evaluate(model: Path, result: Path, seed: int, student: str, teacher: str, *extra: str) -> list[dict]:
        if not (result / "metrics.json").exists():
            steps = _steps_yaml(work, student, teacher)
            animlcm("eval", "--model", str(model), "--teacher", str(args.teacher), "--cache", str(cache),
                    "--out", str(result), "--sweep", "--config", str(steps), "--seed", str(seed),
                    *eval_flags, *extra)  # fmt: skip
        return [{**r, "seed": seed} for r in _rows(result)]

    def teacher_rows(cfg: float, folder: str, label: str, seed: int) -> list[dict]:
        """The teacher's DDIM + CFG rows at ``cfg`` (``label`` goes in the ablation column)."""
        rows = evaluate(
            args.teacher, work / folder / f"s{seed}", seed, "", args.teacher_steps, "--cfg", str(cfg)
        )
        rows = [r for r in rows if r["method"] == "teacher"]
        name = f"teacher ({label})" if label else "teacher"
        return [{**r, "model": "built-in", "ablation": label, "variant": name} for r in rows]

    def builtin_rows(seed: int) -> list[dict]:
        rows = evaluate(args.builtin, work / "eval_builtin" / f"s{seed}", seed, args.student_steps, "")
        return [{**r, "model": "built-in", "variant": "built-in"} for r in rows if r["method"] != "teacher"]

    def variant(name: str, seed: int) -> list[dict]:
        method, flags = VARIANTS[name]
        run = work / name / f"s{seed}"
        spatial, temporal = run / "spatial", run / "temporal"
        common = ["--cache", str(args.train_cache), "--teacher", str(args.teacher), "--method", method,
                  *flags, "--lr", str(args.lr), "--w", str(args.w), "--seed", str(seed), "--preload",
                  "--num-workers", str(args.num_workers)]  # fmt: skip
        temporal_steps, init = args.temporal_steps, ["--init", str(spatial)]
        if name in COUPLED:  # the frames of both stages, in clips of the temporal stage
            temporal_steps += args.spatial_steps * args.batch // (args.frames * args.temporal_batch)
            init = []
        elif not (spatial / "student").exists():
            animlcm("distill", *common, "--stage", "spatial", "--out", str(spatial), *_resume(spatial),
                    "--max-steps", str(args.spatial_steps), "--batch-size", str(args.batch))  # fmt: skip
        if not (temporal / "student").exists():
            animlcm("distill", *common, "--stage", "temporal", *init, "--out", str(temporal),
                    *_resume(temporal), "--max-steps", str(temporal_steps),
                    "--batch-size", str(args.temporal_batch))  # fmt: skip
        rows = evaluate(temporal, run / "eval", seed, args.student_steps, "")
        return [{**r, "model": "variant", "variant": name} for r in rows if r["method"] != "teacher"]

    # every piece is independent: --jobs N runs N at once (a tiny network leaves a GPU mostly idle, and two
    # one-thread processes use 2 CPU cores better than one). The table is rewritten as each piece finishes,
    # always in the same order, so a long run shows as it goes and a killed one resumes from its pieces.
    # the teacher at its usual CFG, and at the guidance the students were distilled with
    pieces: dict[str, Callable[[], list[dict]]] = {}
    for seed in seeds:
        pieces[f"teacher/s{seed}"] = lambda seed=seed: teacher_rows(args.cfg, "eval_teacher", "", seed)
        pieces[f"teacher-student-cfg/s{seed}"] = lambda seed=seed: teacher_rows(
            student_cfg, "eval_teacher_cfg", f"cfg={student_cfg:g}", seed
        )
        if args.builtin:
            pieces[f"built-in/s{seed}"] = lambda seed=seed: builtin_rows(seed)
    # seed-major: every variant gets its first seed before any gets its third, so a cut run still compares all
    for seed in seeds:
        pieces.update({f"{n}/s{seed}": (lambda n=n, seed=seed: variant(n, seed)) for n in args.variants})
    done: dict[str, list[dict]] = {}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run): name for name, run in pieces.items()}
        for future in as_completed(futures):
            try:
                done[futures[future]] = future.result()
            except subprocess.CalledProcessError as error:  # one failed piece must not lose the others
                print(f"{futures[future]}: failed ({error}); the table goes on without it", flush=True)
                continue
            _write(args.out, budget, [r for name in pieces if name in done for r in done[name]])
    print((args.out / "quality.md").read_text())
    return 0


STAT_KEYS = ("psnr", "psnr_vs_teacher", "part_colour_error", "psnr_person", "psnr_background", "ssim", "l1")


def variant_of(row: dict) -> str:
    """The row's variant name; rows of a quality.json from before seeds and variants get one from their
    model and method."""
    if row.get("variant"):
        return row["variant"]
    if row.get("model") == "variant":
        return row["method"] + (f" ({row['ablation']})" if row.get("ablation") else "")
    return "teacher" if row["method"] == "teacher" else "built-in"


def aggregate(rows: list[dict]) -> list[dict]:
    """Rows of several seeds -> one row per (variant, steps): every metric's mean (the eval row schema, for
    the plots) plus ``{key}_sd`` (standard deviation over seeds) and ``seeds`` (how many)."""
    import numpy as np

    groups: dict[tuple, list[dict]] = {}
    for r in ({**r, "variant": variant_of(r)} for r in rows):
        groups.setdefault((r["variant"], r["method"], r["ablation"], r["steps"]), []).append(r)
    out = []
    for (name, _, _, _), group in groups.items():
        row = dict(group[0])
        for key in {k for r in group for k, v in r.items() if isinstance(v, float)}:
            values = [r[key] for r in group if isinstance(r.get(key), float)]
            row[key] = float(np.mean(values))
            row[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        row.update(variant=name, seeds=len(group))
        row.pop("seed", None)
        out.append(row)
    return out


def paired(rows: list[dict], a: str, b: str, steps: int, key: str) -> tuple[float, float, int] | None:
    """Mean and standard error over seeds of ``a - b`` in ``key`` at ``steps`` (paired: the same seed gives
    both the same data order and starting noise), and the number of pairs; None without pairs."""
    import numpy as np

    def by_seed(name: str) -> dict[int, float]:
        return {r.get("seed", 0): r[key] for r in rows
                if variant_of(r) == name and r["steps"] == steps and r.get(key) is not None}  # fmt: skip

    va, vb = by_seed(a), by_seed(b)
    diffs = [va[s] - vb[s] for s in sorted(set(va) & set(vb))]
    if not diffs:
        return None
    se = float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
    return float(np.mean(diffs)), se, len(diffs)


# two-sided 95% quantiles of Student's t by degrees of freedom (pairs - 1): with 2 pairs a difference must
# be 12.7 standard errors from zero, with 3 pairs 4.3; beyond the table, 2
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


def verdict(delta: float, se: float, pairs: int | None = None, higher_is_better: bool = True) -> str:
    """reproduced (the full method better beyond the 95% t interval of the paired mean difference), not
    reproduced (worse beyond it), or within noise. Without ``pairs``: 2 standard errors."""
    t = T95.get(pairs - 1, 2.0) if pairs is not None else 2.0
    if not se == se or abs(delta) <= t * se:  # nan: one seed, no spread to judge by
        return "within noise"
    better = delta > 0 if higher_is_better else delta < 0
    return "reproduced" if better else "not reproduced (the ablation is better)"


def _cell(row: dict, key: str, digits: int = 2) -> str:
    if row.get(key) is None:
        return "-"
    sd = row.get(f"{key}_sd")
    return (
        f"{row[key]:.{digits}f} ± {sd:.{digits}f}"
        if sd == sd and sd is not None
        else f"{row[key]:.{digits}f}"
    )


def seed_table(rows: list[dict]) -> str:
    """Mean ± standard deviation over seeds of the measures that tell the rows apart (the appearance columns
    where the clips had part labels)."""
    columns = [("PSNR", "psnr", 2), ("PSNR vs teacher", "psnr_vs_teacher", 2)]
    if any(r.get("part_colour_error") is not None for r in rows):
        columns += [("part colour err", "part_colour_error", 2), ("PSNR person", "psnr_person", 2),
                    ("PSNR bg", "psnr_background", 2)]  # fmt: skip
    columns.append(("SSIM", "ssim", 4))
    head = ["model", "steps", *[c[0] for c in columns], "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = r["variant"] if r["variant"] != "built-in" else f"built-in ({r['method']})"
        cells = [
            name,
            str(r["steps"]),
            *[_cell(r, key, digits) for _, key, digits in columns],
            str(r["seeds"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def claims_table(rows: list[dict], steps: int) -> str:
    """Each paper claim as full method minus ablation, paired over seeds (mean ± standard error), judged on
    PSNR against the real frames and on PSNR against the teacher (how well the student imitates it: the
    measure of distillation itself, not capped by what the teacher gets right)."""
    head = ["paper", "claim", "full - ablation: PSNR (dB)", "PSNR vs teacher (dB)", "part colour err",
            "pairs", "verdict (PSNR)", "verdict (vs teacher)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for paper, claim, full, ablated in CLAIMS:
        diffs = {key: paired(rows, full, ablated, steps, key)
                 for key in ("psnr", "psnr_vs_teacher", "part_colour_error")}  # fmt: skip
        psnr, fidelity = diffs["psnr"], diffs["psnr_vs_teacher"]
        if psnr is None:
            continue
        cells = [paper, f"{claim} (`{full}` vs `{ablated}`)"]
        cells += ["-" if d is None else f"{d[0]:+.2f} ± {d[1]:.2f}" for d in diffs.values()]
        cells += [
            str(psnr[2]),
            verdict(*psnr),
            "-" if fidelity is None else verdict(*fidelity),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def targets(rows: list[dict]) -> str:
    """The table's targets for the built-in student, from the seed means."""

    def mean(variant: str, steps: int, key: str = "psnr") -> float | None:
        hit = [
            r[key] for r in rows if r["variant"] == variant and r["steps"] == steps and r.get(key) is not None
        ]
        return hit[0] if hit else None

    t25, t4 = mean("teacher", 25), mean("teacher", 4)
    s4, s2 = mean("built-in", 4), mean("built-in", 2)
    out = []
    if None not in (t25, s4):
        out.append(f"- 4-step student within 0.3 dB of the teacher at 25 steps: {s4 - t25:+.2f} dB "
                   f"({'met' if abs(s4 - t25) <= 0.3 else 'not met'})")  # fmt: skip
    if None not in (t4, s4):
        out.append(f"- 4-step student at least 2 dB above the teacher's 4-step DDIM: {s4 - t4:+.2f} dB "
                   f"({'met' if s4 - t4 >= 2 else 'not met'})")  # fmt: skip
    if None not in (t25, s2):
        out.append(f"- 2-step student within 1 dB of the teacher at 25 steps: {s2 - t25:+.2f} dB "
                   f"({'met' if abs(s2 - t25) <= 1 else 'not met'})")  # fmt: skip
    return "\n".join(out) + "\n" if out else ""


def _write(out: Path, budget: dict, rows: list[dict]) -> None:
    """quality.json (eval's rows per seed plus ``model``, ``variant`` and ``seed``, and their seed means),
    quality.md (the seed means ± sd, the paper claims and targets, then eval's tables of the means),
    quality.png (teacher, built-in student and the methods) and quality_ablations.png (with ablations)."""
    from dataclasses import replace

    from animlcm.stages.evaluate import report

    out.mkdir(parents=True, exist_ok=True)
    means = aggregate(rows)
    (out / "quality.json").write_text(json.dumps({"budget": budget, "rows": rows, "means": means}, indent=2))

    def as_metric(rs: list[dict]) -> list[report.MetricRow]:  # the seed means, without their spreads
        plain = lambda r: {k: v for k, v in r.items() if not k.endswith("_sd") and k != "seeds"}  # noqa: E731
        return [report.MetricRow.from_json(plain(r)) for r in rs]

    builtin = [r for r in means if r.get("model") != "variant"]
    variants = [r for r in means if r.get("model") == "variant"]
    seeds = budget.get("seeds", [0])
    clips = budget.get("heldout", {}).get("clips") or "the"
    text = (
        f"Every row re-animates each of {clips} held-out clips from its first frame, "
        f"once per seed ({', '.join(map(str, seeds))}; a variant is also distilled once per seed): mean ± "
        "standard deviation over seeds. PSNR against the real frames; PSNR vs teacher: against the teacher's "
        f"own {budget['vs_teacher_steps']}-step DDIM render at CFG {budget['vs_teacher_cfg']:g} (the "
        "guidance the students were distilled with) from the same starting noise: how closely a row "
        "reproduces what the students imitate. Teacher rows use DDIM + CFG "
        f"{budget['teacher_cfg']:g}, or the CFG in their name.\n\n"
    )
    if any(r.get("part_colour_error") is not None for r in rows):
        text += (
            "Appearance, from the held-out clips' body-part label maps: part colour err is the RGB "
            "distance (0-255) between the mean colours of the render and of the truth inside each part's "
            "true mask, averaged over frames and clips, then over the parts; PSNR person / bg: PSNR over the "
            "person's / the background's pixels only.\n\n"
        )
    if "run" in budget:
        r = budget["run"]
        text += (
            f"Measured {r['date']} on {r['machine']}, {r['jobs']} evals or distillations at once with "
            f"{r['threads_per_job']} thread(s) each (seconds per frame are from that shared machine).\n\n"
        )
    sds = [r["psnr_sd"] for r in variants if r.get("psnr_sd") == r.get("psnr_sd") and "psnr_sd" in r]
    teacher_sds = [r["psnr_sd"] for r in builtin if r["method"] == "teacher" and "psnr_sd" in r]
    if sds or teacher_sds:
        import numpy as np

        text += "**Noise floor.** "
        if teacher_sds:
            text += (f"The same teacher sampled from {len(seeds)} starting noises spreads by "
                     f"{np.median(teacher_sds):.2f} dB (median sd of its rows). ")  # fmt: skip
        if sds:
            n = max(r.get("seeds", 1) for r in variants)
            text += (f"A variant distilled and sampled with {n} seeds spreads by "
                     f"{np.median(sds):.2f} dB (median sd over variants and steps). ")  # fmt: skip
        text += ("A claim below is judged on paired differences (same seed: same data order and starting "
                 "noise), mean ± standard error: reproduced or not only beyond the 95% t interval (12.7 "
                 "standard errors with 2 pairs, 4.3 with 3).\n\n")  # fmt: skip
    text += "### Built-in teacher and student\n\n" + _builtin_budget(budget) + "\n\n"
    text += seed_table(builtin)
    tg = targets(builtin)
    if tg:
        text += "\nTargets (seed means):\n\n" + tg
    if variants:
        v = budget["variants"]
        text += (
            "\n### Variants: every method and ablation distilled from the built-in teacher, one budget\n\n"
            f"{v['spatial_steps']} spatial steps at batch {v['batch'][0]} frames, then {v['temporal_steps']} "
            f"temporal steps at batch {v['batch'][1]} clips (`animatelcm-coupled`: only the temporal stage, "
            f"training the whole network on as many frames); lr {v['lr']}, teacher guidance w {v['w']}; "
            "every other setting is the method's own.\n\n" + seed_table(variants)
        )
        claims = claims_table(rows, budget.get("claim_steps", 4))
        text += f"\n### Paper claims at {budget.get('claim_steps', 4)} steps\n\n" + claims
    text += "\n### Every measure (seed means)\n\n" + report.markdown_table(as_metric(builtin + variants))
    (out / "quality.md").write_text(text)
    teacher = [r for r in as_metric(builtin) if r.method == "teacher"]
    # the built-in student gets its own line, apart from the variant of the same method
    shipped = [
        replace(r, method=f"{r.method} (built-in)") for r in as_metric(builtin) if r.method != "teacher"
    ]
    full = [r for r in as_metric(variants) if not r.ablation]
    report.plot_sweep(teacher + shipped + full, out / "quality.png")
    ablations = [r for r in as_metric(variants) if r.method in ("dancelcm", "cosec", "animatelcm")]
    if any(r.ablation for r in ablations):
        report.plot_sweep(teacher + ablations, out / "quality_ablations.png")


def _manifest_count(cache: Path) -> int | None:
    manifest = _read_json(cache / "manifest.json")
    if not manifest:
        return None
    entries = manifest.get("videos", manifest.get("entries", []))
    return len(entries) if isinstance(entries, list | dict) else None


def _machine(args: argparse.Namespace) -> dict:
    """Where and how the table was made (seconds per frame mean nothing without it)."""
    import datetime

    import torch

    gpu = torch.cuda.is_available() and args.device in ("auto", "cuda")
    return {
        "date": datetime.date.today().isoformat(),
        "machine": torch.cuda.get_device_name() if gpu else f"CPU, {os.cpu_count()} cores",
        "jobs": args.jobs,
        "threads_per_job": int(THREADS["OMP_NUM_THREADS"]),
    }


def _builtin_budget(budget: dict) -> str:
    """One paragraph: which models made the built-in rows, their sizes and training budgets."""
    build = budget.get("teacher_build") or {}
    sizes = budget.get("sizes", {})
    args, runs = build.get("args", {}), build.get("runs", {})
    parts = [f"Built on {build.get('machine', 'an unrecorded machine')} (`assets/tiny/build.json`)."]
    if "teacher" in sizes:
        parts.append(
            f"Teacher: {sizes['teacher']:,} parameters (denoiser with motion modules, reference net, pose "
            "guider, image and face encoders)."
        )
    for name, label, batch, unit in (
        ("teacher_spatial", "Teacher spatial", "teacher_batch", "frames"),
        ("teacher_temporal", "Teacher temporal", "teacher_temporal_batch", "clips"),
        ("student_spatial", f"Student ({args.get('method', '?')}) spatial", "student_batch", "frames"),
        ("student_temporal", "Student temporal", "student_temporal_batch", "clips"),
    ):
        if name in runs:
            parts.append(f"{label}: {runs[name]['steps']} steps at batch {args.get(batch, '?')} {unit}.")
    if "reused" in build.get("vae", {}):
        parts.append("VAE: reused from the earlier build (see `assets/tiny/vae/`).")
    elif "vae" in build:
        vae = build["vae"]
        size = f"{vae['parameters']:,} parameters, " if "parameters" in vae else ""
        parts.append(f"VAE: {size}{vae.get('steps', '?')} steps, {vae['psnr']:.1f} dB on training frames.")
    return " ".join(parts)


def _steps_yaml(work: Path, student: str, teacher: str) -> Path:
    """eval's step lists as a config file (an empty list skips that side of the sweep)."""
    path = work / f"steps_{student or 'none'}_{teacher or 'none'}.yaml".replace(",", "-")
    as_list = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    path.write_text(json.dumps({"student_steps": as_list(student), "teacher_steps": as_list(teacher)}))
    return path


def _resume(run: Path) -> list[str]:
    """``--resume`` for a run a killed benchmark left with checkpoints, so it continues rather than fails."""
    return ["--resume"] if any((run / "checkpoints").glob("step-*")) else []


def _rows(eval_dir: Path) -> list[dict]:
    return json.loads((eval_dir / "metrics.json").read_text())["rows"]


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
