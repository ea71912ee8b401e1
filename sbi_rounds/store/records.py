"""A round's data in the run file: parameters, simulations, posterior samples, records."""

from __future__ import annotations

import time
from collections.abc import Sequence

import h5py
import numpy as np

from sbi_rounds.missing import valid_rows
from sbi_rounds.store.bulk import linked_file
from sbi_rounds.store.checksums import (
    Damage,
    DamagedRunError,
    mismatch,
    not_made_yet,
    stamp,
    stored_checksum,
    unopenable,
)
from sbi_rounds.store.checksums import seal as seal_group
from sbi_rounds.store.damage import damage_message
from sbi_rounds.store.format import RunFileError, Stage, round_group, storage_dtype
from sbi_rounds.store.plans import RoundPlans
from sbi_rounds.store.schema import (
    CALIBRATION,
    DIAGNOSTICS,
    PAIRPLOT,
    POSTERIOR_SUMMARY,
    PRIOR_MASS,
    SECONDS_PER_SIMULATION,
    Calibration,
    ParameterSummary,
    PosteriorSummary,
    PriorMass,
    RoundCounts,
    RoundDiagnostics,
    read_attr,
    write_attr,
)

__all__ = ["POSTERIOR_SAMPLES", "SIMULATIONS", "RoundRecords"]

#: A round's datasets that stop changing once its simulations are appended for training.
SIMULATIONS = ("theta", "x", "valid", "chunk_done")
#: ... and once its posterior samples are complete.
POSTERIOR_SAMPLES = ("posterior_samples",)


class RoundRecords(RoundPlans):
    """Reads and writes a round's parameters, simulations, samples and records."""

    # --- parameters ---------------------------------------------------------------------
    def write_theta(self, round_: int, start: int, theta: np.ndarray) -> None:
        """Write parameter rows ``[start, start + len(theta))`` and advance ``theta_done``."""
        with self._in_place(round_, bulk_only=True) as f:
            g = f[round_group(round_)]
            g["theta"][start : start + len(theta)] = np.asarray(theta, dtype=np.float32)
            f.flush()
            g["theta_done"][0] = start + len(theta)

    def read_theta(self, round_: int) -> np.ndarray:
        """The round's parameters ``(N, D)`` (rows past ``theta_done`` are NaN).

        Raises:
            DamagedRunError: They are sealed and do not match their checksum.
        """
        with self._read() as f:
            return self._checked(f[round_group(round_)], "theta")

    # --- simulations --------------------------------------------------------------------
    def pending_chunks(self, round_: int) -> list[int]:
        """Chunks whose simulations are not committed yet."""
        with self._read() as f:
            done = f[round_group(round_)]["chunk_done"][()]
        return [int(i) for i in np.flatnonzero(done == 0)]

    def write_chunk(self, round_: int, chunk: int, x: np.ndarray, seconds: float) -> None:
        """Commit a finished chunk: its rows of ``x``, their validity, then the done mark."""
        self.write_chunks(round_, [(chunk, x, seconds)])

    def write_chunks(self, round_: int, chunks: Sequence[tuple[int, np.ndarray, float]]) -> None:
        """Commit finished chunks ``(chunk, x (n, K), seconds)`` in one in-place write.

        The rows of every chunk and their validity reach the file before any of their done
        marks, so a chunk marked done always has its data.
        """
        if not chunks:
            return
        # Chunks that finish together are mostly neighbours: one slice write per run of
        # consecutive chunks and dataset (each h5py write costs far more than its bytes).
        runs: list[list[tuple[int, np.ndarray, float]]] = []
        for item in sorted(chunks, key=lambda c: c[0]):
            if runs and runs[-1][-1][0] + 1 == item[0]:
                runs[-1].append(item)
            else:
                runs.append([item])
        dtype = self._allocate_x(round_, np.asarray(chunks[0][1]).dtype)
        with self._in_place(round_, bulk_only=True) as f:
            g = f[round_group(round_)]
            size = int(g.attrs["chunk_size"])
            xs, valid = g["x"], g["valid"]  # each opened once (they are in bulk files)
            for run in runs:
                first = run[0][0]
                x = np.concatenate([x for _, x, _ in run]) if len(run) > 1 else run[0][1]
                x = np.asarray(x, dtype=dtype)  # validity of the values as stored
                start = first * size
                xs[start : start + len(x)] = x
                valid[start : start + len(x)] = valid_rows(x).astype(np.uint8)
                g["chunk_seconds"][first : first + len(run)] = [s for _, _, s in run]
            del xs, valid  # closed: their files flushed before the done marks
            f.flush()
            for run in runs:
                first = run[0][0]
                g["chunk_done"][first : first + len(run)] = 1

    def _allocate_x(self, round_: int, simulated: np.dtype) -> np.dtype:
        """The dtype of the round's stored simulations; with the first chunk (format 2),
        the file the round links them to is created (see ``storage_dtype``)."""
        with self._read_or_held() as f:
            g = f[round_group(round_)]
            x = g.get("x")
            if x is not None:
                return x.dtype
            n, k = int(g.attrs["num_simulations"]), int(g.attrs["x_dim"])
            dtype = storage_dtype(simulated, str(g.attrs.get("x_dtype", "auto")))
            name = linked_file(g, "x")
        if name is None or (self.path.parent / name).exists():  # exists: it cannot be read
            raise RunFileError(
                f"the simulations of round {round_} of {self.path} cannot be opened; check "
                f"it with: sbi-rounds verify {self.path.parent}"
            )
        self._new_bulk_file(name, {"x": ((n, k), dtype, np.nan)})
        return dtype

    def reopen_invalid_chunks(self, round_: int) -> int:
        """Mark the committed chunks that hold invalid rows as not simulated, so they are
        simulated again, and move the round back to ``SAMPLED``; returns the rows reopened.

        Only for a round whose simulations were not appended for training yet (the caller
        checks: then they are sealed with a checksum). The stage
        goes back before the chunk marks are cleared: a kill in between leaves a round
        that is simulated again with nothing pending, and still invalid.
        """
        with self._in_place(round_) as f:
            g = f[round_group(round_)]
            size = int(g.attrs["chunk_size"])
            done = g["chunk_done"][()]
            rows = [int(i) for i in np.flatnonzero(g["valid"][()] == 0) if done[int(i) // size]]
            chunks = sorted({i // size for i in rows})
            if not chunks:
                return 0
            g["stage"][0] = int(Stage.SAMPLED)
            g["counts"][:] = -1
            f.flush()
            for chunk in chunks:
                g["chunk_done"][chunk] = 0
        return len(rows)

    def read_simulations(
        self, round_: int, *, checked: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(theta (N, D), x (N, K), valid (N,) bool)`` of a round.

        ``checked``: sealed simulations (appended for training) are compared with their
        checksums, as the start-up check reads only what changed since (``check_intact``),
        so damage is found here, before anything uses them. ``False`` only where the values
        do not matter (a network rebuilt from them before its stored weights are loaded).

        Raises:
            DamagedRunError: They cannot be read (a round file missing or truncated; also
                when not ``checked``), or are checked and do not match their checksums.
        """
        with self._read() as f:
            g = f[round_group(round_)]
            if not_made_yet(g, "x"):  # no chunk committed yet (format 2 allocates them then)
                x = np.full((int(g.attrs["num_simulations"]), int(g.attrs["x_dim"])), np.nan)
            else:
                x = self._checked(g, "x", checked=checked)
            theta = self._checked(g, "theta", checked=checked)
            return theta, x, self._checked(g, "valid", checked=checked).astype(bool)

    def _checked(self, g: h5py.Group, name: str, *, checked: bool = True) -> np.ndarray:
        """The values of ``g``'s dataset ``name``, checked against their checksum if sealed
        (and ``checked``).

        Raises:
            DamagedRunError: They cannot be read (their round file is missing or truncated,
                say), or do not match their checksum; the message names the file.
        """
        try:
            values = g[name][()]
            expected = stored_checksum(g, name) if checked else None
        except Exception as e:  # noqa: BLE001 - any error of HDF5's internals is damage
            problem = unopenable(g, name, e)
        else:
            problem = mismatch(values, expected)
        if problem is not None:
            damage = [Damage(f"{g.name}/{name}", problem)]
            raise DamagedRunError(damage_message(self.path, damage, on_read=True))
        return values

    def set_counts(self, round_: int, simulations: int, valid: int) -> None:
        """Record the round's number of simulations and of valid ones."""
        with self._in_place() as f:
            f[round_group(round_)]["counts"][:] = [simulations, valid, simulations - valid]

    def counts(self, round_: int) -> RoundCounts:
        """The round's simulations, valid and invalid ones (-1 until the append stage ran)."""
        with self._read() as f:
            c = f[round_group(round_)]["counts"][()]
        return RoundCounts(simulations=int(c[0]), valid=int(c[1]), invalid=int(c[2]))

    def chunk_seconds(self, round_: int) -> np.ndarray:
        """Wall seconds each chunk took on its worker (NaN: not done)."""
        with self._read() as f:
            return f[round_group(round_)]["chunk_seconds"][()]

    def record_failure(self, round_: int, chunk: int, theta: np.ndarray, error: str) -> None:
        """Save the parameters and traceback of a chunk that kept failing."""
        with self._structural() as f:
            g = f[round_group(round_)].require_group("failures")
            name = str(chunk)
            if name in g:
                del g[name]
            ds = g.create_dataset(name, data=np.asarray(theta, dtype=np.float64))
            stamp(ds)
            ds.attrs["traceback"] = error
            ds.attrs["time"] = time.time()

    def failures(self, round_: int) -> dict[int, tuple[np.ndarray, str]]:
        """Failed chunks: ``{chunk: (theta, traceback)}``."""
        with self._read() as f:
            g = f[round_group(round_)]
            if "failures" not in g:
                return {}
            return {int(k): (v[()], str(v.attrs["traceback"])) for k, v in g["failures"].items()}

    # --- posterior samples --------------------------------------------------------------
    def write_samples(self, round_: int, start: int, samples: np.ndarray) -> None:
        """Write posterior samples ``[start, start + len)`` and advance ``samples_done``."""
        with self._in_place(round_, bulk_only=True) as f:
            g = f[round_group(round_)]
            g["posterior_samples"][start : start + len(samples)] = samples
            f.flush()
            g["samples_done"][0] = start + len(samples)

    def read_samples(self, round_: int) -> np.ndarray:
        """The committed posterior samples at xobs ``(S', D)``."""
        with self._read() as f:
            g = f[round_group(round_)]
            done = int(self._checked(g, "samples_done")[0])
            samples = self._checked(g, "posterior_samples", checked=False)
            if done == len(samples):  # complete: sealed when the round ends
                return self._checked(g, "posterior_samples")
            return samples[:done]

    # --- records (``schema``) ------------------------------------------------------------
    def seal(self, round_: int, datasets: Sequence[str]) -> None:
        """Commit the checksums of the round's ``datasets`` that no longer change (e.g.
        ``SIMULATIONS``; ``sbi_rounds.store.checksums``)."""
        with self._structural() as f:
            seal_group(f[round_group(round_)], datasets)

    def write_seconds_per_simulation(
        self, round_: int, seconds: float, *, seal_datasets: Sequence[str] = ()
    ) -> None:
        """Record the round's mean wall seconds per simulation, and seal ``seal_datasets``
        (see :meth:`seal`) in the same commit."""
        with self._structural() as f:
            g = f[round_group(round_)]
            seal_group(g, seal_datasets)
            write_attr(g, SECONDS_PER_SIMULATION, float, seconds)

    def seconds_per_simulation(self, round_: int) -> float | None:
        """The round's mean wall seconds per simulation (None: not simulated yet)."""
        with self._read() as f:
            return read_attr(f[round_group(round_)], SECONDS_PER_SIMULATION, float)

    def write_posterior_summary(
        self, round_: int, summary: PosteriorSummary, *, seal_datasets: Sequence[str] = ()
    ) -> None:
        """Record the summary of the round's posterior samples, and seal ``seal_datasets``
        (see :meth:`seal`) in the same commit."""
        summary = PosteriorSummary.model_validate(summary)
        with self._structural() as f:
            g = f[round_group(round_)]
            seal_group(g, seal_datasets)
            write_attr(g, POSTERIOR_SUMMARY, dict[str, ParameterSummary], summary.parameters)
            write_attr(g, PAIRPLOT, str | None, summary.pairplot)

    def posterior_summary(self, round_: int) -> PosteriorSummary | None:
        """The summary of the round's posterior samples (None: not finished yet)."""
        with self._read() as f:
            g = f[round_group(round_)]
            parameters = read_attr(g, POSTERIOR_SUMMARY, dict[str, ParameterSummary])
            if parameters is None:
                return None
            return PosteriorSummary(parameters=parameters, pairplot=read_attr(g, PAIRPLOT, str))

    def write_prior_mass(self, round_: int, mass: PriorMass) -> None:
        """Record how much of the round's posterior estimate lies inside the prior."""
        with self._structural() as f:
            write_attr(f[round_group(round_)], PRIOR_MASS, PriorMass, mass)

    def prior_mass(self, round_: int) -> PriorMass | None:
        """How much of the round's posterior estimate lies inside the prior (None: not
        measured: not built yet, or a method whose sampler does not reject)."""
        with self._read() as f:
            return read_attr(f[round_group(round_)], PRIOR_MASS, PriorMass)

    def write_diagnostics(
        self, round_: int, diagnostics: RoundDiagnostics, calibration: Calibration | None = None
    ) -> None:
        """Commit the round's checks, and round 1's ``calibration`` when given, at once (a
        record replaces the stored one)."""
        with self._structural() as f:
            g = f[round_group(round_)]
            write_attr(g, DIAGNOSTICS, RoundDiagnostics, diagnostics)
            if calibration is not None:
                write_attr(g, CALIBRATION, Calibration, calibration)

    def diagnostics(self, round_: int) -> RoundDiagnostics | None:
        """The round's checks (None: not checked yet)."""
        with self._read() as f:
            return read_attr(f[round_group(round_)], DIAGNOSTICS, RoundDiagnostics)

    def calibration(self, round_: int = 1) -> Calibration | None:
        """The calibration stored on ``round_`` (only round 1 has one; None: not run)."""
        with self._read() as f:
            return read_attr(f[round_group(round_)], CALIBRATION, Calibration)
