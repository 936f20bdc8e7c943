"""ONNX -> TensorRT engine with TensorRT's Python API (TensorRT 10 and 11).

:func:`plan_engine` is pure Python: from the TensorRT version and the precision it decides
which ONNX graph to parse, the network flags and the builder flags, so CPU tests can check it.

One build on TensorRT 10 and 11: a *strongly typed* network (``STRONGLY_TYPED`` creation flag;
always on and the flag ignored in TensorRT 11) that takes its precision from the graph, so an
FP16 engine parses ``model.fp16.onnx`` and INT8 the QDQ graph; no precision builder flags (the
FP16 flag on an FP32 graph is deprecated since TensorRT 10.12 and gone in 11).

:func:`build_engine` parses, sets a workspace limit and an optimisation profile over the batch
range, keeps one timing cache per GPU model and TensorRT version (a cache from another GPU is
never applied) and writes the engine atomically. The CUDA device it builds on (CUDA's device 0,
i.e. the first of CUDA_VISIBLE_DEVICES) is what the sidecar records.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echoseg.atomic import write_bytes

from .onnx import INPUT_NAME, ExportError

log = logging.getLogger(__name__)

DEFAULT_PROFILE = (1, 16, 64)
DEFAULT_WORKSPACE_MB = 1024


class TensorRTUnavailable(ExportError):
    """TensorRT or a CUDA GPU is missing here; the message says which and how to get it."""


class EngineBuildError(ExportError):
    """TensorRT could not parse or build the network; the message carries the parser's errors."""


@dataclass(frozen=True)
class EnginePlan:
    """What to build: which graph, which flags, which profile."""

    tensorrt_major: int
    precision: str  # fp16 | int8 | fp32
    onnx_path: Path
    strongly_typed: bool
    builder_flags: tuple[str, ...]  # names in trt.BuilderFlag
    profile: tuple[int, int, int]
    workspace_bytes: int
    input_name: str = INPUT_NAME
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"tensorrt_major": self.tensorrt_major, "precision": self.precision,
                "onnx_file": self.onnx_path.name, "strongly_typed": self.strongly_typed,
                "builder_flags": list(self.builder_flags), "profile": list(self.profile),
                "workspace_bytes": self.workspace_bytes, "notes": list(self.notes)}


def parse_profile(text: str | tuple[int, ...] | list[int]) -> tuple[int, int, int]:
    """'MIN,OPT,MAX' (or one number for a fixed batch) -> (min, opt, max), checked."""
    if isinstance(text, str):
        try:
            parts = [int(p) for p in text.replace(" ", "").split(",") if p]
        except ValueError:
            raise ExportError(f"batch profile {text!r} is not MIN,OPT,MAX integers, e.g. 1,16,64") from None
    else:
        parts = [int(p) for p in text]
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise ExportError(f"batch profile needs MIN,OPT,MAX (three integers), got {parts}")
    lo, opt, hi = parts
    if not 1 <= lo <= opt <= hi:
        raise ExportError(f"batch profile must satisfy 1 <= MIN <= OPT <= MAX, got {lo},{opt},{hi}")
    return lo, opt, hi


def tensorrt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise ExportError(f"cannot read a TensorRT version from {version!r}") from None


def plan_engine(tensorrt_version: str, precision: str, graphs: dict[str, Path],
                profile: tuple[int, int, int] = DEFAULT_PROFILE,
                workspace_mb: int = DEFAULT_WORKSPACE_MB) -> EnginePlan:
    """Decide graph and flags for ``precision`` on this TensorRT version.

    ``graphs`` maps 'fp32', 'fp16', 'int8' to the ONNX files that exist.
    """
    major = tensorrt_major(tensorrt_version)
    profile = parse_profile(profile)
    if precision not in ("fp32", "fp16", "int8"):
        raise ExportError(f"unknown engine precision {precision!r}; choose fp16, int8 or fp32")
    if major < 10:
        raise ExportError(f"TensorRT {tensorrt_version} is too old; install TensorRT 10 or 11 (pip install tensorrt)")
    source = precision  # strongly typed: the graph's own types are the engine's precision
    if source not in graphs or not Path(graphs[source]).is_file():
        need = {"fp32": "model.onnx", "fp16": "model.fp16.onnx (export with --fp16)",
                "int8": "model.int8.onnx (export with --int8)"}[source]
        raise ExportError(f"a {precision} engine on TensorRT {major} is built from {need}, which is missing")
    if precision == "int8":
        _refuse_cpu_form(Path(graphs[source]))
    return EnginePlan(tensorrt_major=major, precision=precision, onnx_path=Path(graphs[source]),
                      strongly_typed=True, builder_flags=(), profile=profile,
                      workspace_bytes=int(workspace_mb) * (1 << 20),
                      notes=("strongly typed network: precision comes from the graph's types",))


def _refuse_cpu_form(path: Path) -> None:
    """TensorRT's explicit quantization takes signed, zero-point-0 Q/DQ only: refuse the cpu form."""
    import onnx

    from .int8 import form_of

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others
        raise ExportError(f"{path}: not a readable ONNX graph ({str(exc).splitlines()[0][:160]}); "
                          "re-export it with echo-export build --int8 --int8-form tensorrt") from exc
    if form_of(proto) == "cpu":
        raise ExportError(f"{path} is the cpu INT8 form (uint8 activations with zero points), which TensorRT's "
                          "explicit quantization does not take; re-export with --int8 --int8-form tensorrt")


def tensorrt_status() -> tuple[str, str]:
    """(TensorRT version, '') when TensorRT and a GPU can build engines here, else ('', why not)."""
    try:
        import tensorrt as trt
    except ImportError:
        return "", "TensorRT is not installed (pip install tensorrt, on a machine with an NVIDIA GPU)"
    except Exception as exc:  # a broken install (missing libnvinfer) raises OSError and others
        return "", f"TensorRT does not load ({str(exc).splitlines()[0][:160]})"
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:  # no driver / no device
        return "", f"TensorRT {trt.__version__} found no usable CUDA GPU ({str(exc).splitlines()[0][:160]})"
    if builder is None:
        return "", f"TensorRT {trt.__version__} found no usable CUDA GPU"
    return str(trt.__version__), ""


def gpu_identity(device: int = 0) -> dict[str, str]:
    """Name, compute capability and CUDA driver version of CUDA device ``device`` (what TensorRT builds on).

    Read from CUDA itself (pycuda, else torch), so it is the device CUDA_VISIBLE_DEVICES maps to
    ordinal ``device``, not NVML's index 0. Raises TensorRTUnavailable when neither can say.
    """
    try:
        from echoseg.backends.tensorrt import device_identity

        return device_identity(device)
    except Exception as exc:  # no pycuda, or its driver call failed: try torch below
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device)
            return {"gpu_name": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}",
                    "cuda_version": str(torch.version.cuda or "")}
    except Exception:  # no torch or no CUDA build
        pass
    raise TensorRTUnavailable(f"cannot identify CUDA device {device} for the engine sidecar ({why}); "
                              "install pycuda (pip install 'echoseg[gpu]')")


def timing_cache_for(base: str | os.PathLike, gpu: dict[str, str], tensorrt_version: str) -> Path:
    """timing.cache -> timing.<gpu>.sm<cc>.trt<major.minor>.cache: one cache per GPU model and TensorRT."""
    b = Path(base)
    slug = "".join(c if c.isalnum() else "-" for c in gpu.get("gpu_name", "gpu").lower()).strip("-") or "gpu"
    cc = gpu.get("compute_capability", "").replace(".", "")
    ver = ".".join(str(tensorrt_version).split(".")[:2])
    return b.with_name(f"{b.stem}.{slug}.sm{cc}.trt{ver}{b.suffix or '.cache'}")


def _parser_errors(parser) -> str:
    msgs = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        try:
            msgs.append(f"{err.desc()} (node {err.node()})")
        except Exception:  # older bindings: the error's str() is the message
            msgs.append(str(err))
    return "; ".join(msgs) or "no message"


def build_engine(plan: EnginePlan, out: str | os.PathLike, timing_cache: str | os.PathLike | None = None,
                 device: int = 0) -> dict[str, Any]:
    """Build and write the engine of ``plan``; returns versions, the CUDA device, build seconds, cache use."""
    import tensorrt as trt

    out = Path(out)
    gpu = gpu_identity(device)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):
        raise EngineBuildError(f"TensorRT could not parse {plan.onnx_path.name}: {_parser_errors(parser)}")
    if network.num_inputs != 1:
        raise EngineBuildError(f"{plan.onnx_path.name}: expected one input, TensorRT found {network.num_inputs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    inp = network.get_input(0)
    c, h, w = tuple(inp.shape)[1:]
    lo, opt, hi = plan.profile
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (lo, c, h, w), (opt, c, h, w), (hi, c, h, w))
    config.add_optimization_profile(profile)
    cache_path = timing_cache_for(timing_cache, gpu, trt.__version__) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s does not match this GPU/TensorRT; building without it", cache_path)
        cache_bytes = b""
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {out.name} from {plan.onnx_path.name}; "
                               "see the TensorRT log above (a larger --workspace-mb may help)")
    write_bytes(out, memoryview(serialized))
    if cache_path:
        write_bytes(cache_path, memoryview(config.get_timing_cache().serialize()))
    log.info("built %s in %.1f s (TensorRT %s, %s)", out, seconds, trt.__version__, gpu["gpu_name"])
    return {"tensorrt_version": str(trt.__version__), "build_seconds": round(seconds, 3), **gpu,
            "timing_cache": str(cache_path) if cache_path else "", "timing_cache_reused": bool(cache_bytes)}
