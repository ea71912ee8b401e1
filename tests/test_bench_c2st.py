"""The C2ST benchmark's verdicts: paired differences over seeds and their 95% intervals."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from bench_c2st import paired, summarize, verdict  # noqa: E402


def test_a_paired_difference_has_the_student_t_interval():
    d = paired([0.60, 0.60, 0.58], [0.50, 0.52, 0.49])  # differences 0.10, 0.08, 0.09
    assert d["mean"] == pytest.approx(0.09)
    se = 0.01 / math.sqrt(3)  # sample sd of the differences / sqrt(n)
    assert d["high"] - d["mean"] == pytest.approx(4.302652729749462 * se)  # t(0.975, 2)
    assert d["t"] == pytest.approx(d["mean"] / se)
    assert verdict(d) == "worse"


@pytest.mark.parametrize(
    ("ours", "sbi", "expected"),
    [
        ([0.50, 0.52, 0.49], [0.60, 0.60, 0.58], "better"),
        ([0.55, 0.50, 0.53], [0.52, 0.53, 0.51], "no difference"),  # one seed each way
        ([0.85, 0.85, 0.85], [0.84, 0.80, 0.79], "no difference"),  # t 2.8 with 3 seeds
    ],
)
def test_only_an_interval_that_excludes_zero_gives_a_verdict(ours, sbi, expected):
    assert verdict(paired(ours, sbi)) == expected


def test_one_seed_gives_no_interval_and_no_verdict():
    d = paired([0.6], [0.5])
    assert math.isnan(d["low"]) and verdict(d) == "no difference"


def test_the_table_pairs_seeds_and_compares_tsnpe_with_snpe(tmp_path):
    rows = [
        {"problem": "p", "method": m, "seed": s, "c2st_ours": ours, "c2st_sbi": 0.6}
        for m, values in (("snpe", (0.70, 0.72, 0.71)), ("tsnpe", (0.60, 0.61, 0.62)))
        for s, ours in zip((0, 1, 2), values, strict=True)
    ]
    table = summarize(rows)
    assert "| p | SNPE | 3 | 0.710 | 0.600 | +0.110" in table and "| worse |" in table
    assert "| p | -0.100 [" in table  # TSNPE - SNPE, seed by seed
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rows))
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_c2st.py"), "--summarize", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert out.strip() == table
