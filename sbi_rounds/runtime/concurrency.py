"""Several runs in one process (a campaign): their driver-side work takes turns.

Sampling, training, posterior building and the checks seed torch's, numpy's and Python's
process-wide generators (``sbi_rounds.seeding.seeded``), so two runs doing them at once
in two threads would draw from each other's streams and lose bit-for-bit reproducibility.
A campaign's threads therefore hold :data:`DRIVER` while they run, and let go of it only
while they wait for their simulations on Dask, which draw nothing in this process. So one
run trains while others simulate, and every run computes exactly what it would alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DRIVER", "DriverLock"]


class DriverLock:
    """A lock that the thread holding it releases around waits (:meth:`released`).

    Outside :meth:`held` (a single run), :meth:`released` does nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mine = threading.local()

    def _holding(self) -> bool:
        return bool(getattr(self._mine, "held", False))

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block (one run of several in this process)."""
        self._lock.acquire()
        self._mine.held = True
        try:
            yield
        finally:
            self._mine.held = False
            self._lock.release()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Let other runs work during the block, if this thread holds the lock."""
        if not self._holding():
            yield
            return
        self._mine.held = False
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()
            self._mine.held = True


#: The lock of the runs of this process.
DRIVER = DriverLock()
