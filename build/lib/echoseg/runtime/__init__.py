"""Lean streaming runtime (never imports torch unless the torch backend is asked for)."""

from echoseg.artifacts import preprocess

from .api import VideoResult, run_videos
from .backends import open_session
from .session import Session, SessionError, SessionInfo

#: Names of the built-in backends, in auto's order of preference.
BACKENDS = ("tensorrt", "onnxruntime", "torch")

__all__ = ["BACKENDS", "Session", "SessionError", "SessionInfo", "VideoResult", "open_session", "preprocess",
           "run_videos"]
