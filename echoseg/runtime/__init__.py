"""Lean streaming runtime (never imports torch unless the torch backend is asked for)."""

from echoseg.artifacts import preprocess
from echoseg.backends.choose import open_session
from echoseg.backends.session import Session, SessionError, SessionInfo

from .api import VideoResult, run_videos

#: Names of the built-in backends, in auto's order of preference.
BACKENDS = ("tensorrt", "onnxruntime", "torch")

__all__ = ["BACKENDS", "Session", "SessionError", "SessionInfo", "VideoResult", "open_session", "preprocess",
           "run_videos"]
