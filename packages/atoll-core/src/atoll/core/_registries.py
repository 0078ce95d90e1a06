"""Small registries that hooks push into: metrics and admin commands.

Owns: the protocols a metrics backend implements, an in-process implementation usable
by cores and tests without Prometheus, and the admin command registry.
Never: exports anything over the network (atoll.telemetry does).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

__all__ = [
    "AdminCommand",
    "AdminCommandRegistry",
    "Counter",
    "Gauge",
    "Histogram",
    "InMemoryMetrics",
    "MetricsRegistry",
]


class Counter(Protocol):
    """A monotonically increasing count."""

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0)."""
        ...

    def labels(self, **labels: str) -> Counter:
        """The child counter for these label values."""
        ...


class Gauge(Protocol):
    """A value that goes up and down."""

    def set(self, value: float) -> None:
        """Set the current value."""
        ...

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (may be negative)."""
        ...

    def labels(self, **labels: str) -> Gauge:
        """The child gauge for these label values."""
        ...


class Histogram(Protocol):
    """A distribution of observed values (latencies, sizes)."""

    def observe(self, value: float) -> None:
        """Record one observation."""
        ...

    def labels(self, **labels: str) -> Histogram:
        """The child histogram for these label values."""
        ...


class MetricsRegistry(Protocol):
    """Creates named metrics. Names follow ``atoll_<subsystem>_<name>_<unit>``."""

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        """Create (or return the existing) counter ``name``."""
        ...

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        """Create (or return the existing) gauge ``name``."""
        ...

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        """Create (or return the existing) histogram ``name``."""
        ...


class _Metric:
    def __init__(self, store: InMemoryMetrics, name: str, key: tuple[tuple[str, str], ...]):
        self._store = store
        self._name = name
        self._key = key

    def labels(self, **labels: str) -> Any:
        key = tuple(sorted({**dict(self._key), **labels}.items()))
        return type(self)(self._store, self._name, key)

    def inc(self, amount: float = 1.0) -> None:
        with self._store._lock:
            series = self._store.values.setdefault(self._name, {})
            series[self._key] = series.get(self._key, 0.0) + amount

    def set(self, value: float) -> None:
        with self._store._lock:
            self._store.values.setdefault(self._name, {})[self._key] = float(value)

    def observe(self, value: float) -> None:
        with self._store._lock:
            obs = self._store.observations.setdefault(self._name, {})
            obs.setdefault(self._key, []).append(float(value))


class InMemoryMetrics:
    """A dependency-free :class:`MetricsRegistry` that keeps values in dicts.

    Cores count into it in simulation; tests read ``value(name, **labels)``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self.observations: dict[str, dict[tuple[tuple[str, str], ...], list[float]]] = {}
        self.docs: dict[str, str] = {}

    def _make(self, name: str, documentation: str) -> Any:
        self.docs.setdefault(name, documentation)
        return _Metric(self, name, ())

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        """Create a counter."""
        return self._make(name, documentation)  # type: ignore[no-any-return]

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        """Create a gauge."""
        return self._make(name, documentation)  # type: ignore[no-any-return]

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        """Create a histogram."""
        return self._make(name, documentation)  # type: ignore[no-any-return]

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter or gauge series (0 if never touched)."""
        key = tuple(sorted(labels.items()))
        return self.values.get(name, {}).get(key, 0.0)

    def total(self, name: str) -> float:
        """Sum over every label combination of a counter or gauge."""
        return sum(self.values.get(name, {}).values())


AdminHandler = Callable[[Mapping[str, Any]], Awaitable[Any]]


@attrs.frozen
class AdminCommand:
    """One admin operation the node exposes (CLI, TUI and admin API call it by name)."""

    name: str
    handler: AdminHandler
    help: str
    mutating: bool = False
    """Whether the command changes cluster state (needs the admin token when auth is on)."""


class AdminCommandRegistry:
    """Collects :class:`AdminCommand` objects from the ``atoll_admin_commands`` hook."""

    def __init__(self) -> None:
        self.commands: dict[str, AdminCommand] = {}

    def add(self, name: str, handler: AdminHandler, help: str, *, mutating: bool = False) -> None:
        """Register ``name``; a second registration of the same name is an error."""
        if name in self.commands:
            raise ValueError(f"admin command {name!r} is registered twice")
        self.commands[name] = AdminCommand(name, handler, help, mutating)
