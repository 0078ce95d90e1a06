"""Real node processes on loopback: SWIM membership and failure detection (issue 4).

Five ``atoll-node`` processes gossip over the real transport. Every wait polls with a
deadline derived from the membership configuration the node runs
(``MembershipConfig.lan()``); nothing asserts a timing tighter than the protocol's bound.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import anyio
import orjson
import pytest

from atoll.admin import DevCluster
from atoll.detection import suspicion_timeout
from atoll.membership import MembershipConfig

pytestmark = pytest.mark.anyio

N = 5
CFG = MembershipConfig.lan()  # what atoll-node runs (Node.run)
DET = CFG.detection
SUSPICION_MIN = suspicion_timeout(DET.suspicion_mult, N, DET.probe_interval)
"""The shortest suspicion timeout (Lifeguard: once confirmed): 4 s for 5 nodes."""
DETECTION_BOUND = (
    2 * (N - 1) * DET.probe_interval  # round-robin probing: worst case two passes
    + DET.suspicion_max_mult * SUSPICION_MIN  # an unconfirmed Lifeguard suspicion
    + 10 * CFG.gossip_interval * CFG.retransmit_mult  # dissemination to everyone
)
"""Seconds within which every live node must have marked a crashed node dead (~37 s)."""


def member_states(c: DevCluster, node_id: str) -> dict[str, str] | None:
    """``{member_id: state}`` as ``node_id``'s gossip sees it, or None if it does not answer."""
    s = c.status(node_id)
    if s is None:
        return None
    return {mid: m["state"] for mid, m in s.get("members", {}).items()}


def fetch_metrics(c: DevCluster, node_id: str, timeout: float = 2.0) -> str | None:
    """The text of ``node_id``'s ``/metrics`` page, or None if it does not answer."""
    import urllib.error
    import urllib.request

    s = c.status(node_id)
    url = s.get("telemetry") if s else None
    if not url:
        return None
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as resp:
            return str(resp.read().decode())
    except (OSError, urllib.error.URLError):
        return None


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels}`` in Prometheus text ``text`` (None: absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        key, _, value = line.rpartition(" ")
        rest = key[len(name) :]
        if rest == "" and not want:
            return float(value)
        if rest.startswith("{") and rest.endswith("}"):
            got = ",".join(sorted(p for p in rest[1:-1].split(",") if p))
            if got == want:
                return float(value)
    return None


def ids(c: DevCluster) -> list[str]:
    st = c.state()
    assert st is not None
    return [n["id"] for n in st["nodes"]]


def views(c: DevCluster, observers: list[str]) -> dict[str, dict[str, str] | None]:
    return {o: member_states(c, o) for o in observers}


async def poll_views(c: DevCluster, observers: list[str]) -> dict[str, dict[str, str] | None]:
    return await anyio.to_thread.run_sync(views, c, observers)


async def wait_views(
    c: DevCluster,
    observers: list[str],
    ok: Callable[[dict[str, str]], bool],
    timeout: float,
    seen: list[dict[str, dict[str, str] | None]] | None = None,
) -> None:
    """Poll until ``ok(states)`` holds for every observer's view, within ``timeout``."""
    last: dict[str, dict[str, str] | None] = {}
    try:
        with anyio.fail_after(timeout):
            while True:
                last = await poll_views(c, observers)
                if seen is not None:
                    seen.append(last)
                if all(v is not None and ok(v) for v in last.values()):
                    return
                await anyio.sleep(0.2)
    except TimeoutError:
        pytest.fail(f"membership views not as expected after {timeout:.0f} s: {last}")


def all_alive(node_ids: list[str]) -> Callable[[dict[str, str]], bool]:
    return lambda v: all(v.get(n) == "alive" for n in node_ids)


def log_messages(path: str) -> list[str]:
    out = []
    with open(path, "rb") as f:
        for line in f:
            try:
                out.append(str(orjson.loads(line).get("msg", "")))
            except orjson.JSONDecodeError:
                out.append(line.decode(errors="replace"))
    return out


def counter(c: DevCluster, node_id: str, name: str) -> float:
    text = fetch_metrics(c, node_id)
    assert text is not None, f"{node_id} serves no /metrics"
    value = metric_value(text, name)
    assert value is not None, f"{name} missing from {node_id}'s /metrics"
    return value


async def test_converge_stall_crash_and_leave_over_tcp(
    make_cluster: Callable[..., DevCluster],
) -> None:
    c = make_cluster(N, partitions=2)
    nodes = ids(c)
    await wait_views(c, nodes, all_alive(nodes), timeout=30)

    # Membership metrics are on every node's /metrics.
    for n in nodes:
        text = await anyio.to_thread.run_sync(fetch_metrics, c, n)
        assert text is not None
        assert metric_value(text, "atoll_membership_members", state="alive") == N
        assert (metric_value(text, "atoll_membership_probes_sent_total") or 0) > 0
        assert metric_value(text, "atoll_detection_local_health_score") is not None

    # SIGSTOP one node for half the shortest suspicion timeout: never declared dead.
    stalled, *others = nodes[1], nodes[0], *nodes[2:]
    pid = c.node(stalled)["pid"]
    seen: list[dict[str, dict[str, str] | None]] = []
    os.kill(pid, signal.SIGSTOP)
    try:
        stop_until = time.monotonic() + SUSPICION_MIN / 2
        while time.monotonic() < stop_until:
            seen.append(await poll_views(c, others))
            await anyio.sleep(0.1)
    finally:
        os.kill(pid, signal.SIGCONT)
    await wait_views(c, nodes, all_alive(nodes), timeout=DETECTION_BOUND, seen=seen)
    # Keep watching past the longest suspicion that stall could have started.
    await anyio.sleep(1.0)
    seen.append(await poll_views(c, others))
    declared = {
        o: v[stalled] for snap in seen for o, v in snap.items() if v and v.get(stalled) == "dead"
    }
    assert not declared, f"a SIGSTOPped node was declared dead: {declared}"
    for o in others:
        dead = await anyio.to_thread.run_sync(counter, c, o, "atoll_membership_dead_declared_total")
        assert dead == 0, f"{o} declared someone dead during a short stall"

    # kill -9: the other four mark it dead within the configured bound.
    victim = nodes[4]
    c.kill(victim, signal.SIGKILL)
    survivors = nodes[:4]
    await wait_views(c, survivors, lambda v: v.get(victim) == "dead", timeout=DETECTION_BOUND)

    # Graceful leave (SIGTERM): the rest see "left", never "dead"/"suspect".
    leaver = nodes[3]
    rest = nodes[:3]
    c.kill(leaver, signal.SIGTERM)  # returns once the process has exited
    assert not c.alive(leaver)
    msgs = log_messages(c.node(leaver)["log"])
    left = next((i for i, m in enumerate(msgs) if "left the gossip cluster" in m), None)
    stopped = next(
        (i for i, m in enumerate(msgs) if m.startswith("node ") and "stopped" in m), None
    )
    assert left is not None and stopped is not None, msgs[-10:]
    assert left < stopped
    # The leave was gossiped before the exit, so "left" shows up well before a crash
    # could even be suspected (probe + the shortest suspicion timeout).
    gone: list[dict[str, dict[str, str] | None]] = []
    await wait_views(c, rest, lambda v: v.get(leaver) == "left", timeout=SUSPICION_MIN, seen=gone)
    bad = {o: v[leaver] for s in gone for o, v in s.items() if v and v.get(leaver) == "dead"}
    assert not bad, f"a leaving node was declared dead: {bad}"


async def test_converge_over_nats(make_cluster: Callable[..., DevCluster], request: Any) -> None:
    url = request.getfixturevalue("nats_server").url
    c = make_cluster(N, transport="nats", nats_servers=[url], partitions=2)
    nodes = ids(c)
    await wait_views(c, nodes, all_alive(nodes), timeout=30)
