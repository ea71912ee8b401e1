"""Weights & Biases: metrics, parameters and figures in a W&B run (offline by default)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from sbi_rounds.training.trackers.base import BaseTracker, require_extra

__all__ = ["WandbTracker"]


class WandbTracker(BaseTracker):
    """Logs to one Weights & Biases run, offline by default (no account needed).

    W&B wants steps that only grow, while rounds and epochs restart. So every name
    group (the part before the last ``/``) gets its own x-axis: ``train_loss`` at step 3
    is logged with ``step=3`` and ``round/best_val_loss`` at round 1 with
    ``round/step=1`` (``wandb.define_metric``). Those step names are therefore reserved.
    Parameters go to ``run.config``, figures become ``wandb.Image`` entries.

    Args:
        directory: W&B writes its ``wandb/`` folder in there (created when missing).
        project: The W&B project.
        run_name: The run's display name; None lets W&B pick one.
        mode: ``offline`` (write locally; ``wandb sync`` uploads later), ``online`` or
            ``disabled``.
        settings: More ``wandb.Settings`` fields, e.g. ``{"x_disable_stats": True}``.
            ``console`` defaults to ``"off"`` so W&B does not wrap ``sys.stdout``.

    Raises:
        MissingExtraError: If wandb is not installed.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        project: str = "sbi-rounds",
        run_name: str | None = None,
        mode: Literal["offline", "online", "disabled"] = "offline",
        *,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"mode must be 'offline', 'online' or 'disabled', got {mode!r}")
        wandb = require_extra("wandb", "wandb", "Weights & Biases")
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._wandb, self._mode = wandb, mode
        self._run = wandb.init(
            dir=os.fspath(directory),
            project=project,
            name=run_name,
            mode=mode,
            reinit="create_new",
            settings=wandb.Settings(**{"console": "off", **dict(settings or {})}),
        )
        self._defined: dict[str, str] = {}

    @property
    def log_dir(self) -> str | None:
        """The run's local directory (``.../wandb/offline-run-<time>-<id>``); None if disabled."""
        return None if self._mode == "disabled" else str(Path(self._run.dir).parent)

    @property
    def run(self) -> Any:
        """The ``wandb.Run``."""
        return self._run

    def _step_key(self, name: str) -> str:
        group = name.rpartition("/")[0]
        return f"{group}/step" if group else "step"

    def _define(self, name: str) -> str:
        key = self._defined.get(name)
        if key is None:
            key = self._step_key(name)
            if name == key or name in self._defined.values():
                raise ValueError(
                    f"the wandb backend uses {name!r} as the x-axis of the metrics in its "
                    "group; rename the metric, e.g. to 'global_step'"
                )
            if key not in self._defined.values():
                self._run.define_metric(key, hidden=True)
            self._run.define_metric(name, step_metric=key)
            self._defined[name] = key
        return key

    def _payload(self, values: dict[str, Any], step: int | None) -> dict[str, Any]:
        payload = dict(values)
        for name in values:
            key = self._define(name)
            if step is not None:
                payload[key] = step
        return payload

    def _write_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        self._run.log(self._payload(metrics, step))

    def _write_params(self, params: dict[str, Any]) -> None:
        self._run.config.update(params)

    def _write_figure(self, name: str, figure: Any, step: int | None) -> None:
        # Rendered here: wandb.Image(figure) fails unless matplotlib.pyplot was imported.
        from PIL import Image

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        buffer.seek(0)
        with Image.open(buffer) as png:
            png.load()
            image = self._wandb.Image(png)
        self._run.log(self._payload({name: image}, step))

    def _close(self, failed: bool) -> None:
        self._run.finish(exit_code=1 if failed else 0)
