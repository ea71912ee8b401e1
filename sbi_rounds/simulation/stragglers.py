"""Chunks that run far longer than their peers, reported in the log while they run."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["Stragglers"]

log = logging.getLogger("sbi_rounds.simulation")


class Stragglers:
    """Watches a round's running chunks; warns once about each that runs longer than
    ``factor`` times the median of the chunks finished so far (and at least
    ``min_seconds``), once ``min_finished`` chunks have finished.

    A chunk that hangs is then visible in the log long before (or without) a
    ``chunk_timeout``.
    """

    def __init__(
        self, round_: int, *, factor: float = 5.0, min_seconds: float = 10.0, min_finished: int = 3
    ) -> None:
        self.round, self.factor, self.min_seconds = round_, factor, min_seconds
        self.min_finished = min_finished
        self.seconds: list[float] = []
        self.reported: set[int] = set()

    def check(
        self,
        in_flight: Mapping[Any, Sequence[int]],
        started: Mapping[str, float],
        finished: Iterable[tuple[int, Any, float, str]] = (),
    ) -> list[int]:
        """Record the ``finished`` chunks' ``(chunk, x, seconds, where)``; warn about running
        chunks over the limit (``in_flight``: future -> its chunks; ``started``: task key ->
        monotonic start of its current chunk). Returns the chunks warned about now."""
        self.seconds.extend(seconds for _, _, seconds, _ in finished)
        if len(self.seconds) < self.min_finished:
            return []
        median = statistics.median(self.seconds)
        limit = max(self.min_seconds, self.factor * median)
        now, warned = time.monotonic(), []
        for fut, chunks in in_flight.items():
            start, chunk = started.get(str(fut.key)), chunks[0]
            if start is None or chunk in self.reported or now - start <= limit:
                continue
            self.reported.add(chunk)
            warned.append(chunk)
            log.warning(
                "round %d: %s has run for %.0f s, more than %.0f times the median chunk "
                "(%.1f s); it may hang. --chunk-timeout S cuts chunks running longer than S "
                "seconds and retries them.",
                self.round,
                f"chunk {chunk}" if len(chunks) == 1 else f"a chunk of {chunks[0]}-{chunks[-1]}",
                now - start,
                self.factor,
                median,
            )
        return warned
