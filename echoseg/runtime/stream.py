"""The one streaming loop: reader thread -> bounded queue -> batches through a Session -> writer thread.

Decoding (and resizing/normalising), inference and post-processing (masks at the original
resolution, LV area and length, whatever the frame sink does, e.g. an overlay video) run at
the same time in three threads; OpenCV and ONNX Runtime release the GIL while they work.
Bounded queues keep memory flat whatever the video's length. Used by echo-run and echo-bench.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from echoseg.config import logit_cut
from echoseg.data.video import VideoError, VideoReader

from .buffers import LARGE_FRAME_BYTES, plan_buffers, return_large_blocks
from .cardiac import FrameCurves, measure_mask
from .postprocess import clean_mask
from .roi import Crop
from echoseg.backends.session import Session, SessionInfo, preprocess

log = logging.getLogger(__name__)

#: Called by the writer thread for every frame, in order: (index, frame BGR H,W,3, mask bool H,W).
FrameSink = Callable[[int, np.ndarray, np.ndarray], None]
#: Called with (frames done, frames expected or 0 when the container does not say).
Progress = Callable[[int, int], None]
#: Called by the writer thread for every frame, in order: (index, cardiac.FrameMeasure) on the input's grid.
Measured = Callable[[int, Any], None]

#: Frames a container may claim beyond what decodes before we call the file truncated.
FRAME_COUNT_SLACK = 1

_END = object()
_PIXEL = np.zeros((1, 1, 3), np.uint8)


@dataclass
class StreamStats:
    """What one video's pass produced: per-frame measurements and where the time went."""

    path: str
    frames: int
    height: int
    width: int
    fps: float  # the video's own frame rate (0 if the container does not say)
    area_px: np.ndarray
    length_px: np.ndarray
    batch: int
    decode_s: float = 0.0  # reader thread busy: decode + resize + normalise
    inference_s: float = 0.0  # inside Session.run
    postprocess_s: float = 0.0  # writer thread busy: masks, measurements, sink
    wall_s: float = 0.0
    batch_latency_ms: list[float] = field(default_factory=list)
    curves: FrameCurves | None = None  # per-frame area, length, disc volume, centre (the cardiac read-out's input)

    @property
    def model_fps(self) -> float:
        """Frames per second of Session.run alone."""
        return self.frames / self.inference_s if self.inference_s > 0 else 0.0

    @property
    def processing_fps(self) -> float:
        """Frames per second end to end (decode to outputs)."""
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def timings(self) -> dict[str, float]:
        """Busy time per stage, throughput, and Session.run latency percentiles per batch."""
        lat = np.asarray(self.batch_latency_ms or [0.0])
        p50, p95, p99 = (float(v) for v in np.percentile(lat, [50, 95, 99]))
        return {"decode_s": self.decode_s, "inference_s": self.inference_s,
                "postprocess_s": self.postprocess_s, "wall_s": self.wall_s,
                "model_fps": self.model_fps, "processing_fps": self.processing_fps,
                "batch_latency_p50_ms": p50, "batch_latency_p95_ms": p95, "batch_latency_p99_ms": p99}


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def mask_at(logits_hw: np.ndarray, height: int, width: int, cut: float) -> np.ndarray:
    """Model-size logits H',W' -> bool mask at height x width (logits resized, then cut)."""
    import cv2

    m = np.asarray(logits_hw, dtype=np.float32)
    if m.shape != (height, width):
        interp = cv2.INTER_LINEAR if height >= m.shape[0] else cv2.INTER_AREA
        m = cv2.resize(m, (width, height), interpolation=interp)
    return m > cut


@contextmanager
def opencv_sequential() -> Iterator[None]:
    """OpenCV without its own worker threads while this runs (its previous setting restored after).

    The stream's parallelism is its three threads beside the model's own; OpenCV's worker pool
    (its parallel loops in resizing, colour conversion, the overlay's drawing and the writer's
    conversions) only competes with the model for the cores. FFmpeg's own decoder threads do not
    follow this setting. Measured on the 600-frame 112x112 clip with a model that costs nothing
    (2-core Zen 4): 1.7 -> 1.05-1.3 ms of CPU per frame with the overlay video, 0.95 -> 0.6-0.8
    without. OpenCV's thread count is process-wide: other threads of the same process calling
    OpenCV meanwhile run sequentially too.
    """
    import cv2

    prior = cv2.getNumThreads()
    cv2.setNumThreads(0)
    try:
        yield
    finally:
        cv2.setNumThreads(prior)


def stream_batch(info: SessionInfo, batch: int) -> int:
    """The batch stream_video runs on a session: ``batch`` clamped into its range (a fixed one taken as is)."""
    if info.max_batch:
        batch = min(batch, info.max_batch)
    return max(1, batch, info.min_batch if info.min_batch == info.max_batch else 1)


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless asked to stop; False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def stream_video(source: str | os.PathLike | VideoReader, session: Session, batch: int = 8,
                 sink: FrameSink | None = None, progress: Progress | None = None, queue_batches: int = 1,
                 clean_masks: bool = True, crop: Crop | None = None, until: threading.Event | None = None,
                 max_frames: int = 0, measured: Measured | None = None) -> StreamStats:
    """Segment every frame of one video; raises VideoError for a missing/bad/empty/truncated file.

    ``source``: a path, or a VideoReader the caller already opened (its info read, no frame yet):
    the file is opened once either way, and the reader is closed when this returns.

    ``clean_masks``: keep each mask's LV component (postprocess.lv_component) with its holes filled
    (runtime/postprocess.py) before it is measured and handed to the sink.

    ``crop``: the part of each frame the model sees (runtime/sector.py: a box padded to a square);
    the masks, areas and lengths are on the input's own pixel grid either way. None: the whole frame
    as it is (resized to the model's input).

    ``until``: an event that ends the video early and cleanly (a live source stopped by Ctrl-C or
    ``--seconds``): frames already read are finished, nothing more is read. ``max_frames``: stop
    after that many frames (0: all). ``measured`` is called per frame with its index and measurements (cardiac.measure_mask).

    ``batch`` is clamped into the session's batch range; a short last batch goes to the session
    as it is (a session that only takes fixed batches pads it itself: BaseSession). The sink and
    progress run in the writer thread. OpenCV
    runs without its own worker threads meanwhile (opencv_sequential).
    """
    with opencv_sequential():
        return _stream(source, session, batch, sink, progress, queue_batches, clean_masks, crop, until,
                       max_frames, measured)


def _stream(source: str | os.PathLike | VideoReader, session: Session, batch: int, sink: FrameSink | None,
            progress: Progress | None, queue_batches: int, clean_masks: bool, crop: Crop | None = None,
            until: threading.Event | None = None, max_frames: int = 0,
            measured: Measured | None = None) -> StreamStats:
    video = source if isinstance(source, VideoReader) else VideoReader(source)  # VideoError: missing / not a video
    path, info = video.path, video.info
    sinfo = session.info
    # frames in flight held to a byte budget: a 4K video runs in smaller batches (runtime/buffers.py)
    plan = plan_buffers(info.width, info.height, stream_batch(sinfo, batch), queue_batches)
    batch = plan.batch
    if plan.frame_bytes >= LARGE_FRAME_BYTES:
        return_large_blocks()
    meta = sinfo.meta
    cut = logit_cut(meta.threshold, meta.output)
    stats = StreamStats(path=str(path), frames=0, height=info.height, width=info.width, fps=info.fps,
                        area_px=np.zeros(0), length_px=np.zeros(0), batch=batch)
    q_in: queue.Queue = queue.Queue(maxsize=plan.queue_frames)
    q_out: queue.Queue = queue.Queue(maxsize=max(1, queue_batches))
    stop = threading.Event()
    measures: list = []
    writer_error: list[BaseException] = []
    t_start = time.perf_counter()

    def reader() -> None:
        n, busy = 0, 0.0
        decoded = video.frames()
        try:
            t0 = time.perf_counter()
            for frame in decoded:
                if until is not None and until.is_set():
                    break
                if crop is not None and frame.shape[:2] != (crop.frame_h, crop.frame_w):
                    raise VideoError(path, f"frame {n} is {frame.shape[1]}x{frame.shape[0]}, the video "
                                           f"{crop.frame_w}x{crop.frame_h}: a size that changes is not supported")
                x = preprocess((crop.apply(frame) if crop is not None else frame)[None], meta)[0]
                if sink is None:  # nothing draws on it: only its size travels on (a view of one pixel)
                    frame = np.broadcast_to(_PIXEL, frame.shape)
                busy += time.perf_counter() - t0
                if not _put(q_in, (frame, x), stop):
                    return
                n += 1
                if max_frames and n >= max_frames:
                    break
                t0 = time.perf_counter()
            stopped = bool(max_frames and n >= max_frames) or (until is not None and until.is_set())
            if info.frame_count and not stopped and n + FRAME_COUNT_SLACK < info.frame_count:
                raise VideoError(path, f"truncated: decoded {n} of the {info.frame_count} frames its header declares")
            _put(q_in, _END, stop)
        except BaseException as exc:  # handed to the main thread, which re-raises it
            _put(q_in, _Failure(exc), stop)
        finally:
            decoded.close()
            video.close()  # releases the capture even when stopped early (or never started)
            stats.decode_s = busy

    def writer() -> None:
        busy, index = 0.0, 0
        while True:
            item = q_out.get()
            if item is _END:
                break
            if writer_error:
                continue  # keep draining so the main thread never blocks
            t0 = time.perf_counter()
            frames, logits = item
            try:
                for frame, lg in zip(frames, logits):
                    if crop is not None and not crop.identity:
                        mask = crop.mask_to_input(lg[0], cut)
                    else:
                        mask = mask_at(lg[0], frame.shape[0], frame.shape[1], cut)
                    mask = clean_mask(mask) if clean_masks else mask
                    measures.append(measure_mask(mask))
                    if measured is not None:
                        measured(index, measures[-1])
                    if sink is not None:
                        sink(index, frame, mask)
                    index += 1
                    if progress is not None:
                        progress(index, info.frame_count)
            except BaseException as exc:
                writer_error.append(exc)
            busy += time.perf_counter() - t0
        stats.postprocess_s = busy

    threads = [threading.Thread(target=reader, name="echo-reader", daemon=True),
               threading.Thread(target=writer, name="echo-writer", daemon=True)]
    for t in threads:
        t.start()
    failure: BaseException | None = None
    try:
        done = False
        while not done and not writer_error:
            frames, xs = [], []
            while len(xs) < batch:
                item = q_in.get()
                if item is _END:
                    done = True
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                frames.append(item[0])
                xs.append(item[1])
            if not xs:
                break
            x = np.stack(xs)
            t0 = time.perf_counter()
            y = session.run(x)  # the session pads a short batch itself (BaseSession) and returns len(xs) rows
            dt = time.perf_counter() - t0
            stats.inference_s += dt
            stats.batch_latency_ms.append(dt * 1000.0)
            q_out.put((frames, y))
    except BaseException as exc:
        failure = exc
    finally:
        stop.set()
        q_out.put(_END)
        for t in threads:
            t.join()
        video.close()
    if failure is not None:
        raise failure
    if writer_error:
        raise writer_error[0]
    stats.wall_s = time.perf_counter() - t_start
    stats.curves = FrameCurves.from_measures(measures)
    stats.frames = len(measures)
    stats.area_px = stats.curves.area_px
    stats.length_px = stats.curves.length_px
    if stats.frames == 0:
        raise VideoError(path, "no frames could be decoded (empty, truncated or corrupt video)")
    return stats
