"""A run file's rounds: planning one (its layout and bulk files), its stage and timings."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from sbi_rounds.store.bulk import bulk_folder, linked_file
from sbi_rounds.store.files import StoreFile
from sbi_rounds.store.format import (
    FORMAT_VERSION,
    TIMED_STAGES,
    RoundInfo,
    RunFileError,
    Stage,
    allocate,
    data_file_name,
    data_layout,
    round_group,
    storage_dtype,
    x_file_name,
)
from sbi_rounds.store.schema import Timings

__all__ = ["RoundPlans"]


class RoundPlans(StoreFile):
    """Plans rounds in the run file and reads their layout, stage and timings."""

    # --- rounds -------------------------------------------------------------------------
    def rounds(self) -> list[int]:
        """The planned rounds, ascending (1-based)."""
        with self._read() as f:
            return sorted(int(k) for k in f["rounds"].keys())

    def stage(self, round_: int) -> Stage | None:
        """How far ``round_`` got, or None if it was never planned."""
        with self._read() as f:
            name = round_group(round_)
            return Stage(int(f[name]["stage"][0])) if name in f else None

    def round_info(self, round_: int) -> RoundInfo:
        """The layout and progress of a planned round."""
        with self._read() as f:
            if round_group(round_) not in f:
                raise KeyError(f"round {round_} was never planned in {self.path}")
            g = f[round_group(round_)]
            return RoundInfo(
                round=round_,
                stage=Stage(int(g["stage"][0])),
                num_simulations=int(g.attrs["num_simulations"]),
                chunk_size=int(g.attrs["chunk_size"]),
                num_chunks=int(g.attrs["num_chunks"]),
                theta_dim=int(g["theta"].shape[1]),
                x_dim=int(g.attrs["x_dim"]) if "x_dim" in g.attrs else int(g["x"].shape[1]),
                num_posterior_samples=int(g["posterior_samples"].shape[0]),
                theta_done=int(g["theta_done"][0]),
                samples_done=int(g["samples_done"][0]),
                proposal=json.loads(g.attrs["proposal"]),
            )

    def plan_round(
        self,
        round_: int,
        *,
        num_simulations: int,
        theta_dim: int,
        x_dim: int,
        chunk_size: int,
        num_posterior_samples: int,
        proposal: Mapping[str, Any],
        x_dtype: str = "auto",
    ) -> RoundInfo:
        """Allocate every fixed-size buffer of a round, so later writes are in place.

        The bulk arrays go into the round's data file (``format``), created before the
        commit that links it. The simulations are stored in ``x_dtype`` (``"auto"``: the
        dtype the simulator returned, see ``storage_dtype``); their file is made now too
        when that dtype is known (set, or seen: :meth:`note_simulated_dtype`, an earlier
        round's), else with the first chunk.
        """
        if x_dtype not in ("auto", "float32", "float64"):
            raise ValueError(f"x_dtype must be 'auto', 'float32' or 'float64', not {x_dtype!r}")
        num_chunks = math.ceil(num_simulations / chunk_size)
        if self.stage(round_) is not None:
            raise RunFileError(f"round {round_} is planned already")
        with self._read_or_held() as f:
            folder = bulk_folder(f)
        data_file = data_file_name(self.path, round_, folder=folder)
        x_name = x_file_name(self.path, round_, folder=folder)
        layout = data_layout(num_simulations, theta_dim, num_chunks, num_posterior_samples)
        self._new_bulk_file(data_file, layout)
        known = self._known_x_dtype(round_) if x_dtype == "auto" else np.dtype(x_dtype)
        if known is not None:  # allocated now: simulations never wait for disk space
            dtype = storage_dtype(known, x_dtype)
            x_file = {"x": ((num_simulations, x_dim), dtype, np.nan)}
            self._new_bulk_file(x_name, x_file)
        with self._structural() as f:
            if int(f.attrs["format_version"]) < FORMAT_VERSION:
                f.attrs["format_version"] = FORMAT_VERSION  # a format-1 run gets new rounds
            g = f.create_group(round_group(round_))
            g.attrs["num_simulations"] = num_simulations
            g.attrs["chunk_size"] = chunk_size
            g.attrs["num_chunks"] = num_chunks
            g.attrs["x_dim"] = x_dim
            g.attrs["x_dtype"] = x_dtype
            g.attrs["proposal"] = json.dumps(dict(proposal), sort_keys=True)
            g.attrs["planned"] = time.time()
            for name in layout:
                g[name] = h5py.ExternalLink(data_file, f"/{name}")
            g["x"] = h5py.ExternalLink(x_name, "/x")  # made later
            allocate(g, "timings", (len(TIMED_STAGES),), np.float64, np.nan)
            allocate(g, "counts", (3,), np.int64, -1)  # simulations, valid, invalid
            allocate(g, "stage", (), np.uint8, int(Stage.PLANNED))
        return self.round_info(round_)

    def note_simulated_dtype(self, dtype: Any) -> None:
        """Record the dtype the simulator returned (its start-up check), so the first round's
        simulations are allocated when it is planned."""
        with self._structural() as f:
            f.attrs["simulated_dtype"] = np.dtype(dtype).str

    def _known_x_dtype(self, round_: int) -> np.dtype | None:
        """The dtype of the latest earlier round's stored simulations (format 2: format 1
        stored every one as float64), else the one the simulator returned at the start-up
        check; None: not seen yet."""
        with self._read() as f:
            for r in sorted((int(k) for k in f["rounds"] if int(k) < round_), reverse=True):
                g = f[round_group(r)]
                x = g.get("x") if linked_file(g, "x") is not None else None
                if x is not None:
                    return x.dtype
            seen = f.attrs.get("simulated_dtype")
        return None if seen is None else np.dtype(str(seen))

    def set_stage(self, round_: int, stage: Stage) -> None:
        """Commit that ``round_`` reached ``stage`` (stages only move forward)."""
        with self._in_place() as f:
            ds = f[round_group(round_)]["stage"]
            if int(ds[0]) < int(stage):
                ds[0] = int(stage)

    def record_timing(self, round_: int, stage: str, seconds: float) -> None:
        """Add ``seconds`` to the round's time for ``stage`` (one of TIMED_STAGES)."""
        i = TIMED_STAGES.index(stage)
        with self._in_place() as f:
            ds = f[round_group(round_)]["timings"]
            old = float(ds[i])
            ds[i] = seconds if math.isnan(old) else old + seconds

    def timings(self, round_: int) -> Timings:
        """Seconds per stage of a round (NaN: not run yet)."""
        with self._read() as f:
            values = f[round_group(round_)]["timings"][()]
        return Timings(**dict(zip(TIMED_STAGES, (float(v) for v in values), strict=True)))
