"""``python -m echoseg.pretrained.bundle EXPORT_DIR [--run RUN] [--eval METRICS]``: put an
export's FP16 and INT8 graphs into the package and write its model card.

The last step of ``make pretrained``. With ``--run``, the run's weights go in too, as weights.npz
(FP16, read without pickle: what ``echo-train --init pretrained`` starts from). Only the FP16 graphs (for a GPU: ONNX Runtime's CUDA
provider, a TensorRT engine built on the spot; on a CPU ONNX Runtime computes them in FP32 with
FP16-rounded weights) and the cpu-form INT8 graphs (OpenVINO's and ONNX Runtime's integer
kernels: the fast CPU path) travel, a few MB, with the export's manifest narrowed to the files
that are there, its parity record (OpenVINO's records included: auto runs the INT8 graph on
OpenVINO only where its record passed), and MODEL_CARD.md: written from the manifest, the run's training options and the
synthetic test scores of this build, plus REAL_ECHO.md beside this file (the team's measurement
on real echo, which a rebuild cannot repeat without real data).
"""

from __future__ import annotations

import sys
from pathlib import Path

from echoseg import artifacts
from echoseg.atomic import copy_file, write_json

from . import FOLDER
from .weights import FILE as WEIGHTS_FILE
from .weights import write_weights

SHIPPED_PRECISIONS = ("fp16", "int8")


def bundle(export_dir: str | Path, dest: Path | None = None, checkpoint: str | Path | None = None) -> list[Path]:
    """Copy the export's FP16 and INT8 graphs, parity record and narrowed manifest into ``dest`` (default:
    the package's bundle folder, looked up at call time); with ``checkpoint`` (the run the export
    was made from), also its weights as weights.npz, for ``echo-train --init pretrained``."""
    src = Path(export_dir)
    dest = FOLDER if dest is None else dest
    man = artifacts.read_manifest(src)
    if not man.get("passed"):
        raise SystemExit(f"{src}: the export did not pass its parity gates; nothing bundled")
    weights = _checkpoint_weights(checkpoint, man) if checkpoint is not None else None
    index = artifacts.index_export_dir(src)
    if index.refused:  # never ship a file that does not match its own manifest
        raise SystemExit(index.refused[0][1])
    graphs = [f.path for f in index.files if f.kind == "onnx" and f.precision in SHIPPED_PRECISIONS]
    for prec in SHIPPED_PRECISIONS:
        if not any(artifacts.granularity_from_name(p) == 1.0 and artifacts.precision_of(p) == prec for p in graphs):
            raise SystemExit(f"{src}: no full-width {prec} graph; export with echo-export build --fp16 --int8")
    dest.mkdir(parents=True, exist_ok=True)
    for old in [*dest.glob("model*.onnx"), dest / WEIGHTS_FILE]:  # no weights of another model stay behind
        old.unlink(missing_ok=True)
    written = [copy_file(p, dest / p.name) for p in graphs]
    if (src / artifacts.PARITY).is_file():
        written.append(copy_file(src / artifacts.PARITY, dest / artifacts.PARITY))
    kept = {p.name for p in written}
    man["files"] = [e for e in man["files"] if e["file"] in kept]
    if weights is not None:
        path = write_weights(dest / WEIGHTS_FILE, *weights)
        written.append(path)
        man["files"].append({"file": path.name, "bytes": path.stat().st_size, "sha256": artifacts.file_sha256(path)})
    man["bundled_from"] = str(src)
    written.append(write_json(dest / artifacts.MANIFEST, man))
    return written


def _checkpoint_weights(checkpoint: str | Path, man: dict) -> tuple[dict, dict]:
    """The state and description of the checkpoint the export was made from (refused if it is another)."""
    import numpy as np

    from echoseg.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    sha = artifacts.file_sha256(ckpt.path)
    if man.get("source_sha256") and sha != man["source_sha256"]:
        raise SystemExit(f"{ckpt.path}: not the checkpoint this export was made from (sha256 {sha[:12]}..., the "
                         f"manifest says {str(man['source_sha256'])[:12]}...); pass the exported run's --run")
    tensors, model = ckpt.state_dict, ckpt.model
    extra = {}
    if model.members > 1:  # an ensemble: a training starts from one network, its first member's weights travel
        from echoseg.models.ensemble import member_config, member_state

        tensors, model = member_state(tensors, 0), member_config(model)
        extra = {"member": 0, "members": ckpt.model.members,
                 "member_sha256": ckpt.ensemble_of[0]["sha256"] if ckpt.ensemble_of else ""}
    state = {k: np.asarray(v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy())
             for k, v in tensors.items()}
    meta = {"model": model.to_dict(), "input_spec": ckpt.input_spec.to_dict(), "threshold": ckpt.threshold,
            "source_sha256": sha, **extra}
    return state, meta


REAL_ECHO = Path(__file__).with_name("REAL_ECHO.md")
RECIPE_KEYS = ("model", "width", "epochs", "batch_size", "lr", "augment_strength", "recon_weight", "recon_until",
               "shift_consistency", "distill", "ema_decay", "warmup_epochs", "select", "seed", "data")


def model_card(man: dict, train_config: dict | None, metrics: dict | None, real_echo: str | None,
               style: str = "echo", seeds: list[int] | None = None, videos: dict[str, int] | None = None) -> str:
    """MODEL_CARD.md for the bundle: what it is, how it was made, what it scores, what it is not.
    ``seeds``: an ensemble's members' seeds (data and training), in member order. ``videos``: how many
    synthetic videos each network's data set held, per split (counted from the data; None where it is gone)."""
    m, spec = man["model"], man["input_spec"]
    k = int(m.get("members", 1))
    what = (f"an ensemble of {k} {m['name']} width {m['width']} networks trained alike from different seeds, "
            "their probabilities averaged in one graph (`echo-export ensemble`), as") if k > 1 else \
        f"{m['name']} width {m['width']},"
    shipped = sorted({artifacts.granularity_from_name(e["file"]) for e in man["files"] if e["file"].endswith(".onnx")},
                     reverse=True)
    lines = [
        f"# {FOLDER.name}: left-ventricle segmentation trained on synthetic echo only", "",
        "**Not a medical device.** For research, teaching, demos and a first look at a clip. It has not",
        "been validated for diagnosis or any clinical decision; an EF from it is an estimate to check.", "",
        "## What it is",
        f"- {what} FP16 and INT8 (cpu form) ONNX graphs at granularities "
        f"{', '.join(f'{g:g}' for g in shipped)} (g = 0.5: the nested sub-networks at a quarter of the MACs); "
        "on a CPU echo-run runs the INT8 graph on OpenVINO where its parity record passed, else the FP16 "
        "graph on ONNX Runtime (computed in FP32)",
        f"- input {spec['height']}x{spec['width']} apical four-chamber frames (any size is resized), output the LV "
        f"cavity mask (threshold {man.get('threshold', 0.5)})",
        f"- exported {man.get('created', '?')} from `{man.get('checkpoint', '?')}` "
        f"(sha256 {str(man.get('source_sha256', '?'))[:16]}...)", "",
        "## Data",
        f"Only `echo-synth --style {style}` videos (echoseg's scanner-like renderer: speckle imaged on a polar",
        "grid, depth gain, dropout, shadows, valves, papillary muscles, varied hearts and fans). No real",
        "patient image was used for training or for choosing a checkpoint, so nothing here is under a",
        "data-use agreement.", "",
    ]
    if train_config:
        lines += ["## Recipe", "| option | value |", "|---|---|"]
        for key in RECIPE_KEYS:
            if key == "seed" and k > 1:
                listed = ", ".join(map(str, seeds or [])) or train_config.get("seed")
                lines.append(f"| seed (data and training, one network each) | {listed} |")
            elif key in train_config and not (key == "data" and k > 1):
                lines.append(f"| {key} | {train_config[key]} |")
        if k > 1:
            lines.append(f"| data | `echo-synth --style {style} --layout frames --every 6 --frames 48` at each seed |")
        if videos:
            per = "/".join(str(v) for v in videos.values())
            lines.append(f"| videos{' per network' if k > 1 else ''} ({'/'.join(videos)}) | "
                         f"{sum(videos.values())} ({per}) |")
        lines += ["", "`make pretrained` rebuilds it from scratch with these options.", ""]
    if metrics:
        lines += ["## Synthetic test frames (this build)", "| g | Dice | IoU | frames |", "|---|---|---|---|"]
        for g, sc in sorted((metrics.get("granularities") or {"1": metrics}).items(), key=lambda kv: -float(kv[0])):
            lines.append(f"| {g} | {sc['dice']:.4f} | {sc['iou']:.4f} | {sc['frames']} |")
        lines.append("")
    if real_echo:
        lines += [real_echo.strip(), ""]
    lines += [
        "## Limits",
        "- Apical four-chamber views only, LV on the right of the picture (the EchoNet-Dynamic convention).",
        "- It learnt hearts from a renderer: small or unusual ventricles, heavy dropout and views that are",
        "  not A4C are where it fails first; a second dark chamber can be taken for the LV (echo-run keeps",
        "  the upper right blob, which helps where the model marks both).",
        "- A model trained on your own labelled frames will do better on your data: `echo-train --data DIR`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m echoseg.pretrained.bundle",
                                 description="Bundle an export's FP16 and INT8 graphs into the package with a model card.")
    ap.add_argument("export_dir")
    ap.add_argument("--run", help="the training run the export was made from (its options go into the model card, "
                    "its weights into weights.npz for echo-train --init pretrained)")
    ap.add_argument("--style", default="echo", help="the echo-synth style(s) the run was trained on, for the "
                    "model card (e.g. echo2, or 'echo and --style echo2' for a mix)")
    ap.add_argument("--eval", dest="metrics", help="echo-eval's metrics.json for this model on synthetic test frames")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:  # read every input before the package is touched
        tc, seeds, videos = None, None, None
        if args.run:
            from echoseg.models.checkpoint import load_checkpoint

            ck = load_checkpoint(args.run)
            tc = ck.train_config.to_dict() if ck.train_config else None
            cfgs = _member_configs(ck)
            seeds = [c.seed for c in cfgs] if cfgs and ck.ensemble_of else None
            videos = _video_counts(cfgs)
        metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else None
        real = REAL_ECHO.read_text() if REAL_ECHO.is_file() else None
        written = bundle(args.export_dir, checkpoint=args.run)
        card = model_card(artifacts.read_manifest(FOLDER), tc, metrics, real, args.style, seeds, videos)
    except (OSError, ValueError) as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 2
    from echoseg.atomic import write_text

    written.append(write_text(FOLDER / "MODEL_CARD.md", card))
    for p in written:
        print(f"bundled {p} ({p.stat().st_size / 2**20:.1f} MB)")
    return 0


def _member_configs(ckpt) -> list | None:
    """The training options of each network in the run (an ensemble's: read from the member checkpoints
    it names), or None where one is not readable any more: the card then gives the run's own seed and
    no video count."""
    from echoseg.models.checkpoint import CheckpointError, load_checkpoint

    try:
        cfgs = [load_checkpoint(m["checkpoint"]).train_config for m in ckpt.ensemble_of] if ckpt.ensemble_of \
            else [ckpt.train_config]
    except CheckpointError:
        return None
    return cfgs if all(cfgs) else None


def _video_counts(cfgs: list | None) -> dict[str, int] | None:
    """How many videos each network's frame folders held, per split; None where a folder is gone or
    unreadable, or the networks' counts differ (the card then leaves the row out rather than fail)."""
    from echoseg.data.frames import videos_per_split

    try:
        counts = [videos_per_split(c.data) if c.data and Path(c.data).is_dir() else {} for c in cfgs or []]
    except OSError:
        return None
    return counts[0] if counts and counts[0] and all(c == counts[0] for c in counts) else None


if __name__ == "__main__":
    raise SystemExit(main())
