"""A progress hook that library code can call without depending on a UI.

Long-running functions take ``progress=`` a factory called as
``progress(total=N, desc="...")`` that returns a context manager with an
``update(n)`` method. ``tqdm.tqdm`` is one; :func:`no_progress` is the default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ProgressFactory", "no_progress"]

ProgressFactory = Callable[..., Any]


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def no_progress(total: int | None = None, desc: str | None = None) -> _NoBar:
    """A progress bar that shows nothing."""
    return _NoBar()
