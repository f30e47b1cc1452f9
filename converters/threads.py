"""How many threads torch gets while converting: one for a small model.

Each operator of a model of a few thousand parameters takes microseconds; a second torch thread costs more in
hand-offs than it saves, and on a loaded machine its spin-waiting costs many times the work (the digits CNN's
pruning recovery: 11 s of CPU with two threads, 1.6 s with one). Larger models keep torch's default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

SMALL_MODEL_PARAMETERS = 1_000_000


@contextlib.contextmanager
def threads_for(module: Any) -> Iterator[None]:
    """Within the block, torch runs `module` (an nn.Module, or anything else: then nothing changes) on one
    thread when it is small. torch's thread count is per process: restored on leaving."""
    params = getattr(module, "parameters", None)
    if params is None:
        yield
        return
    import torch

    if sum(p.numel() for p in params()) >= SMALL_MODEL_PARAMETERS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
