"""The progress callback every builder reports its stages to."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, float | None], None]
"""``progress(stage, fraction)``: ``stage`` says what runs now ("rootfs default: mmdebstrap");
``fraction`` is the share of the whole build already done, or None when unknown."""


def no_progress(stage: str, fraction: float | None) -> None:
    """The callback used when the caller passes none."""
