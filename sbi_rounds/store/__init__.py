"""The HDF5 run store: one crash-consistent file per run, the single source of truth.

How writes stay consistent when the process is killed at any instant:

* Structural changes (new groups, datasets, attributes: planning a round, saving the
  network, a training checkpoint) are made on a copy of the file that atomically replaces
  it (``os.replace``) once complete. A kill leaves either the old or the new file; a
  leftover ``run.h5.tmp-*`` copy is garbage and removed at the next open.
* Bulk data (parameters, simulations, posterior samples) goes into datasets allocated in
  full when the round is planned, written in place. A chunk's rows are written and
  flushed before the byte that marks the chunk done, so a kill mid-write leaves rows that
  are simply not marked and are redone. In-place writes change no HDF5 metadata.
* Nothing is ever pickled: weights, optimizer states and RNG states are datasets, and
  settings are JSON strings. Opening a run file never executes code from it.

Integrity: datasets carry CRC-32 checksums (``checksums``); :meth:`RunStore.verify` reads
the whole file and names what is damaged, and :meth:`RunStore.repair` writes it again without
the damaged parts, which the next run recomputes (``repair``).

``durable=True`` (default) also ``fsync``s after each commit, which protects against
power loss and OS crashes, not only killed processes.
"""

from sbi_rounds.store.checksums import Damage, DamagedRunError
from sbi_rounds.store.format import (
    FORMAT,
    FORMAT_VERSION,
    TIMED_STAGES,
    RoundInfo,
    RunFileError,
    Stage,
)
from sbi_rounds.store.records import POSTERIOR_SAMPLES, SIMULATIONS, RoundRecords
from sbi_rounds.store.repair import RepairRecords
from sbi_rounds.store.training import RoundCheckpointSink, TrainingRecords

__all__ = [
    "FORMAT",
    "POSTERIOR_SAMPLES",
    "SIMULATIONS",
    "Damage",
    "DamagedRunError",
    "FORMAT_VERSION",
    "TIMED_STAGES",
    "RoundCheckpointSink",
    "RoundInfo",
    "RunFileError",
    "RunStore",
    "Stage",
]


class RunStore(RepairRecords, TrainingRecords, RoundRecords):
    """Reads and commits one run file. Holds no open handle between calls (except inside
    :meth:`held_open`, which keeps one for a stream of in-place writes).

    Use :meth:`create` for a new run and :meth:`open` for an existing one. Writers must
    hold the run's lock (:mod:`sbi_rounds.locking`); readers need nothing.
    """
