"""Scoped torch CPU thread counts.

Why: the right thread count differs by call. A single routing request is fastest on one thread (a second
thread costs more in synchronisation than it saves on ~150 small ops), training and batched scoring use
more, and timings in reports must be taken at a stated count. ``torch.set_num_threads`` is process-wide, so
every caller that changes it restores it afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None or 0: leave as is), then restore the count."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: ``taskset -c 0`` gives 1 although the machine has more)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1
