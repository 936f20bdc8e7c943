"""Live sources: each beat's EF as the beat completes, and a Ctrl-C that ends the stream cleanly.

A capture device or stream has no end of its own. echo-run reads it until Ctrl-C (or SIGTERM)
or ``--seconds``; then the frames already read are finished and the outputs are written whole,
as for a file. While it runs, :class:`BeatWatcher` re-reads the recent area curve every half
second and reports the beats that completed since (a beat is complete once its ES is found,
which needs the curve to have turned back after it). The final read-out (summary.json) is the
analysis of the whole curve, as for a file; the beats printed live come from a window of the
last WINDOW_S seconds and can differ from it slightly.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from .cardiac import FrameCurves, analyse, min_beat_frames

log = logging.getLogger(__name__)

#: Seconds of the area curve each live analysis looks at.
WINDOW_S = 12.0
#: Seconds between two live analyses.
EVERY_S = 0.5

#: Called with one completed beat: its fields (Beat.to_dict) with ed_frame/es_frame from the stream's start.
OnBeat = Callable[[dict[str, Any]], None]


class BeatWatcher:
    """Called per frame with (index, cardiac.FrameMeasure); calls ``on_beat`` once per completed beat."""

    def __init__(self, fps: float, on_beat: OnBeat) -> None:
        self.fps = fps if fps > 0 else 50.0
        self.on_beat = on_beat
        self._measures: list = []
        self._every = max(1, int(round(EVERY_S * self.fps)))
        self._window = max(8, int(round(WINDOW_S * self.fps)))
        self._last_ed = -10 ** 9
        self._spacing = min_beat_frames(self.fps)
        self._offset = 0  # frames dropped from the front of the kept curve
        self.reported: list[dict[str, Any]] = []

    def __call__(self, index: int, measure) -> None:
        self._measures.append(measure)
        n = len(self._measures)
        if n % self._every == 0:
            self._check(n)
        if len(self._measures) > 2 * self._window:  # keep memory flat: only the window is needed
            drop = len(self._measures) - self._window
            self._offset += drop
            del self._measures[:drop]

    def finish(self) -> None:
        """At the end of the stream: report the beats the last frames completed."""
        if self._measures:
            self._check(len(self._measures))

    def _check(self, n: int) -> None:
        start = max(0, len(self._measures) - self._window)
        base = self._offset + start
        res = analyse(FrameCurves.from_measures(self._measures[start:]), fps=self.fps)
        for beat in res.beats:
            ed = base + beat.ed_frame
            if beat.es_frame < beat.ed_frame or ed <= self._last_ed + self._spacing // 2:
                continue
            d = beat.to_dict()
            d["ed_frame"], d["es_frame"] = ed, base + beat.es_frame
            self._last_ed = ed
            self.reported.append(d)
            self.on_beat(d)


@contextmanager
def stop_on_interrupt(stop: threading.Event) -> Iterator[None]:
    """Within this block the first Ctrl-C (or SIGTERM) sets ``stop``; a second one interrupts as usual.

    Only in the main thread (signal handlers can be set nowhere else); a no-op elsewhere. The
    previous handlers are restored on leaving.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handler(signum, frame) -> None:
        if stop.is_set():
            prior = old.get(signum)
            if callable(prior):
                prior(signum, frame)
            raise KeyboardInterrupt
        log.warning("stopping: finishing the frames already read (press Ctrl-C again to abandon them)")
        stop.set()

    for s in old:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
