"""Running simulations: calling user simulators, and sending a round's chunks to Dask.

A chunk's life (plan, dispatch, retry, commit, validity, resume) is told in one module,
``ledger``; ``calls`` runs a simulator on a worker, ``dispatch`` sends tasks to Dask,
``chunks`` sizes chunks, ``stragglers`` warns about slow ones, ``outcome`` holds the report
and the failure of a call. This package imports ``config``, ``store`` and ``seeding``, never
Prefect or ``flows``.

Simulators come in three kinds (``SimulatorConfig.kind``):

* ``batched``: ``f(theta) -> x`` with ``theta`` a float32 torch tensor of shape ``(N, D)``
  and ``x`` of shape ``(N, K)``, a torch tensor or anything numpy can convert.
* ``per_sample``: ``f(theta) -> x`` with ``theta`` a float32 numpy array of shape ``(D,)``
  and ``x`` of shape ``(K,)``; it is called once per row.
* ``command``: an external program, run once per chunk (see the protocol below).

Python simulators are imported on the worker from their ``module:function`` path (nothing
is pickled but the path and keyword arguments). They should draw their randomness from
torch's, numpy's or ``random``'s global generator, which is seeded per chunk, or accept a
``seed`` keyword argument.

The external program protocol (``kind="command"``). For each chunk, sbi-rounds writes the
chunk's parameters to a file, runs the command, and reads the summaries back:

* The command is a list of arguments, run without a shell. The placeholders ``{input}``,
  ``{output}``, ``{seed}`` and ``{n}`` inside arguments are replaced by the input path,
  the output path, the chunk's seed (an integer below 2**63) and the number of
  simulations. Give both ``{input}`` and ``{output}``, or neither: then the two paths are
  appended as the last two arguments. Other braces are left alone. The same four values
  are also in the environment as ``SBI_ROUNDS_INPUT``, ``SBI_ROUNDS_OUTPUT``,
  ``SBI_ROUNDS_SEED`` and ``SBI_ROUNDS_N``.
* The input file is CSV text: one line per simulation, ``D`` comma-separated numbers
  (9 significant digits, exact for the stored float32 values), no header.
* The program writes the output file as CSV text: one line per simulation, in the input's
  order, ``K`` comma-separated numbers; ``nan`` or ``inf`` marks a failed simulation
  (kept and marked invalid); lines starting with ``#`` are ignored. No header.
* Exit status 0 means success; anything else is an error (the chunk is retried), and the
  end of the program's standard error is reported. ``cluster.chunk_timeout`` kills it.
* The program runs in the worker's working directory; give it by absolute path or on
  the workers' ``PATH``. Paths are in a fresh temporary directory, removed afterwards.

Every chunk gets its own seed, derived from the run seed, the round and the chunk index,
so results do not depend on the number of workers or the order chunks finish in.
"""

from sbi_rounds.simulation.calls import START_TOPIC, SimulatorError, call_simulator, run_chunk
from sbi_rounds.simulation.chunks import (
    AUTO_CHUNKS,
    MAX_AUTO_CHUNK_SIZE,
    choose_chunk_size,
    measure_seconds_per_simulation,
)
from sbi_rounds.simulation.ledger import (
    ChunkEntry,
    ChunkState,
    Ledger,
    committed_rows,
    count_valid,
    plan_round,
    reopen_invalid,
    simulate_round,
)
from sbi_rounds.simulation.outcome import SimulationFailed, SimulationReport

__all__ = [
    "AUTO_CHUNKS",
    "MAX_AUTO_CHUNK_SIZE",
    "START_TOPIC",
    "ChunkEntry",
    "ChunkState",
    "Ledger",
    "SimulationFailed",
    "SimulationReport",
    "SimulatorError",
    "call_simulator",
    "choose_chunk_size",
    "committed_rows",
    "count_valid",
    "measure_seconds_per_simulation",
    "plan_round",
    "reopen_invalid",
    "run_chunk",
    "simulate_round",
]
