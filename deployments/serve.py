"""One command for a local Prefect setup: a server with its UI, and the flow's deployments served.

    python deployments/serve.py              # UI at http://127.0.0.1:4200
    python deployments/serve.py --port 4300  # another port
    PREFECT_API_URL=http://host:4200/api python deployments/serve.py   # a server you run

The deployments and their default parameters are the ones of ``deployments/prefect.yaml``,
named with a ``-served`` suffix (``online_inference/on-demand-served``,
``online_inference/nightly-served`` on its cron schedule, and ``campaign/campaign-served``)
so that they never replace the work-pool deployments of ``prefect deploy`` on the same
server. They are served from this process instead of a work pool: flow runs start as its
subprocesses, in the repository root.
Ctrl-C stops serving, and the server when this command started it (``flows.server.ui_server``,
the launcher the command line's temporary server comes from too). Cancelling a run from the
UI stops it; running the deployment again with the same parameters resumes it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ENTRYPOINTS",
    "ROOT",
    "SPEC",
    "SUFFIX",
    "deployment_specs",
    "main",
    "to_deployments",
]

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "deployments" / "prefect.yaml"
SUFFIX = "-served"


#: The flows this command serves, by their entrypoint in ``prefect.yaml``.
ENTRYPOINTS = ("flows/online.py:online_inference", "flows/campaign.py:campaign_inference")


def deployment_specs(path: str | Path = SPEC) -> list[dict[str, Any]]:
    """The deployments of a ``prefect.yaml`` of the ``online_inference`` and ``campaign`` flows."""
    data = yaml.safe_load(Path(path).read_text())
    specs = [d for d in data.get("deployments", []) if d.get("entrypoint") in ENTRYPOINTS]
    if not specs:
        raise ValueError(f"{path} has no deployment of {' or '.join(ENTRYPOINTS)}")
    return specs


def _flow(entrypoint: str) -> Any:
    if entrypoint == ENTRYPOINTS[1]:
        from flows.campaign import campaign_inference

        return campaign_inference
    from flows.online import online_inference

    return online_inference


def to_deployments(specs: Sequence[dict[str, Any]], suffix: str = SUFFIX) -> list[Any]:
    """``RunnerDeployment``s of the specs' flows with their parameters and schedules.

    Args:
        specs: Deployment entries of a ``prefect.yaml`` (see :func:`deployment_specs`).
        suffix: Appended to each name: a served deployment must not share its name with a
            work-pool one, which serving would turn into a broken hybrid.

    Returns:
        One deployment per spec, for ``prefect.serve``.
    """
    from prefect.schedules import Cron

    deployments = []
    for spec in specs:
        schedules = [
            Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True))
            for s in spec.get("schedules") or []
        ]
        deployments.append(
            _flow(spec["entrypoint"]).to_deployment(
                name=f"{spec['name']}{suffix}",
                parameters=spec.get("parameters"),
                description=spec.get("description"),
                tags=spec.get("tags"),
                schedules=schedules or None,
                concurrency_limit=spec.get("concurrency_limit"),
            )
        )
    return deployments


def _serve(deployment_specs_: Sequence[dict[str, Any]]) -> None:
    from prefect import serve

    serve(*to_deployments(deployment_specs_))


def main(argv: Sequence[str] | None = None) -> int:
    """Start a Prefect server with its UI (unless PREFECT_API_URL is set) and serve the flow."""
    parser = argparse.ArgumentParser(
        prog="python deployments/serve.py",
        description="Serve the online_inference and campaign deployments of "
        "deployments/prefect.yaml, with a local Prefect server and its UI unless "
        "PREFECT_API_URL points at one.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="server host (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4200, help="server port (default: 4200)")
    parser.add_argument(
        "--spec", default=str(SPEC), help="prefect.yaml to read (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    specs = deployment_specs(args.spec)
    os.chdir(ROOT)  # the entrypoint and relative run directories are taken from the root
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from flows.server import ServerStartError, ui_server

    try:
        if os.environ.get("PREFECT_API_URL"):
            _serve(specs)
            return 0
        with ui_server(args.host, args.port) as api_url:
            os.environ["PREFECT_API_URL"] = api_url
            print(f"Prefect UI: http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
            _serve(specs)
    except KeyboardInterrupt:
        return 130
    except ServerStartError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
