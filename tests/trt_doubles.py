"""Contract test doubles for ``tensorrt`` (10.x / 11.x Python API) and ``pycuda.driver``.

Written from NVIDIA's documented Python API (Builder, NetworkDefinitionCreationFlag, OnnxParser,
IBuilderConfig, IOptimizationProfile, ITimingCache, Runtime, ICudaEngine, IExecutionContext) and
pycuda's driver API, keeping only what echoseg calls. They behave like the real thing where it
matters to us and fail the way it fails:

- a dynamic-batch input with no optimisation profile does not build (``None``), nor does a
  profile whose shapes are out of order or do not match the input's fixed dims;
- TensorRT 11 has no ``BuilderFlag.FP16``/``INT8`` (the attribute is missing);
- precision flags on a strongly typed network are an error;
- ``set_timing_cache(..., ignore_mismatch=False)`` refuses a cache from another GPU or version;
- an engine deserialises only on the TensorRT version and compute capability that built it;
- ``set_input_shape`` outside the profile returns False; execution reads and writes fake device
  memory, so copies, addresses and shapes must all be right for the numbers to come back.

The "engine" computes logits = mean over input channels, in the engine's I/O dtype.
The pycuda double is in pycuda_double.py. Install both with :func:`install` (monkeypatches
``sys.modules``); every call is recorded in ``calls``.
"""

from __future__ import annotations

import enum
import json
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycuda_double import make_pycuda


@dataclass
class Doubles:
    trt: types.ModuleType
    cuda: types.ModuleType
    calls: list[tuple[str, Any]] = field(default_factory=list)
    memory: dict[int, np.ndarray] = field(default_factory=dict)  # device address -> bytes
    host_live: set[int] = field(default_factory=set)
    context_stack: list[Any] = field(default_factory=list)
    detached: int = 0

    def called(self, name: str) -> list[Any]:
        return [args for n, args in self.calls if n == name]


def _dims(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def make_tensorrt(version: str, cc: tuple[int, int], d: Doubles) -> types.ModuleType:
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity: int = 2) -> None:
            self.min_severity = min_severity

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        # TensorRT 10: EXPLICIT_BATCH (ignored) and STRONGLY_TYPED; 11: STRONGLY_TYPED kept, ignored
        STRONGLY_TYPED = 1 if major < 11 else 0

    flag_names = ["TF32", "REFIT", "STRICT_TYPES" if major < 10 else "DIRECT_IO"]
    if major < 11:
        flag_names = ["FP16", "INT8", *flag_names]
    BuilderFlag = enum.IntEnum("BuilderFlag", flag_names)

    class MemoryPoolType(enum.IntEnum):
        WORKSPACE = 0

    class TensorIOMode(enum.IntEnum):
        NONE, INPUT, OUTPUT = 0, 1, 2

    class DataType(enum.IntEnum):
        FLOAT, HALF, INT8 = 0, 1, 2

    np_of = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8}

    def nptype(dt: DataType):
        return np_of[DataType(dt)]

    class ITensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[ITensor] = []
            self.outputs: list[ITensor] = []

        def get_flag(self, flag) -> bool:
            return bool(self.flags & (1 << int(flag))) or major >= 11 and flag == NetworkDefinitionCreationFlag.STRONGLY_TYPED

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

        def get_input(self, i: int) -> ITensor:
            return self.inputs[i]

        def get_output(self, i: int) -> ITensor:
            return self.outputs[i]

    class ParserError:
        def __init__(self, text: str) -> None:
            self._text = text

        def desc(self) -> str:
            return self._text

        def node(self) -> int:
            return -1

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
            self.network, self.errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> ParserError:
            return self.errors[i]

        def parse_from_file(self, path: str) -> bool:
            import onnx

            d.calls.append(("parse_from_file", path))
            try:
                proto = onnx.load(path, load_external_data=False)
            except Exception as exc:  # noqa: BLE001 - like the real parser: report, return False
                self.errors.append(ParserError(f"cannot read {path}: {exc}"))
                return False
            # NVIDIA, "Explicit Quantization": symmetric only; the parser asserts "zeroPt must be all zeros"
            from onnx import numpy_helper

            inits = {i.name: i for i in proto.graph.initializer}
            for i, node in enumerate(proto.graph.node):
                if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
                    zp = inits.get(node.input[2])
                    if zp is not None and (zp.data_type == 2 or numpy_helper.to_array(zp).any()):  # 2: UINT8
                        self.errors.append(ParserError(f"node {i} ({node.op_type}): TRT only supports symmetric "
                                                       "quantization - zeroPt must be all zeros"))
                        return False
            for info, into in ((proto.graph.input, self.network.inputs), (proto.graph.output, self.network.outputs)):
                for vi in info:
                    t = vi.type.tensor_type
                    shape = tuple(dd.dim_value if dd.HasField("dim_value") else -1 for dd in t.shape.dim)
                    into.append(ITensor(vi.name, shape, DataType.HALF if t.elem_type == 10 else DataType.FLOAT))
            return True

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, input: str, min, opt, max) -> None:  # noqa: A002 - the documented names
            d.calls.append(("set_shape", (input, _dims(min), _dims(opt), _dims(max))))
            self.shapes[input] = (_dims(min), _dims(opt), _dims(max))

        def get_shape(self, input: str):
            return self.shapes.get(input, ())

    class ITimingCache:
        def __init__(self, key: dict[str, str], entries: int) -> None:
            self.key, self.entries = key, entries

        def serialize(self) -> bytes:
            return json.dumps({"key": self.key, "entries": self.entries}).encode()

    device_key = {"cc": f"{cc[0]}.{cc[1]}", "trt": version}

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags: set = set()
            self.pools: dict = {}
            self.profiles: list[IOptimizationProfile] = []
            self.cache: ITimingCache | None = None

        def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
            d.calls.append(("set_memory_pool_limit", (MemoryPoolType(pool), int(pool_size))))
            self.pools[MemoryPoolType(pool)] = int(pool_size)

        def set_flag(self, flag) -> None:
            d.calls.append(("set_flag", flag))
            self.flags.add(flag)

        def get_flag(self, flag) -> bool:
            return flag in self.flags

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        @property
        def num_optimization_profiles(self) -> int:
            return len(self.profiles)

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            raw = bytes(serialized_timing_cache)
            data = json.loads(raw) if raw else {"key": device_key, "entries": 0}
            return ITimingCache(data["key"], data["entries"])

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            d.calls.append(("set_timing_cache", (cache.key, bool(ignore_mismatch))))
            if cache.key != device_key and not ignore_mismatch:
                return False
            self.cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self.cache

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            d.calls.append(("create_network", int(flags)))
            return INetworkDefinition(int(flags))

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig):
            d.calls.append(("build_serialized_network", None))
            typed = network.get_flag(NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            if typed and config.flags:  # documented: precision flags are not allowed on strongly typed networks
                return None
            profile = config.profiles[0] if config.profiles else None
            for t in network.inputs:
                if -1 in t.shape:
                    if profile is None or t.name not in profile.shapes:
                        return None  # "Network has dynamic or shape inputs, but no optimization profile"
                    lo, opt, hi = profile.shapes[t.name]
                    fixed_ok = all(a == b for a, b in zip(t.shape, lo) if a != -1)
                    ordered = all(x <= y <= z for x, y, z in zip(lo, opt, hi))
                    if not (fixed_ok and ordered and len(lo) == len(t.shape)):
                        return None
            if config.cache is not None:
                config.cache.entries += 1
            record = {"format": "fake-trt-engine", "trt": version, "cc": device_key["cc"], "strongly_typed": typed,
                      "inputs": [[t.name, list(t.shape), int(t.dtype)] for t in network.inputs],
                      "outputs": [[t.name, list(t.shape), int(t.dtype)] for t in network.outputs],
                      "profile": {k: [list(s) for s in v] for k, v in (profile.shapes if profile else {}).items()}}
            return json.dumps(record).encode()

    class IExecutionContext:
        def __init__(self, engine: "ICudaEngine") -> None:
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name: str, shape) -> bool:
            lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
            shape = _dims(shape)
            d.calls.append(("set_input_shape", (name, shape)))
            if len(shape) != len(lo) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name in self.shapes:
                return self.shapes[name]
            (inp,) = [n for n in self.engine.names if self.engine.get_tensor_mode(n) == TensorIOMode.INPUT]
            n = self.shapes.get(inp, (-1,))[0]
            return (n, *self.engine.shape_of[name][1:])

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self.addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            d.calls.append(("execute_async_v3", int(stream_handle)))
            if not d.context_stack:
                raise RuntimeError("fake CUDA: no current context (push one before executing)")
            (inp,) = [n for n in self.engine.names if self.engine.get_tensor_mode(n) == TensorIOMode.INPUT]
            (out,) = [n for n in self.engine.names if self.engine.get_tensor_mode(n) == TensorIOMode.OUTPUT]
            if inp not in self.shapes or inp not in self.addresses or out not in self.addresses:
                return False
            shape = self.shapes[inp]
            x_dt, y_dt = nptype(self.engine.get_tensor_dtype(inp)), nptype(self.engine.get_tensor_dtype(out))
            count = int(np.prod(shape))
            x = d.memory[self.addresses[inp]].view(x_dt)[:count].reshape(shape)
            y = x.astype(np.float32).mean(axis=1, keepdims=True).astype(y_dt)
            d.memory[self.addresses[out]].view(y_dt)[: y.size] = y.reshape(-1)
            return True

    class ICudaEngine:
        def __init__(self, record: dict[str, Any]) -> None:
            self.record = record
            tensors = [(n, s, dt, TensorIOMode.INPUT) for n, s, dt in record["inputs"]] + \
                      [(n, s, dt, TensorIOMode.OUTPUT) for n, s, dt in record["outputs"]]
            self.names = [t[0] for t in tensors]
            self.shape_of = {t[0]: tuple(t[1]) for t in tensors}
            self.dtype_of = {t[0]: DataType(t[2]) for t in tensors}
            self.mode_of = {t[0]: t[3] for t in tensors}

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return self.mode_of[name]

        def get_tensor_dtype(self, name: str) -> DataType:
            return self.dtype_of[name]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.shape_of[name]

        def get_tensor_profile_shape(self, name: str, profile_index: int):
            return [tuple(s) for s in self.record["profile"][name]]

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
            d.calls.append(("deserialize_cuda_engine", len(serialized_engine)))
            try:
                record = json.loads(bytes(serialized_engine))
            except ValueError:
                return None
            if record.get("format") != "fake-trt-engine" or record["trt"] != version or record["cc"] != device_key["cc"]:
                return None
            return ICudaEngine(record)

    for obj in (Logger, NetworkDefinitionCreationFlag, BuilderFlag, MemoryPoolType, TensorIOMode, DataType, nptype,
                OnnxParser, Builder, Runtime):
        setattr(trt, obj.__name__, obj)
    return trt


def install(monkeypatch, version: str = "10.13.0", gpu: str = "Tesla T4", cc: tuple[int, int] = (7, 5)) -> Doubles:
    """Put fake ``tensorrt``, ``pycuda`` and ``pycuda.driver`` into sys.modules for one test."""
    import importlib.machinery

    d = Doubles(trt=types.ModuleType("tensorrt"), cuda=types.ModuleType("pycuda.driver"))
    d.trt = make_tensorrt(version, cc, d)
    pkg, d.cuda = make_pycuda(gpu, cc, d)  # pycuda_double.py
    for mod_name, mod in (("tensorrt", d.trt), ("pycuda", pkg), ("pycuda.driver", d.cuda)):
        mod.__spec__ = importlib.machinery.ModuleSpec(mod_name, loader=None)
        monkeypatch.setitem(sys.modules, mod_name, mod)
    return d
