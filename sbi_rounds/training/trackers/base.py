"""The tracker protocol, the base every adapter shares, and the stdout and null trackers."""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import ModuleType, TracebackType
from typing import Any, Protocol, Self, runtime_checkable

__all__ = [
    "BaseTracker",
    "MissingExtraError",
    "Tracker",
    "figure_path",
    "flatten_params",
    "is_uri",
    "param_text",
    "require_extra",
    "safe_relpath",
]

_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")
_MLFLOW_BARE_URIS = frozenset({"databricks", "databricks-uc", "uc"})
_SCALARS = (bool, int, float, str, type(None))


@runtime_checkable
class Tracker(Protocol):
    """Where training metrics, parameters and figures go.

    Structurally a superset of sbi 0.27's ``sbi.sbi_types.Tracker`` (which lacks
    ``close``), so any tracker here can also be handed to sbi.
    """

    @property
    def log_dir(self) -> str | None:
        """Where the backend writes (a directory or a tracking URI), or None."""
        ...

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Log one scalar, e.g. ``log_metric("round/best_val_loss", 1.2, step=3)``."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log several scalars that share one step."""
        ...

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) parameters; nested mappings become dotted names."""
        ...

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        """Log a matplotlib figure (the figure is left open)."""
        ...

    def flush(self) -> None:
        """Push buffered records to the backend."""
        ...

    def close(self) -> None:
        """Flush and release the backend; later logging raises. Closing twice is a no-op."""
        ...


class MissingExtraError(ImportError):
    """An optional package a tracker backend needs is not installed."""


def flatten_params(params: Mapping[str, Any], sep: str = ".") -> dict[str, Any]:
    """Flatten nested mappings into one level of dotted names with scalar values.

    Every backend logs what this returns, so all of them show the same names and values.

    Args:
        params: Parameters; values may be mappings (flattened recursively), ``bool``,
            ``int``, ``float``, ``str`` or None (kept), zero-dimensional tensors or arrays
            (turned into Python numbers) or anything else (turned into ``str``). An empty
            mapping becomes the string ``"{}"``.
        sep: What joins a parent's name and a child's name.

    Returns:
        A flat dict, e.g. ``{"train.batch_size": 50, "bounds": "[0, 1]"}`` for
        ``{"train": {"batch_size": 50}, "bounds": [0, 1]}``.

    Raises:
        TypeError: If ``params`` is not a mapping.
        ValueError: If two entries flatten to the same name, e.g. ``{"a.b": 1, "a": {"b": 2}}``.
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a mapping of names to values, got {type(params).__name__}; "
            "pass e.g. {'batch_size': 50} or config.model_dump()"
        )
    flat: dict[str, Any] = {}
    _flatten_into(flat, params, "", sep)
    return flat


def _flatten_into(flat: dict[str, Any], params: Mapping[Any, Any], parent: str, sep: str) -> None:
    for key, value in params.items():
        name = f"{parent}{sep}{key}" if parent else str(key)
        if isinstance(value, Mapping) and value:
            _flatten_into(flat, value, name, sep)
            continue
        if name in flat:
            raise ValueError(
                f"two parameters flatten to the name {name!r}; rename one of them "
                f"(nested mappings are joined with {sep!r})"
            )
        flat[name] = _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return "{}"
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return str(value)


def param_text(value: Any) -> str:
    return str(value)


def safe_relpath(name: str, empty: str) -> str:
    """``name`` as a relative path that stays inside its parent: ``a/b c/..`` -> ``a/b_c``."""
    parts = [re.sub(r"[^\w.\-]+", "_", p) for p in name.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or empty


def figure_path(name: str, step: int | None) -> str:
    """A relative file path for a figure: ``round/posterior`` -> ``round/posterior_step3.png``."""
    return f"{safe_relpath(name, 'figure')}{'' if step is None else f'_step{step}'}.png"


def is_uri(text: str) -> bool:
    """Whether ``text`` is a URI (``file:``, ``sqlite:``, ``http:``, ``databricks``), not a path."""
    return text in _MLFLOW_BARE_URIS or _URI_SCHEME.match(text) is not None


def require_extra(module: str, backend: str, what: str) -> ModuleType:
    """Import an optional package, or raise an error that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f'the {backend} backend needs {what}: pip install "sbi-rounds[{backend}]" '
            f"(import {module} failed: {error})"
        ) from error


class BaseTracker(ABC):
    """Validation, parameter bookkeeping and the context manager shared by all adapters.

    Subclasses implement the abstract ``_write_metrics``, ``_write_params`` and
    ``_write_figure``, and optionally ``_flush`` and ``_close``; they receive validated,
    flattened input.
    A parameter keeps the value it was first logged with (MLflow and W&B refuse a change);
    logging it again with the same value is a no-op, with another value a ``ValueError``.
    """

    def __init__(self) -> None:
        self._params: dict[str, str] = {}
        self._closed = False

    @property
    def log_dir(self) -> str | None:
        """Where the backend writes, or None."""
        return None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Log one scalar under ``name`` (``/`` groups names, e.g. ``round/best_val_loss``)."""
        self.log_metrics({name: value}, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log several scalars that share one step (an epoch, or a round for ``round/...``).

        Raises:
            TypeError: If a name is not a string, a value is not a real number or the step
                is not an integer.
            ValueError: If a name is empty or the step is negative.
            RuntimeError: If the tracker was closed.
        """
        self._check_open()
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"metrics must be a mapping of names to numbers, got {type(metrics).__name__}; "
                "pass e.g. {'train_loss': 1.2}"
            )
        step = _check_step(step)
        values: dict[str, float] = {}
        for name, value in metrics.items():
            _check_name(name, "metric")
            values[name] = _check_number(name, value)
        if values:
            self._write_metrics(values, step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters, flattened with :func:`flatten_params`.

        Raises:
            ValueError: If a parameter was logged before with another value.
            RuntimeError: If the tracker was closed.
        """
        self._check_open()
        new: dict[str, Any] = {}
        for name, value in flatten_params(params).items():
            text = param_text(value)
            old = self._params.get(name)
            if old is None:
                new[name] = value
            elif old != text:
                raise ValueError(
                    f"parameter {name!r} was logged as {old!r} and cannot change to {text!r} "
                    "(MLflow and W&B keep a run's first value); log it under another name, "
                    "e.g. with TrackerCallback(tracker, prefix='round_2.')"
                )
        if new:
            self._write_params(new)
            self._params.update({name: param_text(value) for name, value in new.items()})

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        """Log a matplotlib figure under ``name``; the figure is not closed.

        Raises:
            TypeError: If ``figure`` is not a matplotlib figure.
            RuntimeError: If the tracker was closed.
        """
        self._check_open()
        _check_name(name, "figure")
        step = _check_step(step)
        if not callable(getattr(figure, "savefig", None)):
            raise TypeError(
                f"add_figure needs a matplotlib Figure, got {type(figure).__name__}; "
                "pass e.g. fig from fig, ax = plt.subplots()"
            )
        self._write_figure(name, figure, step)

    def flush(self) -> None:
        """Push buffered records to the backend."""
        if not self._closed:
            self._flush()

    def close(self) -> None:
        """Flush and release the backend. Closing twice is a no-op."""
        self._finish(failed=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._finish(failed=exc_type is not None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"{type(self).__name__}(log_dir={self.log_dir!r}, {state})"

    def _finish(self, failed: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._close(failed)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                f"this {type(self).__name__} was closed; create a new tracker (make_tracker) "
                "to log more"
            )

    @abstractmethod
    def _write_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        """Write validated scalars (names flattened) at ``step`` to the backend."""

    @abstractmethod
    def _write_params(self, params: dict[str, Any]) -> None:
        """Write parameters logged for the first time (flattened, as text) to the backend."""

    @abstractmethod
    def _write_figure(self, name: str, figure: Any, step: int | None) -> None:
        """Write a matplotlib figure under ``name`` at ``step`` to the backend."""

    def _flush(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Nothing is buffered unless a subclass says otherwise."""

    def _close(self, failed: bool) -> None:
        self._flush()


def _check_name(name: Any, kind: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"a {kind} name must be a string, got {type(name).__name__} {name!r}")
    if not name.strip():
        raise ValueError(f"a {kind} name must not be empty; use e.g. 'train_loss'")


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise TypeError(f"metric {name!r} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"metric {name!r} must be a real number (or a one-element tensor), "
            f"got {type(value).__name__}; log e.g. loss.item()"
        ) from error


def _check_step(step: Any) -> int | None:
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, int):
        if getattr(step, "ndim", None) == 0 and hasattr(step, "item"):
            step = step.item()
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step must be an integer or None, got {type(step).__name__}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return int(step)
