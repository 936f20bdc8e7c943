"""Lean streaming runtime (never imports torch unless the torch backend is asked for)."""

from .session import BACKENDS, Session, SessionError, SessionInfo, open_session, preprocess

__all__ = ["BACKENDS", "Session", "SessionError", "SessionInfo", "open_session", "preprocess"]
