"""Progress and cancel protocol shared by every long loop in the core.

A loop calls ``callback(step, total, info)`` after each unit of work. The ComfyUI adapter maps it to
``comfy.utils.ProgressBar`` and raises ComfyUI's interrupt exception from inside the callback; the core
never catches that, so a cancel unwinds cleanly. Outside ComfyUI, a callback may raise :class:`Cancelled`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

ProgressCallback = Callable[[int, int, dict], None]
"""``callback(step, total, info)``: step counts from 1 to total; info holds loop-specific figures."""


class Cancelled(RuntimeError):
    """Raised (by a callback) to stop a long loop; partial results are discarded, nothing is written."""


def report(callback: Optional[ProgressCallback], step: int, total: int, **info: Any) -> None:
    """Call ``callback`` if one was given (a no-op otherwise)."""
    if callback is not None:
        callback(step, total, info)
