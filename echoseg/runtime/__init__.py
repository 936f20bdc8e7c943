"""Lean streaming runtime (never imports torch unless the torch backend is asked for).

The backends' names come from the registry alone: :func:`echoseg.backends.registry.names`.
"""

from echoseg.artifacts import preprocess
from echoseg.backends.choose import open_session
from echoseg.backends.session import BaseSession, Session, SessionError, SessionInfo

from .api import VideoResult, run_videos

__all__ = ["BaseSession", "Session", "SessionError", "SessionInfo", "VideoResult", "open_session", "preprocess",
           "run_videos"]
