"""The one root of echoseg's own errors.

Every error class echoseg defines subclasses :class:`EchosegError` (and keeps its other base,
e.g. ValueError or OSError, so existing ``except`` clauses still catch it). A CLI turns any
EchosegError into one line on stderr instead of a traceback, without keeping a hand-made list.
"""

from __future__ import annotations


class EchosegError(Exception):
    """A problem echoseg can describe in one line: what was wrong and how to fix it."""
