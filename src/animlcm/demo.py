"""`make demo`: the whole flow on the built-in default, with no downloads, on CPU in about a minute.

A held-out synthetic dancer (an identity and a dance never seen in training) is generated, extracted into a
cache, and re-animated from its first frame by the built-in 4-step student driven by its own poses. The
output folder gets the mp4, its preview grid, and a side-by-side (reference | ground truth | student, each
captioned) video and image, plus ``demo.json``: PSNR/SSIM/L1 of the student against the ground truth and the
appearance measure of ``animlcm eval`` (part colour error, PSNR over the person and over the background,
from the synthetic clip's body-part labels).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parent / "assets" / "tiny"


def run_demo(out: Path, steps: int = 4, frames: int = 24, seed: int = 7, model: Path | None = None) -> dict:
    from rich.console import Console

    from animlcm.cache import CacheReader
    from animlcm.config import resolve_config
    from animlcm.errors import AnimlcmError
    from animlcm.stages.evaluate.metrics import appearance_metrics, frame_metrics
    from animlcm.stages.extract import ExtractConfig
    from animlcm.stages.extract import run as extract
    from animlcm.stages.render.config import RenderConfig
    from animlcm.stages.render.preview import side_by_side
    from animlcm.stages.render.run import run as render
    from animlcm.stages.render.videoio import read_video, write_image, write_video
    from animlcm.synth.world import generate

    console = Console()
    model = Path(model) if model is not None else ASSETS / "student"
    if not (model / "animlcm.json").exists():
        raise AnimlcmError(
            f"{model}: no built-in student here; build it with `make models` or pass --model DIR"
        )
    out.mkdir(parents=True, exist_ok=True)

    console.rule("1. a held-out synthetic dancer")
    videos = generate(
        out / "videos", identities=1, clips=1, frames=frames, size=128, seed=seed, split="heldout"
    )

    console.rule("2. extract (ground-truth poses, the student's VAE)")
    cfg = resolve_config(ExtractConfig, "tiny", None, {"pose": "groundtruth", "teacher": str(model)})
    summary = extract(cfg, [out / "videos"], out / "cache", console=console)
    if summary.exit_code:
        raise AnimlcmError(f"{out / 'cache'}: extraction failed; see the table above")
    name = videos[0].stem
    with CacheReader(out / "cache").open(name) as entry:
        truth = entry.frames(slice(None))
        labels, part_names = entry.part_labels(slice(None)), entry.part_names
    write_image(out / "reference.png", truth[0])

    console.rule(f"3. render {steps} steps with {model}")
    rcfg = resolve_config(
        RenderConfig,
        "tiny",
        None,
        {
            "reference": str(out / "reference.png"),
            "pose": f"{out / 'cache'}:{name}",
            "model": str(model),
            "steps": steps,
            "out": str(out / "demo.mp4"),
            "deterministic": True,
        },
    )
    result = render(rcfg)
    generated, fps = read_video(result.video)
    n = min(len(generated), len(truth))
    reference = np.broadcast_to(truth[0], truth[:n].shape)  # the frame the student animates, held still
    side = side_by_side(
        [("reference", reference), ("ground truth", truth[:n]), (f"student, {steps} steps", generated[:n])]
    )
    write_video(out / "side_by_side.mp4", side, fps)
    picks = np.linspace(0, n - 1, min(6, n)).round().astype(int)
    write_image(out / "side_by_side.png", np.concatenate(list(side[picks]), axis=0))
    metrics = {k: float(v) for k, v in frame_metrics(generated[:n], truth[:n]).items()}
    looks = appearance_metrics(generated[:n], truth[:n], labels[:n], part_names)
    report = {
        "video": str(result.video),
        "preview": str(result.preview),
        "side_by_side": str(out / "side_by_side.mp4"),
        "steps": steps,
        "frames": n,
        "seconds_per_frame": result.seconds_per_frame,
        **metrics,
        **looks,
    }
    (out / "demo.json").write_text(json.dumps(report, indent=2))
    console.rule("done")
    console.print(
        f"{n} frames at {steps} steps, {result.seconds_per_frame:.3f} s/frame; vs ground truth: "
        f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}, L1 {metrics['l1']:.4f}; "
        f"part colour error {looks['part_colour_error']:.1f} (RGB 0-255), PSNR person "
        f"{looks['psnr_person']:.2f} dB, background {looks['psnr_background']:.2f} dB\n"
        f"video {result.video}\npreview {result.preview}\n"
        f"side by side (reference | truth | student) {out / 'side_by_side.png'}"
    )
    return report


def main() -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", type=Path, default=None, help="student folder (default: the built-in one)")
    args = parser.parse_args()
    from animlcm.errors import AnimlcmError

    try:
        run_demo(args.out, args.steps, args.frames, args.seed, args.model)
    except AnimlcmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
