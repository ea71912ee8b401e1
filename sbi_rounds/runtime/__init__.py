"""What a run shares while it runs, across threads and processes, kept light to import.

Owns the cancel token that whoever may stop a run sets and the round checks (``cancel``),
where a run is and how it is shown (``progress``), the turn-taking of several runs' driver
work in one process (``concurrency``) and the Dask preload that ends a cluster whose run
died (``watchdog``, loaded by schedulers and workers by its import path). It may import
``training`` (cancel and progress are training callbacks) and ``errors`` only, so that
``methods``, ``cluster`` and a Dask process can use it without the rest of the library.
"""

__all__: list[str] = []
