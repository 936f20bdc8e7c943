"""Contract test double for ``pycuda.driver`` (init, Device, contexts, Stream, page-locked and device memory).

Device memory is a dict of numpy byte buffers keyed by fake addresses, so the TensorRT double can
read and write what the copies put there; freed addresses and unbalanced context pushes fail
like the real driver would. State lives on the shared ``Doubles`` record of trt_doubles.py.
"""

from __future__ import annotations

import itertools
import types
from typing import Any

import numpy as np


def _dims(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def make_pycuda(name: str, cc: tuple[int, int], d: Any) -> tuple[types.ModuleType, types.ModuleType]:
    pkg = types.ModuleType("pycuda")
    drv = types.ModuleType("pycuda.driver")
    pkg.driver = drv
    addresses = itertools.count(0x7F0000000000, 0x100000)

    class HostAllocation(bytearray):
        def free(self) -> None:
            d.host_live.discard(id(self))

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self.address = next(addresses)
            d.memory[self.address] = np.zeros(int(nbytes), np.uint8)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            d.memory.pop(self.address, None)

    class Context:
        def push(self) -> None:
            d.context_stack.append(self)

        def pop(self) -> None:
            if not d.context_stack:
                raise RuntimeError("fake CUDA: context stack is empty")
            d.context_stack.pop()

        def detach(self) -> None:
            d.detached += 1

    class Device:
        def __init__(self, ordinal: int) -> None:
            if ordinal >= 1:
                raise RuntimeError(f"invalid device ordinal {ordinal}")

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return name

        def compute_capability(self) -> tuple[int, int]:
            return cc

        def retain_primary_context(self) -> Context:
            return Context()

    class Stream:
        _next = itertools.count(1)

        def __init__(self) -> None:
            self.handle = next(Stream._next)

        def synchronize(self) -> None:
            d.calls.append(("synchronize", self.handle))

    def init() -> None:
        d.calls.append(("cuda.init", None))

    def get_driver_version() -> int:
        return 12080

    def pagelocked_empty(shape, dtype):
        dt = np.dtype(dtype)
        alloc = HostAllocation(int(np.prod(shape)) * dt.itemsize)
        d.host_live.add(id(alloc))
        return np.ndarray(_dims(shape), dt, buffer=alloc)

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        return DeviceAllocation(nbytes)

    def _device(addr) -> np.ndarray:
        if int(addr) not in d.memory:
            raise RuntimeError(f"fake CUDA: address {int(addr):#x} is not allocated (freed?)")
        return d.memory[int(addr)]

    def memcpy_htod_async(dest, src, stream=None) -> None:
        buf = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        _device(dest)[: buf.size] = buf
        d.calls.append(("memcpy_htod_async", buf.size))

    def memcpy_dtoh_async(dest, src, stream=None) -> None:
        out = dest.view(np.uint8).reshape(-1)
        out[:] = _device(src)[: out.size]
        d.calls.append(("memcpy_dtoh_async", out.size))

    for obj in (Device, Stream, init, get_driver_version, pagelocked_empty, mem_alloc, memcpy_htod_async,
                memcpy_dtoh_async):
        setattr(drv, obj.__name__, obj)
    return pkg, drv
