"""How the command-line tools print: user text exactly as it is.

Rich reads ``[...]`` in a string as markup, so a file named ``clip[apical].avi`` printed as
``clip.avi`` and the install hint ``pip install 'echoseg[gpu]'`` lost its ``[gpu]``. Every CLI
makes its consoles here, with markup off, so no message, table cell or title is ever parsed;
colour comes from :func:`tagged` (a styled word before literal text) instead of markup.
"""

from __future__ import annotations

import logging
from typing import Any


def console(stderr: bool = False, **kwargs: Any):
    """A rich Console that shows every string literally (markup off)."""
    from rich.console import Console

    return Console(stderr=stderr, markup=False, **kwargs)


def tagged(tag: str, style: str, text: object = "") -> Any:
    """``tag`` in ``style`` (e.g. "error:" in red), a space, then ``text`` literally."""
    from rich.text import Text

    out = Text(tag, style=style)
    if text != "":
        out.append(" " + str(text))
    return out


def styled(text: object, style: str) -> Any:
    """``text`` in ``style``, literally (a table cell, a dim progress line)."""
    from rich.text import Text

    return Text(str(text), style=style)



class ConsoleLogHandler(logging.Handler):
    """Each log record as one line on a rich console: ``warning: <message>`` (the message literal).

    rich's own handler lays records out in columns and wraps a long message over several lines
    (at 80 columns when not a terminal); a warning that names a file should stay one line."""

    STYLES = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}

    def __init__(self, con: Any, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.con = con

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record).replace("\n", " ")
            if record.levelno >= logging.WARNING:
                text = tagged(f"{record.levelname.lower()}:", self.STYLES.get(record.levelname, ""), text)
            self.con.print(text, highlight=False, soft_wrap=True)
        except Exception:  # a log handler must not raise
            self.handleError(record)
