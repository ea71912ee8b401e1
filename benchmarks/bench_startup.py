"""Start-up of a resumed run: seconds from the command to its first new simulation.

A run is extended by one round per restart (``--rounds k`` for k = 1..N: every restart
resumes the run file and has new work), ``--restarts`` times in each of two modes:

- ``temporary``: no Prefect server runs; the command starts its temporary one (the default
  on a fresh machine).
- ``reuse``: ``prefect server start`` runs at a free port (``PREFECT_SERVER_API_PORT``) and
  the command finds it at the default address and starts none (issue 14).

The simulator writes the time of its first call on a Dask worker to a file: first new work
is the first simulation a worker ran (a new run's start-up check, two simulations in the
command's own process, does not count). Also measured once: the command's imports
(``python -c "import flows.online"``) and Prefect's temporary server from spawn to a healthy
API. Results are appended per restart to ``--out`` (JSON lines; a cell already there is
skipped).

Run alone (two torch processes on 2 cores slow each other down):

    OMP_NUM_THREADS=1 python benchmarks/bench_startup.py --restarts 10
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIMULATOR = """
import os, time
from sbi_rounds.examples import linear_gaussian

def stamped(theta):
    from distributed import get_worker
    try:
        get_worker()
    except ValueError:  # the start-up check of a new run, in the command's process
        return linear_gaussian(theta)
    path = os.environ["BENCH_FIRST_CALL"]
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(repr(time.time()))
    return linear_gaussian(theta)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(port: int, timeout: float = 300) -> float:
    import httpx

    t0, deadline = time.time(), time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return time.time() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def _restart(work: Path, env: dict[str, str], rounds: int) -> float:
    stamp = work / f"first-call-{rounds}"
    env = {**env, "BENCH_FIRST_CALL": str(stamp)}
    cmd = [
        sys.executable,
        "-m",
        "flows.online",
        "--xobs",
        "0.5",
        "-0.3",
        "--rounds",
        str(rounds),
        "--simulations-per-round",
        "200",
        "--simulator",
        "bench_sim:stamped",
        "--network",
        "maf",
        "--max-epochs",
        "5",
        "--workers",
        "1",
        "--num-samples",
        "100",
        "--predictive-simulations",
        "0",
        "--calibration-simulations",
        "0",
        "--run-dir",
        str(work / "runs"),
        "--run-id",
        "startup",
        "-q",
    ]
    t0 = time.time()
    subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True, text=True)
    return float(stamp.read_text()) - t0


def _done(out: Path) -> set[tuple[str, int]]:
    if not out.is_file():
        return set()
    rows = map(json.loads, out.read_text().splitlines())
    return {(r["mode"], r["restart"]) for r in rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--restarts", type=int, default=10)
    p.add_argument(
        "--modes", nargs="+", choices=["temporary", "reuse"], default=["temporary", "reuse"]
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/startup.jsonl")
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(args.out)
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    base.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.time()
    subprocess.run([sys.executable, "-c", "import flows.online"], cwd=ROOT, check=True, env=base)
    print(f"imports of the command: {time.time() - t0:.1f} s")
    for mode in args.modes:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "bench_sim.py").write_text(SIMULATOR)
            port = _free_port()
            env = {
                **base,
                "PYTHONPATH": str(work),
                "PREFECT_HOME": str(work / "prefect"),
                "PREFECT_SERVER_API_PORT": str(port),
            }
            server = None
            if mode == "reuse":
                server = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "prefect",
                        "server",
                        "start",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                print(f"prefect server start: healthy after {_wait_healthy(port):.1f} s")
            try:
                seconds = []
                for k in range(1, args.restarts + 1):
                    if (mode, k) in done:
                        continue
                    s = _restart(work, env, k)
                    seconds.append(s)
                    with args.out.open("a") as f:
                        f.write(json.dumps({"mode": mode, "restart": k, "seconds": s}) + "\n")
                    print(f"{mode} restart {k}: first new simulation after {s:.1f} s")
                if seconds:
                    print(
                        f"{mode}: median {statistics.median(seconds):.1f} s "
                        f"({min(seconds):.1f}-{max(seconds):.1f})"
                    )
            finally:
                if server is not None:
                    server.terminate()
                    server.wait(timeout=60)


if __name__ == "__main__":
    main()
