"""The runtime's EF read-out validated against FileList.csv (``echo-eval --ef``), for any model.

Every video of the split goes through the same streaming loop and cardiac read-out that
echo-run ships (runtime/stream.py, runtime/cardiac.py: masks cleaned, method-of-discs volumes,
beats with outlier frames repaired, EF per beat, median over beats), run by what echo-run runs:
a checkpoint or run folder in PyTorch, an export folder, a single .onnx/engine or ``pretrained``
with the runtime's choice of file and backend (``auto``) or the one named. The estimate is
compared with the EF FileList.csv gives (MAE, RMSE, bias, Pearson r, R^2, agreement of the
<40 / 40-50 / >50 % classes, Bland-Altman limits), and the ED/ES frames found with the traced
ones (distance to the nearest found frame of the same kind). A NaN or out-of-range EF leaves that
video out of the EF metrics (a warning, a count); a video without a beat gets "n/a" in ef.csv;
an unreadable one is counted as failed. Flags of the read-out (one beat, beats disagree, ...)
are in ef.csv and counted.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoseg.atomic import atomic_path, write_json

log = logging.getLogger(__name__)

EF_CSV = "ef.csv"
BLAND_ALTMAN_PNG = "ef_bland_altman.png"
SCATTER_PNG = "ef_scatter.png"
#: EF classes (percent): reduced, mid-range, preserved. A value on a bound goes to the middle class.
EF_CLASSES = ("<40", "40-50", ">50")
EF_RANGE = (0.0, 100.0)
CSV_FIELDS = ("FileName", "ef_true", "ef_estimate", "error", "beats", "ef_per_beat", "ef_beat_sd", "flags",
              "outlier_frames", "edv", "esv", "volume_unit", "ed_traced", "es_traced", "ed_found", "es_found",
              "ed_error_frames", "es_error_frames", "note")


def ef_class(ef: float) -> str:
    return EF_CLASSES[0] if ef < 40 else EF_CLASSES[1] if ef <= 50 else EF_CLASSES[2]


def _nearest_error(found: list[int], traced: int | None) -> int | None:
    if traced is None or not found:
        return None
    return int(min(abs(f - traced) for f in found))


def _traced_ed_es(rows_by_frame) -> tuple[int | None, int | None]:
    from echoseg.data.echonet import label_ed_es, polygon_area, tracing_polygon

    polys = {f: tracing_polygon(r) for f, r in (rows_by_frame or {}).items() if len(r) >= 3}
    polys = {f: p for f, p in polys.items() if polygon_area(p) >= 1.0}
    if len(polys) < 2:
        return None, None
    phase = label_ed_es(polys)
    return (next(f for f, p in phase.items() if p == "ED"), next(f for f, p in phase.items() if p == "ES"))


def open_model(target: str | Path, backend: str = "auto", device: str = "auto", tta: str = "none"):
    """A runtime Session for any model: a checkpoint or run folder in PyTorch on ``device``;
    an export folder, an .onnx file, an engine or ``pretrained`` as echo-run opens it (``backend``
    auto: echo-run's choice of file and backend). ``tta``: its output averaged over test-time views,
    as echo-run --tta runs it."""
    from echoseg.runtime.tta import check_tta, with_tta

    check_tta(tta)
    return with_tta(_open_plain(target, backend, device), tta)


def _open_plain(target: str | Path, backend: str, device: str):
    from echoseg import pretrained
    from echoseg.artifacts import ArtifactError, artifact_kind
    from echoseg.backends.choose import open_session

    if not pretrained.is_name(target):
        try:
            kind = artifact_kind(target) if Path(target).exists() else "checkpoint"
        except ArtifactError:
            kind = "checkpoint"
        if kind not in ("export-dir", "onnx", "engine"):
            from echoseg.models.checkpoint import load_checkpoint

            return open_session(load_checkpoint(target).path, "torch", device=device)
    return open_session(target, backend)


def measure_videos(run: str | Path, data: str | Path, split: str = "test", device: str = "auto", batch: int = 16,
                   progress: Callable[[int, int], None] | None = None, backend: str = "auto",
                   method: str = "discs", names: Sequence[str] | None = None,
                   tta: str = "none") -> list[dict[str, Any]]:
    """One row per video of the split (the columns of ef.csv, None where there is nothing);
    ``names``: only those videos of it; ``tta``: test-time views (open_model)."""
    from echoseg.data.echonet import read_tracings, split_records, video_path
    from echoseg.data.frameset import SkipReport
    from echoseg.data.video import VideoError, VideoReader
    from echoseg.runtime.api import DEFAULT_FPS
    from echoseg.runtime.cardiac import analyse, readout
    from echoseg.runtime.stream import stream_video

    root = Path(data)
    records = split_records(root, split)
    if names is not None:
        records = [r for r in records if r.name in set(names)]
    tracings = read_tracings(root, SkipReport())
    session = open_model(run, backend, device, tta)
    rows = []
    try:
        for i, rec in enumerate(records, start=1):
            ed_t, es_t = _traced_ed_es(tracings.get(rec.name))
            row: dict[str, Any] = {"FileName": rec.name, "ef_true": rec.ef, "ed_traced": ed_t, "es_traced": es_t,
                                   "beats": 0, "note": ""}
            try:
                reader = VideoReader(video_path(root, rec))  # echo-run's reader: its frame rate, its spacing
                fps = reader.info.fps if reader.info.fps > 0 else DEFAULT_FPS
                spacing = reader.info.spacing_cm
                stats = stream_video(reader, session, batch=batch)
                cardiac = analyse(stats.curves, fps=fps, method=method)
                out = readout(cardiac, fps, spacing)
                unit = "ml" if spacing else "px3"
                row.update(ef_estimate=cardiac.ef_estimate_pct, beats=len(cardiac.beats),
                           ef_per_beat=[round(x, 2) for x in cardiac.per_beat], ef_beat_sd=cardiac.ef_sd_pct,
                           flags=out["ef_flags"], outlier_frames=len(cardiac.outlier_frames),
                           edv=out[f"edv_{unit}"], esv=out[f"esv_{unit}"], volume_unit=unit,
                           ed_found=cardiac.ed_frames, es_found=cardiac.es_frames,
                           ed_error_frames=_nearest_error(cardiac.ed_frames, ed_t),
                           es_error_frames=_nearest_error(cardiac.es_frames, es_t))
                if cardiac.ef_estimate_pct is None:
                    row["note"] = "no beat found"
            except VideoError as exc:
                row.update(ef_estimate=None, note=f"failed: {exc.cause}")
                log.warning("EF: %s", exc)
            rows.append(row)
            if progress:
                progress(i, len(records))
    finally:
        session.close()
    return rows


def ef_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``ef`` block of metrics.json from measured rows (see the module docstring)."""
    bad_truth = [r for r in rows if not (isinstance(r["ef_true"], float) and math.isfinite(r["ef_true"])
                                         and EF_RANGE[0] < r["ef_true"] <= EF_RANGE[1])]
    for r in bad_truth:
        log.warning("EF: %s left out of the EF metrics: FileList.csv EF %r is missing or outside %g-%g %%",
                    r["FileName"], r["ef_true"], *EF_RANGE)
        r["note"] = (r["note"] + "; " if r["note"] else "") + "true EF missing or out of range"
    ok = [r for r in rows if r not in bad_truth and r.get("ef_estimate") is not None]
    t = np.array([r["ef_true"] for r in ok], float)
    e = np.array([r["ef_estimate"] for r in ok], float)
    d = e - t
    out: dict[str, Any] = {
        "n": len(ok), "videos": len(rows), "left_out_bad_true_ef": len(bad_truth),
        "no_beat_found": sum(r.get("ef_estimate") is None and not r["note"].startswith("failed") for r in rows),
        "failed": sum(r["note"].startswith("failed") for r in rows),
        "flagged": {f: sum(f in (r.get("flags") or []) for r in ok)
                    for f in ("one_beat", "clip_edge", "beats_disagree", "many_outlier_frames")},
        "method": "echo-run's read-out: masks cleaned, outlier frames repaired, ED/ES per beat, EF per beat, "
                  "median over beats",
    }
    if len(ok):
        sd = float(d.std(ddof=1)) if len(ok) > 1 else 0.0
        ss_tot = float(((t - t.mean()) ** 2).sum())
        agree = [ef_class(a) == ef_class(b) for a, b in zip(t, e)]
        worst = int(np.argmax(np.abs(d)))
        out.update(worst_error=float(d[worst]), worst_video=ok[worst]["FileName"])
        out.update(mae=float(np.abs(d).mean()), rmse=float(np.sqrt((d ** 2).mean())), bias=float(d.mean()),
                   sd_diff=sd, limits_of_agreement=[float(d.mean() - 1.96 * sd), float(d.mean() + 1.96 * sd)],
                   pearson_r=float(np.corrcoef(t, e)[0, 1]) if len(ok) > 1 and t.std() > 0 and e.std() > 0 else None,
                   r2=1.0 - float((d ** 2).sum()) / ss_tot if ss_tot > 0 else None,
                   class_agreement=float(np.mean(agree)),
                   class_confusion={f"{a}->{b}": sum(ef_class(x) == a and ef_class(y) == b for x, y in zip(t, e))
                                    for a in EF_CLASSES for b in EF_CLASSES})
    for ph in ("ed", "es"):
        errs = [r[f"{ph}_error_frames"] for r in rows if r.get(f"{ph}_error_frames") is not None]
        out[f"{ph}_frame_error"] = {"n": len(errs), "mean_abs": float(np.mean(errs)) if errs else None,
                                    "median_abs": float(np.median(errs)) if errs else None,
                                    "not_found": sum(r.get(f"{ph}_traced") is not None and r.get(f"{ph}_error_frames") is None
                                                     for r in rows)}
    return out


def _cell(v: Any) -> Any:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.2f}"
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return v


def write_ef_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        # cross-validated EF (evaluate_cv_ef) says which fold's model read each video
        fields = (*CSV_FIELDS, "fold") if any("fold" in r for r in rows) else CSV_FIELDS
        w.writerow(fields)
        for r in rows:
            est, true = r.get("ef_estimate"), r["ef_true"]
            err = est - true if est is not None and math.isfinite(true) else None
            w.writerow([_cell(r.get(k)) if k != "error" else _cell(err) for k in fields])


def plot_ef(out_dir: Path, rows: list[dict[str, Any]], m: dict[str, Any]) -> None:
    """Bland-Altman (difference against mean, bias and limits of agreement) and true-vs-estimate scatter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("ef_estimate") is not None and "out of range" not in r["note"]]
    t = np.array([r["ef_true"] for r in ok], float)
    e = np.array([r["ef_estimate"] for r in ok], float)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter((t + e) / 2, e - t, s=14, alpha=0.7)
    if ok:
        lo, hi = m["limits_of_agreement"]
        for y, style, label in ((m["bias"], "-", f"bias {m['bias']:+.1f}"), (lo, "--", f"-1.96 SD {lo:+.1f}"),
                                (hi, "--", f"+1.96 SD {hi:+.1f}")):
            ax.axhline(y, color="C3", ls=style, lw=1, label=label)
        ax.legend(fontsize=8)
    ax.set_xlabel("mean of true and estimated EF (%)")
    ax.set_ylabel("estimated - true EF (points)")
    ax.set_title(f"Bland-Altman, n={len(ok)}", fontsize=10)
    _save(fig, out_dir / BLAND_ALTMAN_PNG, plt)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(t, e, s=14, alpha=0.7)
    ax.plot([0, 100], [0, 100], color="0.5", lw=1)
    for b in (40, 50):
        ax.axvline(b, color="0.85", lw=0.8)
        ax.axhline(b, color="0.85", lw=0.8)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("true EF, FileList.csv (%)")
    ax.set_ylabel("estimated EF (%)")
    mae = f"MAE {m['mae']:.1f}, r={m['pearson_r'] or float('nan'):.2f}" if ok else "no estimate"
    ax.set_title(f"EF, n={len(ok)}: {mae}", fontsize=10)
    _save(fig, out_dir / SCATTER_PNG, plt)


def _save(fig, path: Path, plt) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def summary_line(m: dict[str, Any]) -> str:
    """One line for the console: MAE, bias, r and what was left out."""
    if not m["n"]:
        return f"EF: no video with both a valid true EF and a beat (of {m['videos']}); see ef.csv"
    r = f"{m['pearson_r']:.2f}" if m.get("pearson_r") is not None else "n/a"
    return (f"EF MAE {m['mae']:.2f} points, bias {m['bias']:+.2f}, worst {m['worst_error']:+.1f} "
            f"({m['worst_video']}), r {r}, class agreement "
            f"{100 * m['class_agreement']:.0f}% over n={m['n']} of {m['videos']} videos ({m['no_beat_found']} without "
            f"a beat, {m['left_out_bad_true_ef']} with a bad true EF, {m['failed']} failed); wrote ef.csv")


def _write_ef(out: Path, rows: list[dict[str, Any]], block: dict[str, Any]) -> None:
    """ef.csv, the two plots and the ``ef`` block of out/metrics.json (kept beside what it holds)."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    write_ef_csv(out / EF_CSV, rows)
    plot_ef(out, rows, block)
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["ef"] = block
    write_json(metrics_path, metrics)


def _needs_echonet(data: str | Path) -> None:
    from echoseg.data.dataset import detect_layout
    from echoseg.data.frameset import DataError

    if detect_layout(data) != "echonet":
        raise DataError(f"{data}: --ef needs an EchoNet-Dynamic folder (FileList.csv with EF, Videos/)")


def cv_ef_dir(cv: Path, tta: str = "none") -> Path:
    """Where echo-eval CV --ef writes by default: CV/eval-ef, CV/eval-ef-<tta> with test-time views
    (so a second reading with them leaves the plain one in place)."""
    return cv / ("eval-ef" if tta == "none" else f"eval-ef-{tta}")


def evaluate_cv_ef(cv_dir: str | Path, data: str | Path, out_dir: str | Path | None = None, device: str = "auto",
                   backend: str = "auto", method: str = "discs",
                   progress: Callable[[int, int], None] | None = None, tta: str = "none") -> dict[int, dict[str, Any]]:
    """Cross-validated EF: every video a fold of ``cv_dir`` held out, read by that fold's model (which
    was neither trained nor selected on it), matched by name with ``data``'s FileList.csv. One
    table per seed in out_dir/seed<S>/ (default: cv_ef_dir): ef.csv with a ``fold`` column,
    the plots and metrics.json; the blocks by seed are returned and written to ef_cv.json. A fold
    whose run cannot be opened marks its videos failed; the other folds are read."""
    import json

    from echoseg.data.echonet import split_records
    from echoseg.errors import EchosegError

    _needs_echonet(data)
    cv = Path(cv_dir)
    info = json.loads((cv / "cv.json").read_text())
    held: dict[int, dict[int, list[str]]] = {}
    for r in info["rows"]:
        held.setdefault(int(r["seed"]), {})[int(r["fold"])] = str(r.get("test_videos") or "").split()
    listed = {rec.name: rec for rec in split_records(Path(data), "all")}
    out = Path(out_dir) if out_dir else cv_ef_dir(cv, tta)
    total = sum(len(vids) for folds in held.values() for vids in folds.values())
    done, blocks = 0, {}
    for seed, folds in sorted(held.items()):
        rows: list[dict[str, Any]] = []
        for fold, videos in sorted(folds.items()):
            here = [v for v in videos if v in listed]
            if not here:
                continue
            try:
                got = measure_videos(cv / f"fold{fold}-seed{seed}", data, "all", device, backend=backend,
                                     method=method, names=here, tta=tta)
            except (EchosegError, OSError) as exc:
                log.warning("EF: fold %d seed %d cannot be read (%s); its videos are counted as failed",
                            fold, seed, exc)
                got = [{"FileName": v, "ef_true": listed[v].ef, "ef_estimate": None, "beats": 0,
                        "note": f"failed: fold{fold}-seed{seed} cannot be opened ({exc})"} for v in here]
            rows += [r | {"fold": fold} for r in got]
            done += len(videos)
            if progress:
                progress(done, total)
        block = ef_metrics(rows)
        held_out = {v for vids in folds.values() for v in vids}
        block.update(volume_method=method, tta=tta, seed=seed, folds=len(folds),
                     not_in_filelist=sorted(held_out - set(listed)),
                     listed_not_held_out=len(set(listed) - held_out))
        _write_ef(out / f"seed{seed}", rows, block)
        blocks[seed] = block
    if not blocks:
        raise EchosegError(f"{cv}: cv.json lists no scored fold run; train it with echo-train --folds")
    write_json(out / "ef_cv.json", {"cv": str(cv), "data": str(data), "seeds": {str(k): v for k, v in blocks.items()}})
    return blocks


def evaluate_ef(run: str | Path, data: str | Path, split: str, out_dir: str | Path, device: str = "auto",
                progress: Callable[[int, int], None] | None = None, backend: str = "auto",
                method: str = "discs", tta: str = "none") -> dict[str, Any]:
    """Measure, write ef.csv and the two plots, add the ``ef`` block to out_dir/metrics.json; return the block."""
    _needs_echonet(data)
    rows = measure_videos(run, data, split, device, progress=progress, backend=backend, method=method, tta=tta)
    block = ef_metrics(rows)
    block["volume_method"] = method
    block["tta"] = tta
    _write_ef(Path(out_dir), rows, block)
    return block
