"""Progress bars that can be switched off.

``progress=False`` on any long-running function, or the environment variable
``CORTEXFLOW_PROGRESS=0``, silences them.
"""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled(progress: bool | None = None) -> bool:
    """Resolve whether progress bars are shown."""
    if progress is not None:
        return bool(progress)
    return os.environ.get("CORTEXFLOW_PROGRESS", "1").lower() not in {"0", "false", "no", "off"}


def progress_bar(iterable: Iterable[T] | None = None, *, progress: bool | None = None, **kwargs) -> tqdm:
    """Return a ``tqdm`` bar, disabled when progress is off."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not progress_enabled(progress), **kwargs)
