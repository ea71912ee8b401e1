"""Cancelling from Prefect a flow run that has no runner (the command line against a server)."""

from __future__ import annotations

import contextvars
import threading
from types import TracebackType
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from sbi_rounds.runtime.cancel import CancelToken

__all__ = ["CancellationWatch"]


class CancellationWatch:
    """Polls the flow run's state and cancels ``token`` once it is Cancelling or Cancelled.

    For runs without a Prefect runner (the flow called directly, e.g. from the command line
    against a server): cancelling such a run only marks it Cancelling, and nothing would stop
    the process. Runs of a deployment are stopped by their runner's SIGTERM instead, so for
    them (``flow_run_id`` None) this does nothing.

    Args:
        token: The run's cancellation token.
        flow_run_id: The flow run to watch, or None.
        interval: Seconds between two reads of its state.
    """

    def __init__(self, token: CancelToken, flow_run_id: UUID | None, interval: float = 2.0) -> None:
        self.token, self.flow_run_id, self.interval = token, flow_run_id, interval
        self.requested = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_current_run(cls, token: CancelToken) -> CancellationWatch:
        """A watch of the current flow run when it has no runner (no deployment)."""
        context = FlowRunContext.get()
        flow_run = context.flow_run if context is not None else None
        runnerless = flow_run is not None and flow_run.deployment_id is None
        return cls(token, flow_run.id if runnerless else None)

    def _poll(self) -> None:
        with get_client(sync_client=True) as client:
            while not self._done.wait(self.interval):
                try:
                    state = client.read_flow_run(self.flow_run_id).state
                except Exception:  # noqa: BLE001 - a missed poll is retried at the next one
                    continue
                if state is not None and (state.is_cancelling() or state.is_cancelled()):
                    self.requested = True
                    self.token.cancel("cancelled from Prefect")
                    return

    def __enter__(self) -> CancellationWatch:
        if self.flow_run_id is not None:
            context = contextvars.copy_context()  # the thread talks to the flow's API
            self._thread = threading.Thread(
                target=context.run, args=(self._poll,), name="cancellation-watch", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
