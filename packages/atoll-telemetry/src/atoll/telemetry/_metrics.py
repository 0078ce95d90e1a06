"""The node's metrics registry on prometheus-client, and its text exposition.

Owns: :class:`PrometheusMetrics` (an :class:`atoll.core.MetricsRegistry` holding its own
``CollectorRegistry``), metric-name and label-name validation, idempotent metric creation,
the default histogram buckets, and rendering the Prometheus text format.
Never: touches prometheus-client's global default registry (many nodes share one process
in simulation and tests), or serves anything over the network (``_server`` does).
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final, Literal

import attrs
import prometheus_client
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from atoll.core import MetricsRegistry

__all__ = [
    "CONTENT_TYPE",
    "COUNT_BUCKETS",
    "LATENCY_SECONDS_BUCKETS",
    "RATIO_BUCKETS",
    "SIZE_BYTES_BUCKETS",
    "MetricConflict",
    "PrometheusCounter",
    "PrometheusGauge",
    "PrometheusHistogram",
    "PrometheusMetrics",
    "default_buckets",
    "validate_label_names",
    "validate_metric_name",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of :meth:`PrometheusMetrics.exposition` (text format 0.0.4)."""

LATENCY_SECONDS_BUCKETS: Final[tuple[float, ...]] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Default buckets for ``*_seconds`` histograms: 100 µs (a loopback RPC, an in-memory
apply) up to 10 s (an election storm, a stalled fsync)."""

SIZE_BYTES_BUCKETS: Final[tuple[float, ...]] = tuple(float(4**i) for i in range(3, 14))
"""Default buckets for ``*_bytes`` histograms: powers of four from 64 B to 64 MiB
(a single small value up to a snapshot chunk)."""

COUNT_BUCKETS: Final[tuple[float, ...]] = tuple(float(2**i) for i in range(17))
"""Default buckets for dimensionless histograms (entries per batch, keys per range):
powers of two from 1 to 65536."""

RATIO_BUCKETS: Final[tuple[float, ...]] = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
"""Default buckets for ``*_ratio`` histograms (values between 0 and 1)."""

MetricKind = Literal["counter", "gauge", "histogram"]

_NAME_RE: Final = re.compile(r"atoll_[a-z][a-z0-9]*(?:_[a-z0-9]+)+")
_LABEL_RE: Final = re.compile(r"[a-z_][a-z0-9_]*")
# Suffixes prometheus-client appends to a family's samples; a metric named with one of
# them collides with (or is mistaken for) another family's series.
_RESERVED_SUFFIXES: Final = ("_bucket", "_count", "_sum", "_created", "_info")
# Non-base units: Prometheus wants seconds and bytes, so dashboards never guess a scale.
_NON_BASE_UNITS: Final = {
    "ms": "_seconds",
    "msec": "_seconds",
    "millis": "_seconds",
    "milliseconds": "_seconds",
    "us": "_seconds",
    "usec": "_seconds",
    "micros": "_seconds",
    "microseconds": "_seconds",
    "ns": "_seconds",
    "nanoseconds": "_seconds",
    "minutes": "_seconds",
    "hours": "_seconds",
    "kb": "_bytes",
    "kib": "_bytes",
    "kilobytes": "_bytes",
    "mb": "_bytes",
    "mib": "_bytes",
    "megabytes": "_bytes",
    "gb": "_bytes",
    "gib": "_bytes",
    "gigabytes": "_bytes",
    "percent": "_ratio (0..1)",
}


class MetricConflict(ValueError):
    """A metric name was asked for again with a different type, labels or buckets."""


def validate_metric_name(name: str, kind: MetricKind) -> None:
    """Check ``name`` against Atoll's naming rules for a metric of ``kind``.

    Rules: ``atoll_<subsystem>_<name>[_<unit>]`` in lowercase snake case; counters end
    in ``_total`` and nothing else does; base units only (``_seconds``, ``_bytes``,
    ``_ratio``); no suffix that prometheus-client reserves for samples
    (``_bucket``, ``_count``, ``_sum``, ``_created``, ``_info``).

    :raises ValueError: naming the bad name, the rule it breaks and a valid shape.
    """
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"metric name {name!r} is invalid: expected lowercase "
            "'atoll_<subsystem>_<name>_<unit>' (letters, digits, single underscores), "
            "e.g. 'atoll_raft_proposals_committed_total' or "
            "'atoll_disk_wal_fsync_duration_seconds'"
        )
    parts = name.split("_")
    if kind == "counter":
        if parts[-1] != "total":
            raise ValueError(
                f"counter name {name!r} must end in '_total', e.g. {name + '_total'!r}"
            )
        if len(parts) < 4:
            raise ValueError(
                f"counter name {name!r} needs a subsystem and a name before '_total', "
                "e.g. 'atoll_raft_proposals_committed_total'"
            )
        unit = parts[-2]
    else:
        if parts[-1] == "total":
            raise ValueError(
                f"{kind} name {name!r} must not end in '_total' (reserved for counters)"
            )
        unit = parts[-1]
    for suffix in _RESERVED_SUFFIXES:
        if name.endswith(suffix) or (kind == "counter" and name.endswith(suffix + "_total")):
            raise ValueError(
                f"metric name {name!r} uses the reserved suffix {suffix!r}, which "
                "prometheus-client gives to histogram and counter samples; rename it"
            )
    if unit in _NON_BASE_UNITS:
        raise ValueError(
            f"metric name {name!r} uses the non-base unit {unit!r}: use "
            f"{_NON_BASE_UNITS[unit]} and convert the value"
        )


def validate_label_names(name: str, labelnames: Sequence[str], kind: MetricKind) -> None:
    """Check the label names of metric ``name``.

    :raises ValueError: a label name that is not lowercase snake case, starts with
        ``__``, repeats, or is ``le`` on a histogram.
    """
    if isinstance(labelnames, str):
        raise ValueError(
            f"labelnames of {name!r} must be a sequence of names, not the string "
            f"{labelnames!r} (write ({labelnames!r},))"
        )
    seen: set[str] = set()
    for label in labelnames:
        if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
            raise ValueError(
                f"label name {label!r} of metric {name!r} is invalid: expected lowercase "
                "snake case, e.g. 'group' or 'peer_id'"
            )
        if label.startswith("__"):
            raise ValueError(
                f"label name {label!r} of metric {name!r} starts with '__', which "
                "Prometheus reserves"
            )
        if kind == "histogram" and label == "le":
            raise ValueError(f"histogram {name!r} may not have the label 'le' (reserved)")
        if label in seen:
            raise ValueError(f"label name {label!r} appears twice in metric {name!r}")
        seen.add(label)


def default_buckets(name: str) -> tuple[float, ...]:
    """The buckets a histogram gets when none are given, chosen by its unit suffix.

    ``_seconds`` -> :data:`LATENCY_SECONDS_BUCKETS`, ``_bytes`` ->
    :data:`SIZE_BYTES_BUCKETS`, ``_ratio`` -> :data:`RATIO_BUCKETS`, anything else ->
    :data:`COUNT_BUCKETS`.
    """
    if name.endswith("_seconds"):
        return LATENCY_SECONDS_BUCKETS
    if name.endswith("_bytes"):
        return SIZE_BYTES_BUCKETS
    if name.endswith("_ratio"):
        return RATIO_BUCKETS
    return COUNT_BUCKETS


def _normalise_buckets(name: str, buckets: Sequence[float] | None) -> tuple[float, ...]:
    if buckets is None:
        return default_buckets(name)
    result = tuple(float(b) for b in buckets)
    finite = result[:-1] if result and result[-1] == float("inf") else result
    if not finite:
        raise ValueError(f"histogram {name!r} needs at least one finite bucket bound")
    if any(b >= c for b, c in itertools.pairwise(finite)):
        raise ValueError(
            f"histogram {name!r} buckets must be strictly increasing, got {list(result)}"
        )
    return finite


class PrometheusCounter:
    """An :class:`atoll.core.Counter` backed by a prometheus-client counter."""

    __slots__ = ("_metric",)

    def __init__(self, metric: prometheus_client.Counter) -> None:
        self._metric = metric

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``.

        :raises ValueError: ``amount`` is negative, or the counter has labels and this
            is not a child from :meth:`labels`.
        """
        self._metric.inc(amount)

    def labels(self, **labels: str) -> PrometheusCounter:
        """The child counter for these label values (every label name, exactly once)."""
        return PrometheusCounter(self._metric.labels(**labels))


class PrometheusGauge:
    """An :class:`atoll.core.Gauge` backed by a prometheus-client gauge."""

    __slots__ = ("_metric",)

    def __init__(self, metric: prometheus_client.Gauge) -> None:
        self._metric = metric

    def set(self, value: float) -> None:
        """Set the current value."""
        self._metric.set(value)

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (may be negative)."""
        self._metric.inc(amount)

    def set_function(self, fn: Callable[[], float]) -> None:
        """Compute the value with ``fn`` at every scrape instead of storing it.

        ``fn`` runs wherever the exposition is rendered (the event loop, for the
        telemetry server); it must be quick and must not block.
        """
        self._metric.set_function(fn)

    def labels(self, **labels: str) -> PrometheusGauge:
        """The child gauge for these label values (every label name, exactly once)."""
        return PrometheusGauge(self._metric.labels(**labels))


class PrometheusHistogram:
    """An :class:`atoll.core.Histogram` backed by a prometheus-client histogram."""

    __slots__ = ("_metric",)

    def __init__(self, metric: prometheus_client.Histogram) -> None:
        self._metric = metric

    def observe(self, value: float) -> None:
        """Record one observation."""
        self._metric.observe(value)

    def labels(self, **labels: str) -> PrometheusHistogram:
        """The child histogram for these label values (every label name, exactly once)."""
        return PrometheusHistogram(self._metric.labels(**labels))


@attrs.frozen
class _Entry:
    kind: MetricKind
    labelnames: tuple[str, ...]
    buckets: tuple[float, ...] | None
    wrapper: PrometheusCounter | PrometheusGauge | PrometheusHistogram


class _WithoutCreated(Collector):
    """A view of a registry without the ``*_created`` samples prometheus-client adds.

    They double the series count of every counter and histogram and nothing in Atoll's
    dashboards reads them (etcd does not export them either).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            created = metric.name + "_created"
            if any(s.name == created for s in metric.samples):
                copy = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                copy.samples = [s for s in metric.samples if s.name != created]
                yield copy
            else:
                yield metric


class PrometheusMetrics:
    """A node's :class:`atoll.core.MetricsRegistry`, exported in the Prometheus format.

    Each instance owns a private ``CollectorRegistry``, so any number of nodes can live
    in one process without sharing (or colliding on) series. Creation is idempotent:
    asking again for a name with the same type, labels (and buckets) returns the same
    metric object; asking with anything different raises :class:`MetricConflict`.
    Names are validated by :func:`validate_metric_name`.

    The node builds one and hands it to the ``atoll_register_metrics`` hook::

        metrics = PrometheusMetrics()
        plugin_manager.hook.atoll_register_metrics(registry=metrics)

    :param process_metrics: also export ``atoll_process_*`` (resident memory, CPU
        seconds, open and max file descriptors, start time), read from ``/proc`` at each
        scrape. They describe the whole OS process, so with several nodes in one process
        every node reports the same values.
    """

    def __init__(self, *, process_metrics: bool = True) -> None:
        self._registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._exposed = _WithoutCreated(self._registry)
        if process_metrics:
            prometheus_client.ProcessCollector(namespace="atoll", registry=self._registry)

    @property
    def registry(self) -> CollectorRegistry:
        """The underlying prometheus-client registry (to register a custom collector)."""
        return self._registry

    def names(self) -> list[str]:
        """The names of the metrics created through this object, sorted."""
        with self._lock:
            return sorted(self._entries)

    def counter(
        self, name: str, documentation: str, labelnames: Sequence[str] = ()
    ) -> PrometheusCounter:
        """Create (or return the existing) counter ``name``; it must end in ``_total``.

        :raises ValueError: the name or a label name is invalid.
        :raises MetricConflict: ``name`` exists with another type or other labels.
        """
        entry = self._get_or_create(name, documentation, labelnames, "counter", None)
        assert isinstance(entry.wrapper, PrometheusCounter)
        return entry.wrapper

    def gauge(
        self, name: str, documentation: str, labelnames: Sequence[str] = ()
    ) -> PrometheusGauge:
        """Create (or return the existing) gauge ``name``.

        :raises ValueError: the name or a label name is invalid.
        :raises MetricConflict: ``name`` exists with another type or other labels.
        """
        entry = self._get_or_create(name, documentation, labelnames, "gauge", None)
        assert isinstance(entry.wrapper, PrometheusGauge)
        return entry.wrapper

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> PrometheusHistogram:
        """Create (or return the existing) histogram ``name``.

        :param buckets: upper bounds, strictly increasing (``+Inf`` is added). None
            picks :func:`default_buckets` from the unit suffix; asking again with None
            matches a histogram created with those same defaults.
        :raises ValueError: the name, a label name or the buckets are invalid.
        :raises MetricConflict: ``name`` exists with another type, labels or buckets.
        """
        bounds = _normalise_buckets(name, buckets)
        entry = self._get_or_create(name, documentation, labelnames, "histogram", bounds)
        assert isinstance(entry.wrapper, PrometheusHistogram)
        return entry.wrapper

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format 0.0.4 (see :data:`CONTENT_TYPE`)."""
        return prometheus_client.generate_latest(self._exposed)

    def _get_or_create(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        kind: MetricKind,
        buckets: tuple[float, ...] | None,
    ) -> _Entry:
        validate_metric_name(name, kind)
        validate_label_names(name, labelnames, kind)
        labels = tuple(labelnames)
        if not documentation.strip():
            raise ValueError(f"metric {name!r} needs a non-empty documentation string")
        with self._lock:
            existing = self._entries.get(name)
            if existing is not None:
                _check_same(name, existing, kind, labels, buckets)
                return existing
            try:
                wrapper = self._make(name, documentation, labels, kind, buckets)
            except ValueError as exc:
                # prometheus-client refuses a family whose series collide with another's
                # (e.g. a gauge 'x_seconds_count' next to a histogram 'x_seconds').
                raise MetricConflict(
                    f"metric {name!r} ({kind}) collides with a series already in this "
                    f"registry: {exc}"
                ) from exc
            entry = _Entry(kind, labels, buckets, wrapper)
            self._entries[name] = entry
            return entry

    def _make(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        kind: MetricKind,
        buckets: tuple[float, ...] | None,
    ) -> PrometheusCounter | PrometheusGauge | PrometheusHistogram:
        if kind == "counter":
            return PrometheusCounter(
                prometheus_client.Counter(name, documentation, labels, registry=self._registry)
            )
        if kind == "gauge":
            return PrometheusGauge(
                prometheus_client.Gauge(name, documentation, labels, registry=self._registry)
            )
        assert buckets is not None
        return PrometheusHistogram(
            prometheus_client.Histogram(
                name, documentation, labels, registry=self._registry, buckets=buckets
            )
        )


def _check_same(
    name: str,
    existing: _Entry,
    kind: MetricKind,
    labels: tuple[str, ...],
    buckets: tuple[float, ...] | None,
) -> None:
    if existing.kind != kind:
        raise MetricConflict(
            f"metric {name!r} already exists as a {existing.kind}; it cannot also be a {kind}"
        )
    if existing.labelnames != labels:
        raise MetricConflict(
            f"{kind} {name!r} already exists with labels {list(existing.labelnames)}; "
            f"asked again with {list(labels)}"
        )
    if existing.buckets != buckets:
        raise MetricConflict(
            f"histogram {name!r} already exists with buckets {list(existing.buckets or ())}; "
            f"asked again with {list(buckets or ())}"
        )


def _conforms(metrics: PrometheusMetrics) -> MetricsRegistry:
    # Static proof (checked by mypy --strict) that PrometheusMetrics satisfies the
    # protocol the atoll_register_metrics hook is typed with.
    return metrics
