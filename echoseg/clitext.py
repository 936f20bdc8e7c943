"""How the command-line tools print: user text exactly as it is.

Rich reads ``[...]`` in a string as markup, so a file named ``clip[apical].avi`` printed as
``clip.avi`` and the install hint ``pip install 'echoseg[gpu]'`` lost its ``[gpu]``. Every CLI
makes its consoles here, with markup off, so no message, table cell or title is ever parsed;
colour comes from :func:`tagged` (a styled word before literal text) instead of markup.
"""

from __future__ import annotations

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
