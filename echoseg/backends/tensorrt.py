"""TensorRT backend: a serialized engine run with pycuda (TensorRT 10/11 tensor-name API).

Page-locked host buffers and device buffers sized for the profile's largest batch, async
copies and execution on one CUDA stream, the input shape set per batch inside the profile;
a batch smaller than the profile's minimum is padded, a larger one split, an empty one refused
(all three by :class:`echoseg.backends.session.BaseSession`, from ``info``'s batch range).
The engine's sidecar (read through :mod:`echoseg.artifacts`) gives the input spec and is checked
against the CUDA device first, so a stale engine is refused (or passed over by ``auto``) with
the reason and the rebuild command instead of crashing. ``close()`` frees every buffer, the
stream and the context it pushed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from echoseg.artifacts import ArtifactError, read_sidecar

from .registry import Backend, importable as _importable, register
from .session import BaseSession, SessionError, SessionInfo

log = logging.getLogger(__name__)


def tensorrt_problem(device: int = 0) -> str | None:
    """None when TensorRT, pycuda and CUDA device ``device`` are usable here; otherwise what is missing."""
    for mod in ("tensorrt", "pycuda"):
        if not _importable(mod):
            return f"{mod} is not installed (pip install 'echoseg[gpu]' on a machine with an NVIDIA GPU)"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() <= device:
            return "no CUDA GPU is visible" if cuda.Device.count() < 1 else f"no CUDA device {device}"
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError types
        return f"CUDA is not usable ({str(exc).splitlines()[0][:120]})"
    return None


def device_identity(device: int = 0) -> dict[str, str]:
    """Name and compute capability of CUDA device ``device`` (the one TensorRT builds and runs on)."""
    import pycuda.driver as cuda

    cuda.init()
    dev = cuda.Device(int(device))
    major, minor = dev.compute_capability()
    version = cuda.get_driver_version() if hasattr(cuda, "get_driver_version") else 0
    return {"gpu_name": str(dev.name()), "compute_capability": f"{major}.{minor}",
            "cuda_version": f"{version // 1000}.{(version % 1000) // 10}" if version else ""}


#: (engine, reason) pairs already said: a stale engine is warned about once per process.
_WARNED: set[tuple[str, str]] = set()


def engine_problem(path: str | Path, device: int = 0, warn: bool = False) -> str | None:
    """None when engine ``path`` fits this TensorRT and CUDA device; else why not and how to rebuild.
    ``warn``: an engine built for another TensorRT release or GPU is also said once per process."""
    problem = tensorrt_problem(device)
    if problem:
        return problem
    try:
        side = read_sidecar(path)
    except ArtifactError as exc:
        return str(exc)
    mismatch = _mismatch(side, path, device)
    if warn and mismatch and (str(path), mismatch) not in _WARNED:
        _WARNED.add((str(path), mismatch))
        log.warning("TensorRT engine not used (auto falls back to the next backend): %s", mismatch)
    return mismatch


def _mismatch(side, path: str | Path, device: int = 0) -> str | None:
    """The sidecar against this TensorRT (exact x.y.z release) and CUDA device (compute capability)."""
    import tensorrt as trt

    dev = device_identity(device)
    return side.compat_problem(str(trt.__version__), dev["compute_capability"], dev["gpu_name"], engine_path=str(path))


class TrtSession(BaseSession):
    """One engine, one execution context, one stream, on CUDA device ``device``.

    Pieces: the profile's min..max batch (``info.min_batch``..``info.max_batch``)."""

    takes = "engine"

    def __init__(self, path: str | Path, device: int = 0) -> None:
        try:
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as exc:
            raise SessionError(f"{path}: the TensorRT backend needs tensorrt and pycuda ({exc}); "
                               "install the gpu extra or run the .onnx with onnxruntime") from exc
        self.path = Path(path)
        try:
            side = read_sidecar(self.path)
        except ArtifactError as exc:
            raise SessionError(str(exc)) from exc
        cuda.init()
        dev = cuda.Device(int(device))
        cc = "{}.{}".format(*dev.compute_capability())
        problem = side.compat_problem(str(trt.__version__), cc, dev.name(), engine_path=str(self.path))
        if problem:
            raise SessionError(problem)
        self._cuda = cuda
        self._ctx = dev.retain_primary_context()
        self._ctx.push()
        try:
            self._setup(trt)
        except BaseException:
            self._release()
            ctx, self._ctx = self._ctx, None
            ctx.pop()
            ctx.detach()
            raise
        self._ctx.pop()
        self.info = SessionInfo(
            backend="tensorrt", precision=side.precision, device=f"cuda:{device} ({dev.name()})",
            min_batch=self._min_batch, max_batch=self._max_batch, meta=side.meta, path=str(self.path),
            extra={"tensorrt": str(trt.__version__), "compute_capability": cc, "profile": list(side.profile)},
        )

    def _setup(self, trt) -> None:
        cuda = self._cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise SessionError(f"{self.path}: TensorRT could not deserialize it (corrupt, or built by another "
                               "version); rebuild it with echo-export")
        self._engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise SessionError(f"{self.path}: expected one input and one output tensor, found {inputs} and {outputs}")
        self._in, self._out = inputs[0], outputs[0]
        lo, _, hi = engine.get_tensor_profile_shape(self._in, 0)
        self._min_batch, self._max_batch = int(lo[0]), int(hi[0])
        self._chw = tuple(int(d) for d in hi[1:])
        self._in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._in)))
        self._out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._out)))
        self._context = engine.create_execution_context()
        self._stream = cuda.Stream()
        # Output size at the largest batch: ask the context with that shape set.
        self._context.set_input_shape(self._in, (self._max_batch, *self._chw))
        out_shape = tuple(int(d) for d in self._context.get_tensor_shape(self._out))
        self._h_in = cuda.pagelocked_empty((self._max_batch, *self._chw), self._in_dtype)
        self._h_out = cuda.pagelocked_empty(out_shape, self._out_dtype)
        self._d_in = cuda.mem_alloc(self._h_in.nbytes)
        self._d_out = cuda.mem_alloc(self._h_out.nbytes)
        self._context.set_tensor_address(self._in, int(self._d_in))
        self._context.set_tensor_address(self._out, int(self._d_out))
        log.info("tensorrt engine %s: batch %d..%d, input %s %s", self.path.name, self._min_batch,
                 self._max_batch, self._chw, self._in_dtype)

    def _run_piece(self, x: np.ndarray) -> np.ndarray:
        """One call of min_batch..max_batch frames (BaseSession splits and pads)."""
        cuda = self._cuda
        m = len(x)
        if tuple(x.shape[1:]) != self._chw:
            raise SessionError(f"{self.path}: input of shape {tuple(x.shape[1:])} given, the engine takes {self._chw}; "
                               "rebuild the engine from its export with echo-export")
        self._h_in[:m] = x
        self._ctx.push()
        try:
            if not self._context.set_input_shape(self._in, (m, *self._chw)):
                raise SessionError(f"{self.path}: batch {m} is outside the engine's profile "
                                   f"{self._min_batch}..{self._max_batch}")
            out_shape = tuple(int(d) for d in self._context.get_tensor_shape(self._out))
            count = int(np.prod(out_shape))
            cuda.memcpy_htod_async(self._d_in, self._h_in[:m], self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise SessionError(f"{self.path}: TensorRT execution failed (see the TensorRT log above)")
            host_out = self._h_out.reshape(-1)[:count]
            cuda.memcpy_dtoh_async(host_out, self._d_out, self._stream)
            self._stream.synchronize()
        finally:
            self._ctx.pop()
        return host_out.reshape(out_shape).astype(np.float32, copy=True)

    def _close(self) -> None:
        if getattr(self, "_ctx", None) is None:
            return
        self._ctx.push()
        try:
            self._release()
        finally:
            ctx, self._ctx = self._ctx, None
            ctx.pop()
            ctx.detach()

    def _release(self) -> None:
        """Free device and page-locked buffers, then the stream, context, engine and runtime (in that order)."""
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.synchronize()
        for name in ("_d_in", "_d_out"):
            buf = getattr(self, name, None)
            if buf is not None:
                buf.free()
            setattr(self, name, None)
        for name in ("_h_in", "_h_out"):
            host = getattr(self, name, None)
            base = getattr(host, "base", None)
            if hasattr(base, "free"):
                base.free()  # pycuda's HostAllocation: unpin now, not at garbage collection
            setattr(self, name, None)
        for name in ("_stream", "_context", "_engine", "_runtime"):
            setattr(self, name, None)




def _problem(path: Path) -> str | None:
    """The registry's check: ``auto`` runs the ONNX graph beside a stale engine, saying so once."""
    return engine_problem(path, warn=True)


BACKEND = register(Backend(name="tensorrt", artifact="engine", rank=10, open=TrtSession, problem=_problem,
                           options=("device",), gpu=True,
                           description="TensorRT engine on a CUDA GPU (tensorrt + pycuda)",
                           label="TensorRT", bench_precisions=("fp32", "fp16", "int8"), plan_check="file",
                           none_found="no TensorRT engine in {dir}; build one on the GPU box with echo-export "
                                      "(engine option)", library="tensorrt"))
