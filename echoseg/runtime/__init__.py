"""Lean streaming runtime (never imports torch unless the torch backend is asked for)."""

from .api import VideoResult, run_videos
from .session import BACKENDS, Session, SessionError, SessionInfo, open_session, preprocess

__all__ = ["BACKENDS", "Session", "SessionError", "SessionInfo", "VideoResult", "open_session", "preprocess",
           "run_videos"]
