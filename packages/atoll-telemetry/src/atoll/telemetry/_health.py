"""Named health checks grouped into ``livez`` and ``readyz``, evaluated the etcd way.

Owns: :class:`HealthRegistry` (check registration, per-check timeouts, exclusion,
single-check evaluation), the :class:`HealthReport` it produces, and the plain-text body
etcd and Kubernetes print for ``/livez`` and ``/readyz`` (``[+]name ok`` /
``[-]name failed: reason``).
Never: speaks HTTP (``_server`` maps a report to a status and a body), or lets a check's
exception escape: a check that raises or overruns its timeout is a failed check.
"""

from __future__ import annotations

import enum
import inspect
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import anyio
import attrs

__all__ = [
    "DEFAULT_CHECK_TIMEOUT",
    "CheckOutcome",
    "CheckResult",
    "HealthCheck",
    "HealthRegistry",
    "HealthReport",
    "Probe",
]

log = logging.getLogger("atoll.telemetry.health")

DEFAULT_CHECK_TIMEOUT: Final = 2.0
"""Seconds a check may take before it counts as failed (``timed out after ...``)."""

CheckOutcome = str | None
"""What a check returns: ``None`` when healthy, otherwise the reason it is not."""

HealthCheck = Callable[[], CheckOutcome | Awaitable[CheckOutcome]]
"""A health check: a sync or async callable taking no arguments.

It returns ``None`` when healthy or a short reason (``"no leader for the meta group"``)
when not; raising counts as failing with the exception as the reason. Sync checks run on
the event loop, so they must not block (a blocking probe is an async check that uses
``anyio.to_thread``); only async checks can be cut off by the timeout.
"""

_CHECK_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")
_MAX_REASON_CHARS: Final = 512


class Probe(enum.StrEnum):
    """The two check groups, named as their HTTP paths."""

    LIVEZ = "livez"
    """Is the process alive? A failure means: restart it."""
    READYZ = "readyz"
    """Should it get traffic? A failure means: route around it for now."""


@attrs.frozen
class CheckResult:
    """The outcome of one check in one evaluation."""

    name: str
    ok: bool
    reason: str = ""
    """Why the check failed; empty when ``ok``."""

    def line(self, *, with_reason: bool = True) -> str:
        """The check's line in a verbose body: ``[+]name ok`` or ``[-]name failed: why``."""
        if self.ok:
            return f"[+]{self.name} ok"
        return f"[-]{self.name} failed: {self.reason if with_reason else 'reason withheld'}"


@attrs.frozen
class HealthReport:
    """The result of evaluating one probe (or one check of it)."""

    probe: Probe
    results: tuple[CheckResult, ...]
    unmatched_excludes: tuple[str, ...] = ()
    """``exclude`` names that matched no check (reported, never an error)."""

    @property
    def ok(self) -> bool:
        """Whether every evaluated check passed."""
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        """The checks that failed."""
        return tuple(r for r in self.results if not r.ok)

    def render(self, *, verbose: bool) -> str:
        """The plain-text body Kubernetes and etcd serve for this probe.

        Healthy and not verbose: ``ok``. Otherwise one line per check, then
        ``<probe> check passed`` or ``<probe> check failed``. Reasons are printed only
        when ``verbose`` (as Kubernetes does, so an unauthenticated poller sees which
        check failed but not its details).
        """
        if self.ok and not verbose:
            return "ok\n"
        lines = [r.line(with_reason=verbose) for r in self.results]
        if self.unmatched_excludes:
            quoted = ", ".join(f'"{name}"' for name in self.unmatched_excludes)
            lines.append(f"warn: some health checks cannot be excluded: no matches for {quoted}")
        lines.append(f"{self.probe} check {'passed' if self.ok else 'failed'}")
        return "\n".join(lines) + "\n"


@attrs.frozen
class _Check:
    name: str
    fn: HealthCheck
    timeout: float
    probes: frozenset[Probe]


def _always_ok() -> CheckOutcome:
    return None


class HealthRegistry:
    """The node's health checks, evaluated for ``/livez`` and ``/readyz``.

    A liveness check is also a readiness check (a process that is not alive is not
    ready), as in Kubernetes; a readiness check is only a readiness check. A built-in
    ``ping`` check, always healthy, belongs to both so neither probe is ever empty.

    Checks of one evaluation run concurrently, each bounded by its own timeout.
    """

    def __init__(self, *, default_timeout: float = DEFAULT_CHECK_TIMEOUT) -> None:
        if default_timeout <= 0:
            raise ValueError(f"default_timeout must be > 0 seconds, got {default_timeout!r}")
        self._default_timeout = default_timeout
        self._lock = threading.Lock()
        self._checks: dict[str, _Check] = {}
        self._add("ping", _always_ok, None, frozenset(Probe))

    def add_liveness_check(
        self, name: str, check: HealthCheck, *, timeout: float | None = None
    ) -> None:
        """Add ``check`` to ``/livez`` and ``/readyz``.

        Keep liveness checks to what a restart would fix (a wedged event loop, a dead
        storage engine): a liveness failure gets the process killed.

        :param name: lowercase letters, digits, ``-`` and ``_``; unique in the registry.
        :param timeout: seconds before the check counts as failed (default: the
            registry's ``default_timeout``).
        :raises ValueError: bad or duplicate name, or a timeout that is not positive.
        """
        self._add(name, check, timeout, frozenset(Probe))

    def add_readiness_check(
        self, name: str, check: HealthCheck, *, timeout: float | None = None
    ) -> None:
        """Add ``check`` to ``/readyz`` only (e.g. "joined the cluster", "has the map").

        Parameters and errors as :meth:`add_liveness_check`.
        """
        self._add(name, check, timeout, frozenset({Probe.READYZ}))

    def remove(self, name: str) -> None:
        """Remove check ``name``.

        :raises KeyError: no check has that name.
        """
        with self._lock:
            if name not in self._checks:
                raise KeyError(f"no health check named {name!r}; known: {sorted(self._checks)}")
            del self._checks[name]

    def names(self, probe: Probe) -> list[str]:
        """The check names of ``probe``, in registration order."""
        with self._lock:
            return [c.name for c in self._checks.values() if probe in c.probes]

    async def evaluate(self, probe: Probe, *, exclude: Iterable[str] = ()) -> HealthReport:
        """Run every check of ``probe`` except those named in ``exclude``."""
        excluded = set(exclude)
        with self._lock:
            checks = [c for c in self._checks.values() if probe in c.probes]
        unmatched = tuple(sorted(excluded - {c.name for c in checks}))
        selected = [c for c in checks if c.name not in excluded]
        results = await _run_all(selected)
        return HealthReport(probe, results, unmatched)

    async def evaluate_one(self, probe: Probe, name: str) -> HealthReport | None:
        """Run the single check ``name`` of ``probe``; None if ``probe`` has no such check."""
        with self._lock:
            check = self._checks.get(name)
        if check is None or probe not in check.probes:
            return None
        return HealthReport(probe, (await _run_one(check),))

    def _add(
        self,
        name: str,
        check: HealthCheck,
        timeout: float | None,
        probes: frozenset[Probe],
    ) -> None:
        if not _CHECK_NAME_RE.fullmatch(name):
            raise ValueError(
                f"health check name {name!r} is invalid: use lowercase letters, digits, "
                "'-' and '_', starting with a letter or digit (it becomes a URL path)"
            )
        if not callable(check):
            raise ValueError(f"health check {name!r} must be callable, got {check!r}")
        effective = self._default_timeout if timeout is None else timeout
        if effective <= 0:
            raise ValueError(f"timeout of health check {name!r} must be > 0, got {timeout!r}")
        with self._lock:
            if name in self._checks:
                raise ValueError(f"health check {name!r} is registered twice")
            self._checks[name] = _Check(name, check, effective, probes)


async def _run_all(checks: list[_Check]) -> tuple[CheckResult, ...]:
    results: list[CheckResult | None] = [None] * len(checks)

    async def run(index: int, check: _Check) -> None:
        results[index] = await _run_one(check)

    async with anyio.create_task_group() as tg:
        for index, check in enumerate(checks):
            tg.start_soon(run, index, check)
    return tuple(r for r in results if r is not None)


async def _run_one(check: _Check) -> CheckResult:
    outcome: object = None
    try:
        with anyio.move_on_after(check.timeout) as scope:
            value = check.fn()
            outcome = await value if inspect.isawaitable(value) else value
        if scope.cancelled_caught:
            return CheckResult(check.name, False, f"timed out after {check.timeout:g}s")
    except Exception as exc:
        log.warning("health check %r raised", check.name, exc_info=True)
        return CheckResult(check.name, False, _clip(f"{type(exc).__name__}: {exc}"))
    if outcome is None:
        return CheckResult(check.name, True)
    if not isinstance(outcome, str):
        return CheckResult(
            check.name,
            False,
            f"check returned {type(outcome).__name__}, expected None (ok) or a reason",
        )
    return CheckResult(check.name, False, _clip(outcome) or "unhealthy")


def _clip(reason: str) -> str:
    # One line per check: the body is line-oriented and read by humans and scripts.
    flat = " ".join(reason.split())
    return flat if len(flat) <= _MAX_REASON_CHARS else flat[: _MAX_REASON_CHARS - 3] + "..."
