"""HealthRegistry: groups, verbose and plain bodies, exclusion, single checks, timeouts."""

from __future__ import annotations

import anyio
import pytest

from atoll.telemetry import CheckOutcome, HealthRegistry, Probe

pytestmark = pytest.mark.anyio


def healthy() -> CheckOutcome:
    return None


async def async_healthy() -> CheckOutcome:
    await anyio.lowlevel.checkpoint()
    return None


def no_leader() -> CheckOutcome:
    return "no leader for the meta group"


async def test_liveness_checks_are_also_readiness_checks() -> None:
    health = HealthRegistry()
    health.add_liveness_check("event-loop", healthy)
    health.add_readiness_check("joined", async_healthy)
    assert health.names(Probe.LIVEZ) == ["ping", "event-loop"]
    assert health.names(Probe.READYZ) == ["ping", "event-loop", "joined"]


async def test_all_passing_is_plain_ok_or_a_verbose_listing() -> None:
    health = HealthRegistry()
    health.add_liveness_check("event-loop", healthy)
    health.add_readiness_check("joined", async_healthy)
    report = await health.evaluate(Probe.READYZ)
    assert report.ok
    assert report.render(verbose=False) == "ok\n"
    assert report.render(verbose=True) == (
        "[+]ping ok\n[+]event-loop ok\n[+]joined ok\nreadyz check passed\n"
    )


async def test_a_failing_check_fails_the_probe_and_reasons_need_verbose() -> None:
    health = HealthRegistry()
    health.add_readiness_check("meta-leader", no_leader)
    health.add_readiness_check("joined", async_healthy)
    report = await health.evaluate(Probe.READYZ)
    assert not report.ok
    assert [r.name for r in report.failed] == ["meta-leader"]
    assert report.render(verbose=True) == (
        "[+]ping ok\n"
        "[-]meta-leader failed: no leader for the meta group\n"
        "[+]joined ok\n"
        "readyz check failed\n"
    )
    assert "[-]meta-leader failed: reason withheld\n" in report.render(verbose=False)
    assert "no leader" not in report.render(verbose=False)
    # A readiness failure does not touch liveness.
    assert (await health.evaluate(Probe.LIVEZ)).ok


async def test_exclude_skips_a_check_and_reports_unknown_names() -> None:
    health = HealthRegistry()
    health.add_readiness_check("meta-leader", no_leader)
    report = await health.evaluate(Probe.READYZ, exclude=["meta-leader", "nope"])
    assert report.ok
    assert [r.name for r in report.results] == ["ping"]
    assert report.unmatched_excludes == ("nope",)
    assert report.render(verbose=True) == (
        "[+]ping ok\n"
        'warn: some health checks cannot be excluded: no matches for "nope"\n'
        "readyz check passed\n"
    )


async def test_evaluate_one_runs_only_that_check_of_that_probe() -> None:
    calls: list[str] = []

    def counted(name: str, outcome: CheckOutcome) -> object:
        def check() -> CheckOutcome:
            calls.append(name)
            return outcome

        return check

    health = HealthRegistry()
    health.add_readiness_check("a", counted("a", None))  # type: ignore[arg-type]
    health.add_readiness_check("b", counted("b", "down"))  # type: ignore[arg-type]
    report = await health.evaluate_one(Probe.READYZ, "b")
    assert report is not None
    assert not report.ok
    assert report.results[0].reason == "down"
    assert calls == ["b"]
    assert await health.evaluate_one(Probe.LIVEZ, "b") is None  # readiness-only check
    assert await health.evaluate_one(Probe.READYZ, "missing") is None


async def test_a_check_that_hangs_fails_with_a_timeout() -> None:
    never = anyio.Event()

    async def stuck() -> CheckOutcome:
        await never.wait()
        return None

    health = HealthRegistry()
    health.add_readiness_check("storage", stuck, timeout=0.05)
    health.add_readiness_check("joined", healthy)
    report = await health.evaluate(Probe.READYZ)
    results = {r.name: r for r in report.results}
    assert not results["storage"].ok
    assert results["storage"].reason == "timed out after 0.05s"
    assert results["joined"].ok
    assert [r.name for r in report.results] == ["ping", "storage", "joined"]


async def test_a_check_raising_its_own_timeout_error_is_not_reported_as_ours() -> None:
    async def raises_timeout() -> CheckOutcome:
        raise TimeoutError("peer n2 did not answer")

    health = HealthRegistry()
    health.add_readiness_check("peers", raises_timeout)
    report = await health.evaluate(Probe.READYZ)
    assert report.failed[0].reason == "TimeoutError: peer n2 did not answer"


async def test_a_raising_or_misbehaving_check_is_a_failure_not_a_crash() -> None:
    def boom() -> CheckOutcome:
        raise RuntimeError("engine closed\nwith details")

    def returns_bool() -> CheckOutcome:
        return True  # type: ignore[return-value]

    def long_reason() -> CheckOutcome:
        return "x" * 10_000

    health = HealthRegistry()
    health.add_liveness_check("storage", boom)
    health.add_liveness_check("flag", returns_bool)
    health.add_liveness_check("chatty", long_reason)
    health.add_liveness_check("empty", lambda: "")
    report = await health.evaluate(Probe.LIVEZ)
    reasons = {r.name: r.reason for r in report.failed}
    assert reasons["storage"] == "RuntimeError: engine closed with details"
    assert "expected None (ok) or a reason" in reasons["flag"]
    assert len(reasons["chatty"]) == 512 and reasons["chatty"].endswith("...")
    assert reasons["empty"] == "unhealthy"


async def test_names_timeouts_and_duplicates_are_validated() -> None:
    health = HealthRegistry()
    for bad in ("", "Has-Caps", "a/b", "-lead", "sp ace"):
        with pytest.raises(ValueError, match="health check name"):
            health.add_readiness_check(bad, healthy)
    with pytest.raises(ValueError, match="registered twice"):
        health.add_liveness_check("ping", healthy)
    with pytest.raises(ValueError, match="must be > 0"):
        health.add_readiness_check("slow", healthy, timeout=0)
    with pytest.raises(ValueError, match="must be callable"):
        health.add_readiness_check("value", "ok")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="default_timeout"):
        HealthRegistry(default_timeout=-1)


async def test_remove_takes_a_check_out_of_both_probes() -> None:
    health = HealthRegistry()
    health.add_liveness_check("storage", no_leader)
    assert not (await health.evaluate(Probe.LIVEZ)).ok
    health.remove("storage")
    assert (await health.evaluate(Probe.LIVEZ)).ok
    assert health.names(Probe.READYZ) == ["ping"]
    with pytest.raises(KeyError, match="storage"):
        health.remove("storage")
