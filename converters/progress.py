"""The one progress report of long host-side work (convert, plan), for whatever displays it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """What is being done now: `done` of `total` steps; the CLI turns these into a progress bar."""

    step: str  # "reference", "export", "verify", "write"; a plan adds "converting", "measuring", "ranking"
    variant: str | None
    done: int
    total: int
    detail: str = ""

    def text(self) -> str:
        """One line a person reads: 'export onnx-int8-static', 'reference running digits-cnn on 360 samples'."""
        label = f"{self.step} {self.variant}" if self.variant else self.step
        return f"{label} {self.detail}".strip()


ProgressCallback = Callable[[Progress], None]
