"""How many decoded frames the stream may hold at once, sized by bytes rather than by count.

The stream holds full-resolution frames in four places: the reader's queue, the batch being
gathered, the batch waiting for the writer and the batch the writer is working on (the overlay
and the masks at the original size need the original frame). Counted in frames, a batch of 8
and a queue of 8 are 2 MB for a 112x112 clip but 800 MB for a 3840x2160 one (a 30-frame 4K clip
peaked at 1.2 GB). Here the frames in flight are held to a byte budget: a large frame runs in
smaller batches (the model sees model-size inputs, so a batch of 1 costs it little beside
decoding and drawing a 4K frame), a small one keeps the batch asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: Bytes of decoded full-resolution frames the stream may hold at once (ECHOSEG_FRAME_BUFFER_MB overrides).
DEFAULT_BUDGET_MB = 96.0


def budget_bytes() -> int:
    """The frame budget in bytes: ECHOSEG_FRAME_BUFFER_MB if set to a positive number, else the default."""
    try:
        mb = float(os.environ.get("ECHOSEG_FRAME_BUFFER_MB", "") or DEFAULT_BUDGET_MB)
    except ValueError:
        mb = DEFAULT_BUDGET_MB
    return int((mb if mb > 0 else DEFAULT_BUDGET_MB) * 2**20)


@dataclass(frozen=True)
class BufferPlan:
    batch: int  # frames per Session.run call (a session with a fixed batch pads the rest)
    queue_frames: int  # the reader's queue, in frames
    frame_bytes: int

    @property
    def frames_in_flight(self) -> int:
        """At most: the reader's queue, the batch being gathered, one waiting for the writer, one in the writer."""
        return self.queue_frames + 3 * self.batch


def plan_buffers(width: int, height: int, batch: int, queue_batches: int = 1, budget: int | None = None,
                 channels: int = 3) -> BufferPlan:
    """The batch and reader queue for frames of ``width`` x ``height``: as asked while the frames in
    flight fit ``budget`` bytes, else smaller (never below one frame per call and a queue of 2)."""
    budget = budget_bytes() if budget is None else int(budget)
    frame_bytes = max(1, int(width) * int(height) * int(channels))
    asked = BufferPlan(batch, max(2, queue_batches * batch), frame_bytes)
    if width <= 0 or height <= 0 or asked.frames_in_flight * frame_bytes <= budget:
        return asked  # unknown size (the container does not say) or small frames: as asked
    fit = max(1, budget // frame_bytes)  # frames the budget holds
    b = max(1, min(batch, (fit - 2) // 3))
    return BufferPlan(b, 2, frame_bytes)


#: A frame at least this large switches the C heap to returning big blocks to the system (see below).
LARGE_FRAME_BYTES = 4 * 2**20
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_tamed = False


def return_large_blocks() -> bool:
    """Have glibc serve blocks of 1 MB and more by mmap and give them back when freed (once per process).

    By default glibc raises its mmap threshold to the size of the last large block freed (up to
    32 MB), after which every 25 MB 4K frame, float mask and overlay comes from the per-thread heaps
    of the reader, main and writer threads and stays there: 150 MB of a 4K clip's peak was that,
    not live data. A fixed threshold stops the raising; a frame's page faults cost ~1 ms beside the
    ~1 s it takes to decode, measure and draw it. False where the C library is not glibc."""
    global _tamed
    if _tamed:
        return True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _tamed = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20))
    except (OSError, AttributeError):
        _tamed = False
    return _tamed
