"""Measure ONE configuration in this process and print one JSON row.

Run as ``python -m echoseg.bench.worker --config JSON`` so that every configuration lives in
its own process and one's memory never counts in another's. Phases, in order:

1. import the backend library (``import_s``);
2. cold start: open the session and run the first batch (``cold_start_s``);
3. warm-up, then timed calls on one batch until a minimum count and time (latency, throughput);
4. whole-video passes through echo-run's own streaming loop (runtime/stream.py): decode,
   preprocess, infer, masks at the video's size (``video_s``, the paper's "Inference Time per
   video", end to end as echo-run reports it) with the time inside Session.run beside it
   (``video_model_s``, model only);
5. after the sampler stops: masks for the accuracy comparison, ground-truth scores, MACs.

Resources (RSS, CPU, GPU) cover phases 3-4, the warm inference; NVML is opened only when the
session computes on a GPU, for the CUDA device it uses. Sessions come only from
:func:`echoseg.backends.choose.open_session`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from echoseg.errors import EchosegError

from .inference import fit_batch, infer_frames, save_masks, stream_masks, timing_batch

log = logging.getLogger(__name__)

MODES = ("measure", "table1", "reference")


class WorkerConfigError(EchosegError, ValueError):
    """A --config the worker cannot use (not JSON, unknown keys, a bad mode or batch)."""


@dataclass
class WorkerConfig:
    artifact: str  # file to open: .onnx, .engine or a checkpoint
    backend: str  # a registered backend name
    videos: list[str]  # timing uses the first one's frames; video passes run them all
    precision: str = "fp32"
    batch: int = 1
    granularity: float | None = None  # a backend with granularity in bench_options (ONNX sub-networks carry theirs)
    granularities: list[float] = field(default_factory=list)  # reference mode: several in one process
    device: str = "auto"  # a backend with device in bench_options (torch)
    threads: int = 0  # intra-op threads (open's option or the record's set_threads); 0 = library default
    mode: str = "measure"
    warmup: int = 5
    min_repeats: int = 20
    min_seconds: float = 1.5
    video_repeats: int = 2
    interval_s: float = 0.05
    gpu_index: int = 0  # CUDA device ordinal of a GPU backend (NVML maps it through CUDA_VISIBLE_DEVICES)
    masks_out: str = ""  # where to save the video's predicted masks (npz), for Dice vs reference
    gt_path: str = ""  # npz with images (N,H,W,3 uint8) and masks (N,H,W bool)
    macs: bool = False  # count multiply-accumulates (needs torch and the checkpoint)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "WorkerConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkerConfigError(f"worker config: not JSON ({exc})") from exc
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise WorkerConfigError(f"worker config: unknown keys {unknown}")
        cfg = cls(**data)
        if cfg.mode not in MODES:
            raise WorkerConfigError(f"worker config: mode must be one of {MODES}, got {cfg.mode!r}")
        if cfg.batch < 1:
            raise WorkerConfigError(f"worker config: batch must be >= 1, got {cfg.batch}")
        return cfg


def _record(name: str):
    from echoseg.backends import registry

    return registry.get(name)  # an unknown name: a SessionError that lists the known ones


def _open(cfg: WorkerConfig):
    """Open through the registry, with the settings the backend's record says bench passes (bench_options)."""
    from echoseg.backends.choose import open_session

    settings = {"threads": cfg.threads or None, "precision": cfg.precision, "granularity": cfg.granularity,
                "device": "cpu" if cfg.mode == "reference" else cfg.device}
    opts = {k: settings[k] for k in _record(cfg.backend).bench_options if settings[k] is not None}
    return open_session(cfg.artifact, backend=cfg.backend, **opts)


def _cuda_ordinal(device: str, default: int) -> int:
    """'cuda:1' -> 1; a provider name or 'cuda' -> ``default``."""
    head = device.split()[0] if device else ""
    if head.startswith("cuda:") and head[5:].isdigit():
        return int(head[5:])
    return default


def _sync_for(sess) -> Any:
    """The record's wait for queued device work (torch on CUDA); None where run() returns host arrays."""
    return _record(sess.info.backend).sync(sess)


def run(cfg: WorkerConfig) -> dict[str, Any]:
    """Measure one configuration; the returned row is JSON-ready (None for n/a)."""
    with ExitStack() as sessions:  # every session opened below is closed on every path, errors included
        return _run(cfg, sessions)


def _run(cfg: WorkerConfig, sessions: ExitStack) -> dict[str, Any]:
    from .sampler import ResourceSampler
    from .timing import measure

    row: dict[str, Any] = {}
    rec = _record(cfg.backend)
    t = time.perf_counter()
    if rec.library:
        importlib.import_module(rec.library)
    row["import_s"] = time.perf_counter() - t
    if rec.set_threads is not None and (cfg.threads or cfg.mode == "reference"):
        # the reference is not timed: one thread avoids OpenMP spin-waits on a busy machine
        rec.set_threads(cfg.threads or 1)
    if cfg.mode == "reference":
        return _reference(cfg, row, sessions)

    sampler = ResourceSampler(interval_s=cfg.interval_s, gpu_index=None).start()
    t = time.perf_counter()
    sess = sessions.enter_context(_open(cfg))
    if sess.info.on_gpu:  # a CPU row never reports the GPU's figures
        sampler.attach_gpu(_cuda_ordinal(str(sess.info.device), cfg.gpu_index))
    row["gpu_device"] = None if sampler.gpu_device is None else str(sampler.gpu_device)
    sync = _sync_for(sess)
    batch = fit_batch(sess, cfg.batch)
    x = timing_batch(cfg.videos[0], batch, sess.info.meta)
    sess.run(x)
    if sync:
        sync()
    row["cold_start_s"] = time.perf_counter() - t
    info = sess.info
    row.update(device=str(info.device), precision=info.precision, granularity=info.meta.granularity,
               arch=info.meta.model.name, width=info.meta.model.width)

    t_warm = sampler.mark()
    if cfg.mode == "measure":
        timing = measure(lambda: sess.run(x), warmup=cfg.warmup, min_repeats=cfg.min_repeats,
                         min_seconds=cfg.min_seconds, sync=sync)
        lat = timing.per_item_ms(batch)
        row.update(latency_ms_p50=lat["p50"], latency_ms_p95=lat["p95"], latency_ms_p99=lat["p99"],
                   latency_ms_mean=lat["mean"], throughput_fps=timing.throughput(batch),
                   repeats=timing.repeats, timed_s=timing.wall_s)
    else:
        for _ in range(cfg.warmup):
            sess.run(x)
        t_warm = sampler.mark()  # table1: resources over the video passes only, as the paper measures
    video_s: list[float] = []
    model_s: list[float] = []
    masks: list[np.ndarray] = []
    for _ in range(max(cfg.video_repeats, 1)):
        masks = []
        for video in cfg.videos:
            stats, m = stream_masks(sess, video, batch)
            video_s.append(stats.wall_s)
            model_s.append(stats.inference_s)
            masks.append(m)
    t_end = sampler.stop()
    all_masks = np.concatenate(masks)
    row.update(video_s=statistics.median(video_s), video_s_mean=statistics.fmean(video_s),
               video_s_min=min(video_s), video_s_max=max(video_s), video_passes=len(video_s),
               video_model_s=statistics.median(model_s), video_model_s_mean=statistics.fmean(model_s),
               video_frames=int(len(all_masks)), videos=len(cfg.videos), video_loop="runtime.stream.stream_video")
    row.update(sampler.stats(t_warm, t_end).to_dict())

    if cfg.masks_out:
        save_masks(cfg.masks_out, all_masks)
    if cfg.gt_path:
        row.update(_ground_truth(sess, cfg.gt_path, batch))
    sess.close()
    if cfg.macs:
        row["macs_per_frame"] = _macs(cfg)
    return row


def _reference(cfg: WorkerConfig, row: dict[str, Any], sessions: ExitStack) -> dict[str, Any]:
    """The PyTorch FP32 CPU reference at each granularity: the video's masks and MACs, no timing.

    ``masks_out`` may hold "{g}", filled in per granularity.
    """
    refs = []
    for g in cfg.granularities or [cfg.granularity]:
        one = replace(cfg, granularity=g)
        sess = sessions.enter_context(_open(one))
        masks = np.concatenate([stream_masks(sess, v, max(cfg.batch, 1))[1] for v in cfg.videos])
        path = cfg.masks_out.format(g=f"{sess.info.meta.granularity:g}") if cfg.masks_out else ""
        if path:
            save_masks(path, masks)
        refs.append({"granularity": sess.info.meta.granularity, "masks": path,
                     "macs_per_frame": _macs(one) if cfg.macs else None})
        row.update(arch=sess.info.meta.model.name, video_frames=int(len(masks)))
        sess.close()
    row["references"] = refs
    return row


def _ground_truth(sess, gt_path: str, batch: int) -> dict[str, Any]:
    from echoseg.train.metrics import summarize

    with np.load(gt_path) as z:
        images, truth = z["images"], z["masks"].astype(bool)
    pred = infer_frames(sess, images, batch)
    if pred.shape != truth.shape:  # labelled frames at another size than this model's output
        import cv2

        h, w = pred.shape[1:]
        truth = np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
                          for m in truth]).astype(bool)
    s = summarize(pred, truth)
    return {"dice_gt": s["dice"], "iou_gt": s["iou"], "pixel_accuracy_gt": s["pixel_accuracy"],
            "gt_frames": s["frames"]}


def _macs(cfg: WorkerConfig) -> int | None:
    if _record(cfg.backend).artifact != "checkpoint":
        return None
    from echoseg.models import count_macs
    from echoseg.models.checkpoint import build_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(cfg.artifact)
    model = build_from_checkpoint(ckpt)
    return int(count_macs(model, 1.0 if cfg.granularity is None else cfg.granularity,
                          (ckpt.input_spec.height, ckpt.input_spec.width)))


def _known_errors() -> tuple[type[BaseException], ...]:
    """What the worker reports as a one-line reason: echoseg's own errors; ImportError, because the worker
    imports the backend's library itself (``library``, timed as import_s) and a missing or broken one (no
    CUDA libraries under tensorrt) reads "<module> is not installed here"; OSError, a video, truth or masks
    file that cannot be read or written. Anything else is a bug: its traceback's last line is the reason."""
    return (EchosegError, ImportError, OSError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m echoseg.bench.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="WorkerConfig as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = WorkerConfig.from_json(args.config)
        row = run(cfg)
    except _known_errors() as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ImportError):
            msg = f"{exc.name or msg} is not installed here ({msg})"
        print(json.dumps({"error": msg}))
        return 2
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
