"""`run_videos`: what `echo-run` does, as a function (one Session, every video streamed through it)."""

from __future__ import annotations

import logging
import os
import re
import threading
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from echoseg.atomic import check_writable, write_json
from echoseg.backends.choose import ModelChoice, choose, open_choice, open_with_fallback
from echoseg.backends.registry import get as _backend
from echoseg.backends.session import Session, SessionError
from echoseg.data.video import VideoError, VideoReader, is_dicom, is_live, shown_source
from echoseg.errors import EchosegError

from .cardiac import analyse, readout
from .live import BeatWatcher, OnBeat, stop_on_interrupt
from .masks import MASK_FORMATS, mask_sink
from .readout import mask_readout
from .outputs import (AREA_PNG, FRAMES_CSV, OVERLAY_VIDEO, SUMMARY_CSV, SUMMARY_JSON, OutputRefused, OverlaySink,
                      StagingDir, plot_area, remove_stale_staging, write_frames_csv, write_summary_csv)
from .roi import parse_roi
from .sector import resolve_crop
from .stream import StreamStats, stream_batch, stream_video
from .tta import check_tta, with_tta

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".dcm", ".dicom")
#: Frame rate assumed when a container does not say (EchoNet-Dynamic's rate).
DEFAULT_FPS = 50.0
#: Largest --batch accepted (frames per inference call); far beyond any GPU's useful batch.
MAX_BATCH = 4096

#: (video name, frames done, frames expected or 0)
RunProgress = Callable[[str, int, int], None]


class OptionError(EchosegError, ValueError):
    """A run option (--save-masks, --seconds) that cannot be used."""


@dataclass
class VideoResult:
    """One input's outcome: ``summary`` (what summary.json holds) when ok, ``error`` when not."""

    input: str
    name: str
    ok: bool
    error: str | None = None
    out_dir: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path | str], list[VideoResult], bool]:
    """Files, directories and live sources -> (videos to run, inputs that already failed, any directory given).

    A live source (a capture device index or a stream URL, :func:`is_live`) stays a string."""
    videos: list[Path | str] = []
    failed: list[VideoResult] = []
    any_dir = False
    for raw in inputs:
        if isinstance(raw, str) and is_live(raw):
            videos.append(raw)
            continue
        p = Path(raw)
        if not p.is_dir():
            videos.append(p)  # a missing or bad file fails later with its own cause
            continue
        any_dir = True
        found = _videos_in(p) or (_videos_in(p / "Videos") if (p / "Videos").is_dir() else [])
        if not found:
            failed.append(VideoResult(str(p), p.name, False,
                                      f"{p}: no videos in this folder (looked for {', '.join(VIDEO_SUFFIXES)}, "
                                      "and DICOM files by content)"))
        videos.extend(found)
    return videos, failed, any_dir


def _videos_in(d: Path) -> list[Path]:
    """Videos by suffix, and DICOM files by content (preamble + DICM: PACS exports often have no suffix)."""
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and (
        p.suffix.lower() in VIDEO_SUFFIXES or (p.name.upper() != "DICOMDIR" and is_dicom(p))))


def _stem(source: Path | str) -> str:
    """The output folder's name for a file (its stem) or a live source (capture0, or the URL's host and path)."""
    if isinstance(source, str) and is_live(source):
        if source.isdigit():
            return f"capture{source}"
        tail = re.sub(r"[^A-Za-z0-9._-]+", "_", shown_source(source).split("://", 1)[1]).strip("._")
        return ("stream_" + tail)[:80] if tail else "stream"
    return Path(source).stem or "video"


def _unique_name(stem: str, taken: set[str]) -> str:
    name, k = stem, 2
    while name in taken:
        name, k = f"{stem}_{k}", k + 1
    taken.add(name)
    return name


def run_videos(inputs: Sequence[str | os.PathLike], model: str | os.PathLike | None = None,
               backend: str = "auto", batch: int = 8, granularity: float | None = None,
               out: str | os.PathLike = "outputs", video: bool = True, progress: RunProgress | None = None,
               threads: int = 0, root: str | os.PathLike = ".", session: Session | None = None,
               errors: list[str] | None = None, clean_masks: bool = True, roi: str = "auto",
               save_masks: str | None = None, seconds: float = 0.0, on_beat: OnBeat | None = None,
               tta: str = "none") -> list[VideoResult]:
    """Segment every video in ``inputs`` and write its outputs under ``out``/<video name>/.

    Raises SessionError when the model cannot be opened (nothing can run) and NotWritableError
    (an OSError) when ``out`` cannot be written; a bad video only fails its own VideoResult. A
    directory input (or several videos) also gets ``out``/summary.csv; a failure to write it is
    appended to ``errors`` (one line) rather than raised. ``session``: an already open Session to
    use instead of model/backend/granularity (the caller keeps it and closes it). ``clean_masks``:
    largest component, holes filled, before measuring.

    ``roi``: auto (find the ultrasound sector; the whole frame when it fills most of it), full, or
    x,y,w,h in the input's pixels (runtime/sector.py); RoiError (a ValueError) for a bad value, and
    OptionError (a ValueError) for a bad ``save_masks`` or ``seconds``, before any model is opened.
    ``save_masks``: None, "npz" (masks.npz) or "png" (masks/NNNNNN.png), on the input's pixel grid.
    ``seconds``: stop each input after that many seconds (of video for a file, of wall time for a
    live source); 0 = to its end (a live source: to Ctrl-C). ``on_beat``: called with each beat
    of a live source as it completes. ``tta``: none, or a view set of runtime/tta.py (shift3: the
    model's output averaged over three shifted copies of each frame; 3x the inference).
    """
    if not 1 <= batch <= MAX_BATCH:
        raise SessionError(f"--batch must be between 1 and {MAX_BATCH} frames, got {batch}")
    parse_roi(roi)  # a bad --roi fails here, before any model is opened
    if save_masks is not None and save_masks not in MASK_FORMATS:
        raise OptionError(f"--save-masks {save_masks!r}: use one of {', '.join(MASK_FORMATS)}")
    if seconds < 0:
        raise OptionError(f"--seconds must be 0 (no limit) or more, got {seconds}")
    check_tta(tta)
    choice = choose(model, backend, granularity, root) if session is None else None  # cheap: no model loaded
    out_root = check_writable(out, "pass a writable --out (or free some space)", create=False)
    for p in remove_stale_staging(out_root):
        log.info("removed %s, left by an echo-run that was killed", p)
    reason = "session given"
    with ExitStack() as owned:  # a session opened here is closed on every path, errors included
        if choice is not None:
            opener = lambda c: _open_checked(c, granularity, threads, batch)  # noqa: E731 (logs the choice, why)
            if backend == "auto":  # a backend that cannot open it here is passed over, one warning line
                session, choice = open_with_fallback(choice, opener, lambda failed: choose(
                    model, backend, granularity, root, failed=failed))
            else:
                session = opener(choice)
            owned.callback(session.close)  # any Session (a registered backend need not be a BaseSession)
            reason = choice.reason
        session = with_tta(session, tta)  # the caller's or the owned session is the one closed
        videos, results, any_dir = expand_inputs(inputs)
        taken: set[str] = set()
        for path in videos:
            name = _unique_name(_stem(path), taken)
            results.append(run_one(path, session, out_root / name, batch=batch, video=video,
                                   progress=progress, reason=reason, clean_masks=clean_masks, roi=roi,
                                   save_masks=save_masks, seconds=seconds, on_beat=on_beat))
    if any_dir or len(results) > 1:
        try:
            write_summary_csv(out_root / SUMMARY_CSV, [_csv_row(r) for r in results])
        except OSError as exc:
            msg = str(exc) if isinstance(exc, OutputRefused) else (
                f"{out_root / SUMMARY_CSV}: not written ({exc.strerror or exc}); the per-video outputs are complete")
            log.error("%s", msg)
            if errors is None:
                raise
            errors.append(msg)
    return results


def _open_checked(choice: ModelChoice, granularity: float | None, threads: int, batch: int = 1) -> Session:
    """Open what ``choice`` names (not choosing again), with any failure to describe or load the model as a
    SessionError, then check_session.

    The choice's own options (what auto picked with the file, e.g. OpenVINO's precision) go with it, so
    the session runs what the choice says; ``threads`` goes to every backend that takes it. ``batch``:
    the batch the videos will run at, which the check runs too (see check_session)."""
    options: dict[str, Any] = {}
    if choice.backend == "torch":
        options["granularity"] = granularity
    if threads and "threads" in _backend(choice.backend).options:
        options["threads"] = threads
    try:
        session = open_choice(choice, **options)
    except SessionError:
        raise
    except (ValueError, KeyError, OSError) as exc:  # e.g. a checkpoint naming a model this version lacks
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SessionError(f"{choice.path}: cannot open this model ({why})") from exc
    try:
        check_session(session, batch)
    except BaseException:
        session.close()
        raise
    return session


def check_session(session: Session, batch: int = 1) -> None:
    """Run one zero batch of the artifact's own input spec; raise SessionError if it does not fit.

    An artifact whose graph contradicts its input spec (size or channels) would otherwise open
    fine and then fail every video; this finds it once, before any video is touched. The batch is
    the one stream_video will run (``batch`` clamped into the session's range), so the backend's
    one-off work for that shape (OpenVINO compiles for it, ONNX Runtime sizes its buffers) is done
    here, in the session's start-up, and not inside the first video's frames/s.
    """
    info = session.info
    spec = info.meta.input_spec
    n = stream_batch(info, batch)
    shape = (n, spec.channels, spec.height, spec.width)
    want = "x".join(str(v) for v in shape)
    fix = "re-export it with echo-export build"
    try:
        y = np.asarray(session.run(np.zeros(shape, np.float32)))
    except (SessionError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SessionError(f"{info.path}: does not take the {want} input its own input spec describes "
                           f"({first}); {fix}") from exc
    if y.ndim != 4 or y.shape[0] != n or y.shape[1] != 1:
        raise SessionError(f"{info.path}: returns shape {tuple(y.shape)} for a {want} input, expected {n}x1xHxW "
                           f"logits; {fix}")


def run_one(path: Path | str, session: Session, out_dir: Path, batch: int = 8, video: bool = True,
            progress: RunProgress | None = None, reason: str = "", clean_masks: bool = True, roi: str = "auto",
            save_masks: str | None = None, seconds: float = 0.0, on_beat: OnBeat | None = None) -> VideoResult:
    """One video (or live source) through ``session``; its outputs appear in ``out_dir`` complete, or not at all.

    A live source ends at ``seconds``, at its own end, or at Ctrl-C/SIGTERM (the first one: the
    frames already read are finished and the outputs written; see runtime/live.py)."""
    name = out_dir.name
    live = isinstance(path, str) and is_live(path)
    path = path if live else Path(path)
    shown = shown_source(path)  # what is printed and recorded: a stream URL without its password
    staging: StagingDir | None = None
    sinks: list = []
    reader: VideoReader | None = None
    try:
        reader = VideoReader(path)  # opened once; fails early, before any folder is made, for a missing/bad file
        vinfo = reader.info
        crop = resolve_crop(roi, reader, path)
        fps_video = vinfo.fps
        fps = fps_video if fps_video > 0 else DEFAULT_FPS
        if fps_video <= 0:
            log.warning("%s: the source gives no frame rate; assuming %.0f fps", shown, DEFAULT_FPS)
        staging = StagingDir(out_dir)
        if video:
            sinks.append(OverlaySink(staging.tmp / OVERLAY_VIDEO, fps))
        if save_masks:
            sinks.append(mask_sink(save_masks, staging.tmp))
        report = (lambda done, total: progress(name, done, total)) if progress else None
        watcher = BeatWatcher(fps, on_beat) if (live and on_beat is not None) else None
        stop = threading.Event()
        timer = None
        if live and seconds > 0:
            timer = threading.Timer(seconds, stop.set)
            timer.daemon = True
        with stop_on_interrupt(stop) if live else nullcontext():
            if timer is not None:
                timer.start()
            try:
                stats = stream_video(reader, session, batch=batch, sink=_fan_out(sinks), progress=report,
                                     clean_masks=clean_masks, crop=crop, until=stop if live else None,
                                     max_frames=0 if live or seconds <= 0 else max(1, round(seconds * fps)),
                                     measured=watcher)
            finally:
                if timer is not None:
                    timer.cancel()
        for sink in sinks:
            sink.close()
        if watcher is not None:
            watcher.finish()
        cardiac = analyse(stats.curves, fps=fps)
        write_frames_csv(staging.tmp / FRAMES_CSV, stats.area_px, stats.length_px, fps, cardiac, vinfo.spacing_cm)
        plot_area(staging.tmp / AREA_PNG, stats.area_px, fps, cardiac,
                  f"{path.name if isinstance(path, Path) else shown}: LV area")
        summary = _summary(shown, name, session, stats, cardiac, fps, fps_video <= 0, video, reason)
        summary.update(readout(cardiac, fps, vinfo.spacing_cm))
        summary.update(_units(vinfo, clean_masks))
        summary.update(mask_readout(stats.area_px))  # masks empty on (nearly) every frame: said, not "no beat"
        summary["roi"] = dict(crop.to_dict(), asked=roi)
        summary["source"] = "live" if live else vinfo.kind
        summary["outputs"]["masks"] = ({"npz": "masks.npz", "png": "masks/"}[save_masks] if save_masks else None)
        write_json(staging.tmp / SUMMARY_JSON, summary)
        final = staging.commit()
        staging = None
        log.info("%s: %d frames at %.1f fps end to end -> %s", shown, stats.frames, stats.processing_fps, final)
        return VideoResult(shown, name, True, out_dir=str(final), summary=summary)
    except (VideoError, SessionError, OSError, ValueError, RuntimeError, _cv2_error()) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        msg = msg.replace(str(path), shown)
        if shown not in msg:
            msg = f"{shown}: {msg}"
        log.error("%s", msg)
        return VideoResult(shown, name, False, error=msg)
    finally:
        if reader is not None:
            reader.close()
        for sink in sinks:  # a failed video: the overlay writer released, the masks' scratch file removed
            (sink.discard if staging is not None and hasattr(sink, "discard") else sink.close)()
        if staging is not None:
            staging.discard()


def _fan_out(sinks: list):
    if not sinks:
        return None
    if len(sinks) == 1:
        return sinks[0]

    def call(index, frame, mask) -> None:
        for s in sinks:
            s(index, frame, mask)
    return call


def _cv2_error() -> type[Exception]:
    import cv2

    return cv2.error


def _summary(path: Path | str, name: str, session: Session, stats: StreamStats, cardiac, fps: float,
             fps_assumed: bool, video: bool, reason: str) -> dict[str, Any]:
    info = session.info
    return {
        "video": str(path), "name": name, "frames": stats.frames, "width": stats.width, "height": stats.height,
        "fps": fps, "fps_assumed": fps_assumed, "duration_s": stats.frames / fps,
        "processing_fps": stats.processing_fps, "model_fps": stats.model_fps,
        "backend": info.backend, "precision": info.precision, "device": info.device, "model": info.path,
        "backend_reason": reason, "granularity": info.meta.granularity, "model_name": info.meta.model.name,
        "threshold": info.meta.threshold, "batch": stats.batch, "tta": getattr(session, "tta", "none"),
        "timings": stats.timings(),
        "outputs": {"frames_csv": FRAMES_CSV, "area_png": AREA_PNG, "summary_json": SUMMARY_JSON,
                    "overlay_video": OVERLAY_VIDEO if video else None},
    }


def _units(vinfo, clean_masks: bool) -> dict[str, Any]:
    """Where fps and spacing came from (with a spacing, readout gives cm^2 / cm / mL beside the pixel figures)."""
    sp = vinfo.spacing_cm
    return {"fps_source": vinfo.fps_source, "clean_masks": clean_masks,
            "pixel_spacing_cm": {"x": sp[0], "y": sp[1]} if sp else None}


def _csv_row(r: VideoResult) -> dict[str, Any]:
    s = r.summary
    return {"video": r.input, "status": "ok" if r.ok else "failed", "error": r.error, "frames": s.get("frames"),
            "fps": s.get("fps"), "processing_fps": s.get("processing_fps"), "model_fps": s.get("model_fps"),
            "beats": len(s["beats"]) if s else None,
            "ef_estimate_mean_pct": (s.get("ef_estimate_pct") or {}).get("mean"),
            "ef_estimate_pct": (s.get("ef_estimate_pct") or {}).get("value"),
            "ef_beat_sd_pct": (s.get("ef_estimate_pct") or {}).get("sd"), "ef_flags": " ".join(s.get("ef_flags") or []),
            "backend": s.get("backend"), "precision": s.get("precision"), "out_dir": r.out_dir}
