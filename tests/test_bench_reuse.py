"""The reuse benchmark (issue 40): its cells, its resume, its command and its table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_reuse as br  # noqa: E402


def _row(mode: str, simulations: int, c2st: float) -> dict:
    return {"problem": "two_moons", "budget": "3x1000", "method": "snpe", "mode": mode,
            "seed": 0, "simulations": simulations, "seconds": 60.0, "mean_c2st": c2st}  # fmt: skip


def test_the_cells_resume_from_the_results_file(tmp_path):
    args = br.parser().parse_args(["--out", str(tmp_path / "r.jsonl")])
    every = br.cells(args)
    assert len(every) == 2 * 2 * 2 * 2  # problems x budgets x methods x implemented modes
    (tmp_path / "r.jsonl").write_text(json.dumps(_row("separate", 30000, 0.6)) + "\n")
    assert br.done_names(tmp_path / "r.jsonl") == {"two_moons-3x1000-snpe-separate-s0"}


def test_the_command_turns_on_the_shared_round_and_the_table_states_the_goal(tmp_path):
    shared = br.Cell("slcp", "10x100", "snle", "shared", 1)
    argv = br.campaign_command(shared, tmp_path / "t.npy", tmp_path / "c")
    assert "--campaign.shared-first-round" in argv and argv[argv.index("--rounds") + 1] == "10"
    alone = br.Cell("slcp", "10x100", "snle", "separate", 1)
    separate = br.campaign_command(alone, tmp_path / "t.npy", tmp_path / "c")
    assert "--campaign.shared-first-round" not in separate
    table = br.summarize([_row("separate", 30000, 0.60), _row("shared", 21000, 0.61)])
    assert "| shared | 21000 | 60 | 0.610 | 30% fewer, C2ST within 0.02 |" in table
