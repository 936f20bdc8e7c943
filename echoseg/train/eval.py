"""Scoring a trained model: per-frame Dice/IoU/pixel accuracy with bootstrap intervals.

For a matae-unet every granularity is scored with its multiply-accumulate count; the
top-level keys of metrics.json are the full granularity's. Each granularity is also read video
by video (``videos``: each video's mean Dice over its frames, their mean and the worst video), as
a bar such as "no patient below 0.70" is read: in EchoNet-Dynamic and echo-real-dev a video is a
patient. The full network's masks are also read for where they err (``error_sites``: marked beside
the label, past its basal end, missed; in each video's largest and smallest third of label areas,
near ED and near ES), which says whether a model runs wide at ES, stops short at ED or leaks into
the atrium.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from echoseg.atomic import atomic_path, write_json
from echoseg.data.dataset import FrameSet, load_split
from echoseg.data.folds import group_by_video
from echoseg.models.checkpoint import build_from_checkpoint, load_checkpoint

from .loop import pick_device
from .predict import predict_logits
from .metrics import ERROR_SITES, METRICS, bootstrap_ci, error_sites, error_sites_by_third, per_frame
from .scorer import Scorer


def _scores(pred: np.ndarray, truth: np.ndarray, seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
    frame = per_frame(pred, truth)
    out: dict = {k: float(frame[k].mean()) for k in METRICS}
    out["frames"] = int(len(frame["dice"]))
    out["ci95"] = {k: list(bootstrap_ci(frame[k], seed=seed)) for k in METRICS}
    return out, frame


def by_video(names, dice: np.ndarray) -> dict:
    """Each video's mean Dice over its frames, the mean of videos and the worst video: a patient's
    score does not grow with how many of its frames were traced."""
    per = {video: float(dice[ix].mean()) for video, ix in group_by_video(names).items()}
    worst = min(per, key=per.get)
    return {"count": len(per), "dice_mean": float(np.mean(list(per.values()))),
            "worst": {"video": worst, "dice": per[worst]}, "dice": per}


def checkpoint_scorer(run_or_checkpoint: str | Path, device: str = "auto", tta: str = "none") -> Scorer:
    from echoseg.models import count_macs

    ckpt = load_checkpoint(run_or_checkpoint)
    model = build_from_checkpoint(ckpt)
    dev = pick_device(device)
    model.to(dev)

    def gmacs(g: float) -> float:
        n = count_macs(model.cpu(), g) / 1e9
        model.to(dev)
        return n

    return Scorer(ckpt.model.name, ckpt.model.width, str(ckpt.path), (ckpt.input_spec.height, ckpt.input_spec.width),
                  tuple(model.granularities), lambda x, g: predict_logits(model, x, ckpt.input_spec, g, dev, tta=tta) > 0,
                  gmacs, ckpt.path.parent)


def scorer_for(target: str | Path, device: str = "auto", backend: str = "auto", tta: str = "none") -> Scorer:
    """A checkpoint or run folder is scored in PyTorch; an export folder, an .onnx file or
    ``pretrained`` (the bundled model) through the runtime with ``backend`` (auto: what echo-run runs).
    ``tta``: test-time views averaged (echoseg.runtime.tta), the same in both."""
    from echoseg import pretrained
    from echoseg.artifacts import ArtifactError, artifact_kind

    if pretrained.is_name(target):
        from .eval_artifact import artifact_scorer

        return artifact_scorer(target, backend, tta)
    try:
        kind = artifact_kind(target) if Path(target).exists() else "checkpoint"
    except ArtifactError:
        kind = "checkpoint"
    if kind in ("export-dir", "onnx"):
        from .eval_artifact import artifact_scorer

        return artifact_scorer(target, backend, tta)
    return checkpoint_scorer(target, device, tta)


def evaluate(run_or_checkpoint: str | Path, data: str | Path, split: str = "test",
             out: str | Path | None = None, device: str = "auto", frames: FrameSet | None = None,
             clean: bool = False, backend: str = "auto", tta: str = "none") -> dict:
    """Score a checkpoint, export or the bundled model on a split (or on the given ``frames``);
    writes metrics.json, frames.csv and montage.png to ``out``. ``clean`` scores the masks after
    echo-run's clean-up (the LV's blob, holes filled): what echo-run measures areas on. ``tta``: the
    model's output averaged over test-time views (echo-run --tta). An exported graph's sessions are
    closed on every path, errors included."""
    with scorer_for(run_or_checkpoint, device, backend, tta) as sc:
        return _score(sc, data, split, out, frames, clean, tta)


def _score(sc: Scorer, data: str | Path, split: str, out: str | Path | None, frames: FrameSet | None,
           clean: bool, tta: str = "none") -> dict:
    fs = frames if frames is not None else load_split(data, split, sc.input_size)
    if len(fs) == 0:
        raise ValueError(f"{data}: no usable {split} frames ({fs.skipped.summary()})")
    # test-time views get their own default folder: the plain scores stay beside them
    out_dir = Path(out) if out else sc.default_out / (f"eval-{split}" + ("" if tta == "none" else f"-{tta}"))
    result: dict = {"model": sc.model, "width": sc.width, "checkpoint": sc.source,
                    "data": str(data), "split": split, "skipped": dict(fs.skipped.reasons),
                    "clean_masks": bool(clean), "tta": tta}
    if sc.ran:
        result["ran"] = dict(sc.ran)
    per_g: dict[str, dict] = {}
    frames_by_g: dict[float, dict[str, np.ndarray]] = {}
    preds_full = None
    for g in sorted(sc.granularities, reverse=True):
        pred = sc.predict(fs.images, g)
        if clean:
            from echoseg.runtime.postprocess import clean_mask

            pred = np.stack([clean_mask(m) for m in pred]) if len(pred) else pred
        scores, frame = _scores(pred, fs.masks)
        scores["gmacs"] = sc.gmacs(g)
        scores["videos"] = by_video(fs.names, frame["dice"])
        per_g[f"{g:g}"] = scores
        frames_by_g[g] = frame
        if g == 1.0:
            preds_full = pred
            result.update({k: scores[k] for k in (*METRICS, "frames", "ci95", "gmacs", "videos")})
            sites = error_sites(pred, fs.masks)
            result["error_sites"] = error_sites_by_third(sites, fs.masks.sum((1, 2)), group_by_video(fs.names))
    if len(sc.granularities) > 1:
        result["granularities"] = per_g
    phases = np.array(fs.phases)
    if fs.layout == "echonet":
        full = frames_by_g[1.0]
        result["phases"] = {ph: {k: float(full[k][phases == ph].mean()) for k in METRICS} | {"frames": int((phases == ph).sum())}
                            for ph in ("ED", "ES") if (phases == ph).any()}
    _write_outputs(out_dir, fs, preds_full, frames_by_g, sites, result)
    result["out"] = str(out_dir)
    return result


OUTPUTS = ("frames.csv", "montage.png", "metrics.json")


def _write_outputs(out_dir: Path, fs, preds_full: np.ndarray, frames_by_g: dict[float, dict],
                   sites: dict[str, np.ndarray], result: dict) -> None:
    """frames.csv, montage.png and metrics.json: all three, or none of this run's.

    Each is written under a temporary name first; only when all three are complete are they
    renamed into place (metrics.json last), so a full disk or any other failure leaves no
    frames.csv without its metrics.json (an earlier evaluation's files stay as they were).
    A write error is one line: a full disk reads "no space left on device"."""
    from contextlib import ExitStack

    from echoseg.atomic import NotWritableError

    from .plots import montage

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:  # entered metrics first: renamed last, after the others
            tmp_metrics, tmp_montage, tmp_frames = (stack.enter_context(atomic_path(out_dir / name))
                                                    for name in OUTPUTS[::-1])
            _write_frames_csv(tmp_frames, fs, preds_full, frames_by_g, sites)
            montage(fs.images, fs.masks, preds_full, frames_by_g[1.0]["dice"], fs.names, tmp_montage)
            write_json(tmp_metrics, result)
    except OSError as exc:
        if isinstance(exc, NotWritableError):
            raise
        import errno

        why = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc)).lower()
        raise NotWritableError(f"{out_dir}: {why}; nothing of this evaluation was written there "
                               f"({', '.join(OUTPUTS)}); free some space or pass another --out", exc.errno) from None


def _write_frames_csv(path: Path, fs, pred: np.ndarray, frames_by_g: dict[float, dict],
                      sites: dict[str, np.ndarray]) -> None:
    full = frames_by_g[1.0]
    extra = [g for g in sorted(frames_by_g) if g != 1.0]
    header = (["name", "phase", *METRICS, "area_true_px", "area_pred_px"] + [f"{k}_px" for k in ERROR_SITES]
              + [f"dice_g{g:g}" for g in extra])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, name in enumerate(fs.names):
            w.writerow([name, fs.phases[i], *(f"{full[k][i]:.6f}" for k in METRICS),
                        int(fs.masks[i].sum()), int(pred[i].sum()), *(int(sites[k][i]) for k in ERROR_SITES),
                        *(f"{frames_by_g[g]['dice'][i]:.6f}" for g in extra)])
