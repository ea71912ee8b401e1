"""TensorBoard: metrics, parameters as text and figures in a log directory."""

from __future__ import annotations

import os
from typing import Any

from sbi_rounds.training.trackers.base import BaseTracker, param_text, require_extra

__all__ = ["TensorBoardTracker"]


class TensorBoardTracker(BaseTracker):
    """Writes TensorBoard event files with ``torch.utils.tensorboard.SummaryWriter``.

    Metrics are scalars tagged with their name; each :meth:`log_params` call adds one
    Markdown table to the text tag ``params``; figures are images tagged with their name.

    Args:
        log_dir: The event files' directory (created when missing).
        flush_secs: How often the writer flushes on its own.

    Raises:
        MissingExtraError: If TensorBoard is not installed.
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, flush_secs: int = 30) -> None:
        super().__init__()
        require_extra("tensorboard", "tensorboard", "TensorBoard")
        tensorboard = require_extra("torch.utils.tensorboard", "tensorboard", "TensorBoard")
        self._writer = tensorboard.SummaryWriter(log_dir=str(log_dir), flush_secs=flush_secs)
        self._params_calls = 0

    @property
    def log_dir(self) -> str:
        """The event files' directory."""
        return str(self._writer.log_dir)

    def _write_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, global_step=step)

    def _write_params(self, params: dict[str, Any]) -> None:
        rows = "\n".join(
            f"| {_markdown(name)} | {_markdown(param_text(value))} |"
            for name, value in params.items()
        )
        table = f"| parameter | value |\n|---|---|\n{rows}"
        self._writer.add_text("params", table, global_step=self._params_calls)
        self._params_calls += 1

    def _write_figure(self, name: str, figure: Any, step: int | None) -> None:
        self._writer.add_figure(name, figure, global_step=step, close=False)

    def _flush(self) -> None:
        self._writer.flush()

    def _close(self, failed: bool) -> None:
        self._writer.close()


def _markdown(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
