"""What eval writes: ``metrics.json`` (``{"rows": [...]}``), a markdown table and a PNG plot."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROW_KEYS = ("method", "ablation", "steps", "l1", "psnr", "ssim", "seconds_per_frame", "peak_memory_mb")
# appearance against the truth's body-part labels (synthetic clips); null in rows of caches without labels
APPEARANCE_KEYS = ("part_colour_error", "psnr_person", "psnr_background")
PART_DETAIL_KEY = "part_colour_errors"  # {part name: colour error}, the detail behind part_colour_error


@dataclass
class MetricRow:
    method: str  # "teacher" for teacher rows, else the student's method name
    ablation: str  # e.g. "no-face", "segments=1"; empty for a method's full configuration and the teacher
    steps: int
    l1: float
    psnr: float
    ssim: float
    seconds_per_frame: float
    peak_memory_mb: float
    extra: dict[str, float] = field(default_factory=dict)  # lpips / fid / fvd when weights were given
    # appearance (``metrics.appearance_metrics``), None when the clips have no body-part labels
    part_colour_error: float | None = None  # RGB distance of part mean colours (0-255), mean over parts
    psnr_person: float | None = None  # PSNR over the truth's person pixels (label > 0)
    psnr_background: float | None = None  # PSNR over the truth's background pixels (label 0)
    part_colour_errors: dict[str, float] | None = None  # per part name

    def to_json(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        return {**d, **extra}

    @classmethod
    def from_json(cls, row: dict) -> MetricRow:
        """The inverse of ``to_json``: numeric keys beyond ``ROW_KEYS`` and the appearance keys go back to
        ``extra`` (others, such as a label a caller added, are dropped); rows written before the appearance
        measure existed read back with it None."""
        known = (*ROW_KEYS, *APPEARANCE_KEYS)
        extra = {k: float(v) for k, v in row.items() if k not in known and isinstance(v, int | float)}
        appearance = {k: None if row.get(k) is None else float(row[k]) for k in APPEARANCE_KEYS}
        detail = row.get(PART_DETAIL_KEY)
        parts = {str(k): float(v) for k, v in detail.items()} if isinstance(detail, dict) else None
        return cls(**{k: row[k] for k in ROW_KEYS}, extra=extra, **appearance, part_colour_errors=parts)


def write_metrics_json(rows: list[MetricRow], path: Path, meta: dict | None = None) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    payload = {"rows": [r.to_json() for r in rows]}
    if meta:
        payload["meta"] = meta
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)


COLUMN_NAMES = {"psnr_vs_teacher": "PSNR vs teacher"}  # extra columns not named by their upper-case key
APPEARANCE_COLUMNS = {"part_colour_error": "part colour err", "psnr_person": "PSNR person",
                      "psnr_background": "PSNR bg"}  # fmt: skip


def markdown_table(rows: list[MetricRow]) -> str:
    extra_keys = sorted({k for r in rows for k in r.extra})
    # the appearance columns only where some row has them (a cache of synthetic clips with labels)
    looks = [k for k in APPEARANCE_KEYS if any(getattr(r, k) is not None for r in rows)]
    head = [
        "method",
        "ablation",
        "steps",
        "L1",
        "PSNR",
        "SSIM",
        *[APPEARANCE_COLUMNS[k] for k in looks],
        *[COLUMN_NAMES.get(k, k.upper()) for k in extra_keys],
        "s/frame",
        "peak MB",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.method, r.ablation or "-", str(r.steps), f"{r.l1:.4f}", f"{r.psnr:.2f}", f"{r.ssim:.4f}"]
        cells += ["-" if getattr(r, k) is None else f"{getattr(r, k):.2f}" for k in looks]  # dB, 0-255 units
        digits = {k: 2 if k.startswith("psnr") else 4 for k in extra_keys}  # dB as the PSNR column
        cells += [f"{r.extra[k]:.{digits[k]}f}" if k in r.extra else "-" for k in extra_keys]
        cells += [f"{r.seconds_per_frame:.4f}", f"{r.peak_memory_mb:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(rows: list[MetricRow], path: Path) -> None:
    """PSNR and SSIM vs steps, and PSNR vs seconds per frame; one line per method. Optional panels vs steps:
    PSNR vs the teacher's render (eval --vs-teacher) and the part colour error (caches with part labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    # panels vs steps beyond the first three, each where some row has its value: (value, y label, title)
    optional = [
        (
            lambda r: r.extra.get("psnr_vs_teacher"),
            "PSNR vs teacher (dB)",
            "fidelity to the teacher vs steps",
        ),
        (
            lambda r: r.part_colour_error,
            "part colour error (RGB, 0-255)",
            "appearance vs steps (lower is better)",
        ),
    ]
    optional = [o for o in optional if any(o[0](r) is not None for r in rows)]
    n_axes = 3 + len(optional)
    fig, axes = plt.subplots(1, n_axes, figsize=(13 + 4.5 * len(optional), 3.8))
    groups: dict[str, list[MetricRow]] = {}
    for r in rows:
        groups.setdefault(f"{r.method}" + ("" if r.ablation in ("-", "") else f" ({r.ablation})"), []).append(
            r
        )
    # one distinct colour per line (the default cycle repeats after 10, and an ablation table has more)
    palette = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20").colors
    for (label, rs), color in zip(groups.items(), palette * (len(groups) // len(palette) + 1), strict=False):
        rs = sorted(rs, key=lambda r: r.steps)
        steps = [r.steps for r in rs]
        style = "s--" if rs[0].method == "teacher" else "o-"
        axes[0].plot(steps, [r.psnr for r in rs], style, label=label, color=color)
        axes[1].plot(steps, [r.ssim for r in rs], style, label=label, color=color)
        axes[2].plot([r.seconds_per_frame for r in rs], [r.psnr for r in rs], style, label=label, color=color)
        for ax, (value, _, _) in zip(axes[3:], optional, strict=True):
            points = [(r.steps, value(r)) for r in rs if value(r) is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label, color=color)
        for r in rs:
            axes[2].annotate(
                str(r.steps),
                (r.seconds_per_frame, r.psnr),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    labels = [("steps", "PSNR (dB)"), ("steps", "SSIM"), ("seconds per frame", "PSNR (dB)")]
    labels += [("steps", ylabel) for _, ylabel, _ in optional]
    for ax, (xl, yl) in zip(axes, labels, strict=True):
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    all_steps = sorted({r.steps for r in rows})
    for ax in [axes[0], axes[1], *axes[3:]]:
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_steps, [str(s) for s in all_steps])  # 1, 2, 4, 8, 25, 50 rather than 2^k
        ax.minorticks_off()
    axes[2].set_xscale("log")
    axes[2].xaxis.set_minor_formatter(NullFormatter())  # minor labels of a narrow log range overlap
    axes[0].set_title("quality vs steps")
    axes[1].set_title("structure vs steps")
    axes[2].set_title("quality vs time (labels: steps)")
    for ax, (_, _, title) in zip(axes[3:], optional, strict=True):
        ax.set_title(title)
    # the legend beside the panels, where it hides no line
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / fig.get_figwidth(), 1))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
