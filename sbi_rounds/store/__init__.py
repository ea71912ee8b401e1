"""The HDF5 run store: one crash-consistent run directory per run, the single source of truth.

Layout (format 2, see ``format``): the run file ``run.h5`` holds the settings, every round's
stage, timings, counts, records, networks, training checkpoints and checksums; each round's
bulk arrays (parameters, simulations, validity and chunk marks, posterior samples) are in
files of their own in ``rounds/`` beside it (``rounds/run.round-NNNN.h5``,
``rounds/run.round-NNNN.x.h5``; beside it in run files made before the folder), reached from
the round's group through HDF5 external links, so readers see one file. Where the rest of
the run directory goes (checks, report, figures, lock): ``layout``. Format-1 run files
(everything inside ``run.h5``) are read as they are; rounds planned in them from now on get
the new layout, and the file is marked format 2.

A round's records (training summary and attempts, posterior summary, checks, calibration,
seconds per simulation and per stage) are typed models (``schema``), each written and read
by one method pair, e.g. :meth:`RunStore.write_diagnostics` and :meth:`RunStore.diagnostics`.

How writes stay consistent when the process is killed at any instant:

* Structural changes (new groups, datasets, attributes: planning a round, saving the
  network, a training checkpoint) are made on a copy of the run file that atomically
  replaces it (``os.replace``) once complete. The run file holds no bulk data, so the copy
  costs what the small parts weigh, not what the run has simulated. A kill leaves either the
  old or the new file; a leftover ``run.h5.tmp-*`` copy is garbage and removed at the next
  open.
* Bulk data goes into datasets allocated in full in the round's files, written in place
  and never copied. A round's data file is created whole (under a temporary name, then
  renamed) before the commit that plans the round links it; its simulations file likewise
  (or, while the simulator's dtype is unknown, when the first chunk is committed). A file
  a killed commit made but nothing links to is removed at the next open (``bulk``). A
  chunk's rows are written and flushed before the byte that marks the chunk done, so a
  kill mid-write leaves rows that are simply not marked and are redone. In-place writes
  change no HDF5 metadata.
* Nothing is ever pickled: weights, optimizer states and RNG states are datasets, and
  settings are JSON strings. Opening a run file never executes code from it.

Integrity: datasets carry CRC-32 checksums (``checksums``; those of bulk files in the run
file); :meth:`RunStore.check_intact` (every session's start) reads the run file and the bulk
files changed since they were sealed, sealed bulk arrays are checked whenever they are read,
:meth:`RunStore.verify` reads the whole run, its bulk files too, and names what is
damaged, and :meth:`RunStore.repair` writes it again without the damaged parts, which the next
run recomputes (``repair``).

``durable=True`` (default) also ``fsync``s after each commit (the bulk files a write touched
too), which protects against power loss and OS crashes, not only killed processes.

It imports no other part of the library: everything else reads and writes a run through it.
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
from sbi_rounds.store.schema import (
    Calibration,
    PosteriorSummary,
    PriorMass,
    RoundCounts,
    RoundDiagnostics,
    Timings,
    TrainingAttempt,
    TrainingSummaryRecord,
)
from sbi_rounds.store.training import RoundCheckpointSink, TrainedNetwork, TrainingRecords

__all__ = [
    "FORMAT",
    "POSTERIOR_SAMPLES",
    "SIMULATIONS",
    "Calibration",
    "Damage",
    "DamagedRunError",
    "FORMAT_VERSION",
    "TIMED_STAGES",
    "PosteriorSummary",
    "PriorMass",
    "RoundCheckpointSink",
    "RoundCounts",
    "RoundDiagnostics",
    "RoundInfo",
    "RunFileError",
    "RunStore",
    "Stage",
    "Timings",
    "TrainedNetwork",
    "TrainingAttempt",
    "TrainingSummaryRecord",
]


class RunStore(RepairRecords, TrainingRecords, RoundRecords):
    """Reads and commits one run file. Holds no open handle between calls (except inside
    :meth:`held_open`, which keeps one for a stream of in-place writes).

    Use :meth:`create` for a new run and :meth:`open` for an existing one. Writers must
    hold the run's lock (:mod:`sbi_rounds.lifecycle.locking`); readers need nothing.

    Examples:
        >>> store = RunStore.open("runs/snpe-1a2b3c4d5e/run.h5")
        >>> store.rounds(), store.stage(1)
        ([1], <Stage.DONE: 7>)
    """
