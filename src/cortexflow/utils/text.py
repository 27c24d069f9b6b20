"""Text written into reports and figures: ANSI escapes and control characters removed.

A data set, method or option name comes from the user (a file name, a
``--set`` value); written verbatim it can carry terminal escape sequences
(``\\x1b[31m``) or other control characters into a figure title, and a ``$``
in a matplotlib label starts mathtext (``$\\frac$`` makes saving the figure
fail). :func:`strip_controls` and :func:`plain_label` make such text inert.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["strip_controls", "plain_label"]

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL_KEEP_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile(r"[\t\n\r]+")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def strip_controls(text: Any, *, keep_newlines: bool = True) -> str:
    """``text`` without ANSI escape sequences and control characters (newlines and tabs kept if asked).

    With ``keep_newlines=False`` every control character (newlines and tabs
    included) becomes a space.

    >>> strip_controls("a\\x1b[31mred\\x1b[0m\\x07b")
    'aredb'
    >>> strip_controls("a\\nb", keep_newlines=False)
    'a b'
    """
    t = _ANSI.sub("", str(text))
    return _CONTROL_KEEP_LINES.sub("", t) if keep_newlines else _CONTROL_ALL.sub(" ", t)


def plain_label(text: Any, *, keep_newlines: bool = False) -> str:
    """``text`` as a matplotlib title or label shows it literally: no control characters, ``$`` escaped.

    ANSI escapes and control characters are removed; newlines and tabs become
    spaces unless ``keep_newlines``; leading and trailing blanks are removed. A ``$`` already escaped stays
    as it is, so applying it twice changes nothing.

    >>> plain_label("ridge\\x1b[31m $x$\\x07")
    'ridge \\\\$x\\\\$'
    >>> plain_label(plain_label("$x$")) == plain_label("$x$")
    True
    """
    text = strip_controls(text, keep_newlines=True)
    if not keep_newlines:
        text = _LINE_BREAKS.sub(" ", text)
    text = text.strip()
    return _UNESCAPED_DOLLAR.sub(r"\\$", text)
