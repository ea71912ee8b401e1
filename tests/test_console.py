"""What a run prints: the live display in a terminal, progress lines in a log, ``-q``.

Real runs of the command (``python -m flows.online``) under a pseudo-terminal and with
pipes, each with Prefect's temporary server and a local Dask cluster.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from flows.cli.console import (
    ConsoleHandler,
    failures_as_one_line,
    install_console,
    quiet_dask_workers,
)

TESTS = Path(__file__).resolve().parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: Words a tiny run passes to the command (MAF, few epochs, one worker).
TINY = [
    "--xobs",
    "0.5",
    "-0.3",
    "--network",
    "maf",
    "--hidden-features",
    "10",
    "--num-transforms",
    "1",
    "--num-samples",
    "100",
    "--workers",
    "1",
    "--predictive-simulations",
    "0",
    "--calibration-simulations",
    "0",
]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    env.pop("PREFECT_API_URL", None)
    env["SBI_ROUNDS_RUN_DIR"] = str(tmp_path / "runs")
    return env


def _in_a_terminal(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> tuple[int, str]:
    """Run a command on a pseudo-terminal 120 columns wide; its exit status and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not data:
            break
        chunks.append(data)
    else:
        proc.kill()
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


def _screen_lines(raw: str) -> list[str]:
    """The lines a terminal keeps: live-display redraws (bars, cleared lines) left out."""
    lines = []
    for line in ANSI.sub("", raw).replace("\r\n", "\n").split("\n"):
        last = line.split("\r")[-1]
        if last.strip() and "━" not in last:
            lines.append(last)
    return lines


@pytest.mark.slow
def test_a_run_in_a_terminal_shows_a_live_display_and_a_short_log(tmp_path):
    args = [
        sys.executable,
        "-m",
        "flows.online",
        *TINY,
        "--rounds",
        "2",
        "--simulations-per-round",
        "200",
        "--max-epochs",
        "6",
        "--run-id",
        "tty",
    ]
    status, raw = _in_a_terminal(args, tmp_path, _env(tmp_path), timeout=900)
    lines = _screen_lines(raw)
    text = "\n".join(lines)
    assert status == 0, text[-4000:]
    assert "round 1/2 simulating" in ANSI.sub("", raw)  # the live display was drawn
    assert "round 1/2 training" in ANSI.sub("", raw)
    assert len(lines) <= 40, text
    for noise in (
        "step=",
        "train_loss",
        "Finished in state",
        "dask spec",
        "preload",
        "params ",
        "View at",
        "anonymous usage",
    ):
        assert noise not in text, noise
    assert re.search(
        r"round 1/2 done: 200 simulations \(200 valid\), 6 epochs \(stopped by "
        r"max_epochs\)",
        text,
    ), text
    assert "round 2/2 done:" in text
    assert "warning: round 1: training stopped at its cap (reached max_epochs=6)" in text
    assert "stopped by" in text and "max_epochs" in text.split("stopped by")[-1]  # the table
    assert f"run file: {tmp_path / 'runs' / 'tty' / 'run.h5'}" in text
    assert "Prefect UI: this run's server was temporary" in text  # how to browse it later


@pytest.mark.slow
def test_without_a_terminal_a_slow_round_prints_progress_lines(tmp_path):
    args = [
        sys.executable,
        "-m",
        "flows.online",
        *TINY,
        "--rounds",
        "1",
        "--simulations-per-round",
        "120",
        "--chunk-size",
        "10",
        "--max-epochs",
        "3",
        "--simulator",
        "simulators:sleepy",
        "--console.progress-interval",
        "1",
        "--run-id",
        "log",
    ]
    out = subprocess.run(
        args, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-4000:]
    progress = [line for line in out.stderr.splitlines() if "round 1/1 simulating: " in line]
    assert len(progress) >= 2, out.stderr
    assert all(
        re.match(r"\d\d:\d\d:\d\d round 1/1 simulating: \d+/120 \(\d+%\)", p) for p in progress
    ), progress
    assert any("simulations/s, about" in p for p in progress), progress
    assert "\x1b[" not in out.stderr  # no terminal codes in a log file


@pytest.mark.slow
def test_quiet_prints_only_warnings_errors_and_the_paths(tmp_path):
    args = [
        sys.executable,
        "-m",
        "flows.online",
        *TINY,
        "--rounds",
        "1",
        "--simulations-per-round",
        "100",
        "--max-epochs",
        "2",
        "--run-id",
        "quiet",
        "-q",
    ]
    out = subprocess.run(
        args, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-4000:]
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    allowed = ("warning: ", "run file: ", "pairplot: ", "report: ")
    assert lines and all(
        line.split(" ", 1)[1].startswith(allowed)
        if re.match(r"\d\d:\d\d:\d\d ", line)
        else line.startswith(allowed)
        for line in lines
    ), lines
    assert any("training stopped at its cap" in line for line in lines)


def test_the_console_handler_names_warnings_and_leaves_out_engine_lines(tmp_path):
    import io
    import logging

    import prefect  # noqa: F401 - its logging set-up, as in the command

    stream = io.StringIO()
    root = logging.getLogger()
    names = ("sbi_rounds", "sbi_rounds.metrics", "distributed", "flows")
    before = list(root.handlers), {n: logging.getLogger(n).level for n in names}
    logging.captureWarnings(False)  # an in-process run of an earlier test may have set it
    console = install_console(0, stream)
    try:
        logging.getLogger("prefect.task_runs").info("Finished in state Completed()")
        logging.getLogger("distributed.deploy.subprocess").info("python -m dask spec ...")
        logging.getLogger("sbi_rounds.metrics").debug("step=1 val_loss=2")
        logging.getLogger("sbi_rounds.stages.train").warning("round 1: something")
        logging.getLogger("prefect.flow_runs").info("round 1/2 done: ...")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn_explicit("old API", UserWarning, "/x/site-packages/lib.py", 3)
            warnings.warn_explicit("check your input", UserWarning, "/home/me/sim.py", 7)
        install_console(0, stream)  # again: still one handler
        assert sum(isinstance(h, ConsoleHandler) for h in root.handlers) == 1
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = before[0]
        for name, level in before[1].items():
            logging.getLogger(name).setLevel(level)
    lines = [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in stream.getvalue().splitlines()]
    assert lines[:2] == ["warning: round 1: something", "round 1/2 done: ..."]
    assert lines[2].startswith("warning: /home/me/sim.py:7: UserWarning: check your input")
    assert "old API" not in stream.getvalue()
    assert console.file is stream


def test_a_campaigns_console_labels_each_line_with_its_run():
    import io
    import logging
    import threading

    from rich.console import Console

    from sbi_rounds.campaign import RUN_THREAD_PREFIX

    stream = io.StringIO()
    handler = ConsoleHandler(Console(file=stream), run_threads=RUN_THREAD_PREFIX)
    logger = logging.getLogger("test_console.campaign")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:  # a flow run's record carries its name; a library's record has its thread's
        logger.info(
            "round 1/2 done", extra={"flow_name": "online_inference", "flow_run_name": "obs-0001"}
        )
        logger.info(
            "campaign of 3 observations",
            extra={"flow_name": "campaign", "flow_run_name": "brave-fox"},
        )
        thread = threading.Thread(
            target=logger.warning, args=("training stalled",), name=RUN_THREAD_PREFIX + "obs-0002"
        )
        thread.start()
        thread.join()
        logger.info("not a run's")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == [
        "obs-0001: round 1/2 done",
        "campaign of 3 observations",
        "warning: obs-0002: training stalled",
        "not a run's",
    ]


def test_failures_are_one_line_below_verbose():
    import logging

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append((record.getMessage(), record.exc_info))

    logger = logging.getLogger("prefect.task_runs")
    keep = Keep()
    logger.addHandler(keep)
    try:
        for level in (0, 1):
            with failures_as_one_line(level):
                try:
                    raise RuntimeError("boom")
                except RuntimeError:
                    logger.exception("Task run failed")
                    logger.warning("retrying", exc_info=True)
        logger.error("after")  # the filter is gone again
    finally:
        logger.removeHandler(keep)
    assert [m for m, _ in records] == ["retrying", "Task run failed", "retrying", "after"]
    assert records[0][1] is None and records[1][1] is not None  # -v keeps tracebacks


def test_dask_workers_are_quiet_only_while_a_run_lasts(monkeypatch):
    # The environment variable reaches the worker processes a run starts; it must not stay
    # set in a process that goes on (a test session: later SLURM jobs inherit it).
    monkeypatch.delenv("DASK_LOGGING__DISTRIBUTED", raising=False)
    with quiet_dask_workers(0):
        assert os.environ["DASK_LOGGING__DISTRIBUTED"] == "warning"
    assert "DASK_LOGGING__DISTRIBUTED" not in os.environ
    with quiet_dask_workers(1):  # -v: workers say what they do
        assert "DASK_LOGGING__DISTRIBUTED" not in os.environ
    monkeypatch.setenv("DASK_LOGGING__DISTRIBUTED", "debug")  # the user's choice stays
    with quiet_dask_workers(0):
        assert os.environ["DASK_LOGGING__DISTRIBUTED"] == "debug"
    assert os.environ["DASK_LOGGING__DISTRIBUTED"] == "debug"
