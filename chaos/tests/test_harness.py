"""The harness really injects each fault: processes die and stop, links really drop,
skewed clocks really run at the rate asked for.

The proxy and netns tests use the real TCP transport (the node's own), so a cut is
judged by what a node would see: a request that used to be answered times out.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from atoll_chaos.clock import FileClock, write_skew
from atoll_chaos.cluster import ChaosCluster, free_ports
from atoll_chaos.netns import NetnsNetwork, netns_available
from atoll_chaos.proxy import LinkProxy, partition_links
from atoll_chaos.runner import pace

from atoll.admin._dev import fetch_status_sync
from atoll.core import Frame, PeerUnreachable, Timeout, TransportConfig
from atoll.transport.tcp import TcpTransport

# ---------------------------------------------------------------- the proxy


async def _echo(frame: Frame, sender: str) -> Frame | None:
    return Frame("pong", {"from": sender})


async def _ok(t: TcpTransport, addr: str) -> bool:
    try:
        await t.request(addr, Frame("ping"), timeout=0.5)
    except (Timeout, PeerUnreachable, TimeoutError, OSError):
        return False
    return True


@pytest.mark.anyio
async def test_proxy_cuts_one_direction_and_heals() -> None:
    p = free_ports(4)
    real = {"a": f"127.0.0.1:{p[0]}", "b": f"127.0.0.1:{p[1]}"}
    adv = {"a": f"127.0.0.1:{p[2]}", "b": f"127.0.0.1:{p[3]}"}
    cfg = TransportConfig(backend="tcp", connect_timeout=0.5)
    ta = TcpTransport(cfg, node_id="a", listen=real["a"])
    tb = TcpTransport(cfg, node_id="b", listen=real["b"])
    proxy = LinkProxy(listen=adv, upstream=real, sources={v: k for k, v in real.items()})
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        await ta.start(_echo)
        await tb.start(_echo)
        try:
            assert await _ok(ta, adv["b"]) and await _ok(tb, adv["a"])
            proxy.cut("a", "b")
            assert not await _ok(ta, adv["b"])  # a -> b is silent
            assert await _ok(tb, adv["a"])  # b -> a still flows
            st = proxy.stats[("a", "b")]
            assert st.connections_cut + st.connections_black_holed >= 1
            proxy.heal_all()
            with anyio.fail_after(10):
                while not await _ok(ta, adv["b"]):  # the dialer reconnects
                    await anyio.sleep(0.05)
        finally:
            await ta.close()
            await tb.close()
            tg.cancel_scope.cancel()


def test_pace_spaces_starts_and_never_waits_a_negative_time() -> None:
    # On time: the next start is one interval after the last.
    assert pace(10.0, 0.004, 10.001) == (10.004, pytest.approx(0.003))
    # Late (the last op took longer than the interval): start now, no burst, no
    # negative delay (uvloop refuses one; the first version of the pacing passed it).
    assert pace(10.0, 0.004, 10.5) == (10.5, 0.0)
    start, delay = 0.0, 0.0
    for now in (0.0, 0.001, 0.009, 0.0095, 0.02):
        start, delay = pace(start, 0.004, now)
        assert delay >= 0.0 and start >= now


def test_partition_links() -> None:
    assert partition_links([["a"], ["b", "c"]]) == {
        ("a", "b"),
        ("b", "a"),
        ("a", "c"),
        ("c", "a"),
    }
    # a bridge node talks to both sides
    assert partition_links([["a", "b"], ["b", "c"]]) == {("a", "c"), ("c", "a")}


# ---------------------------------------------------------------- namespaces + nft


_NETNS = netns_available() if os.geteuid() == 0 else "not root"


@pytest.mark.skipif(_NETNS is not None, reason=f"network namespaces unavailable: {_NETNS}")
def test_netns_cut_really_drops_packets() -> None:
    net = NetnsNetwork(["x", "y"])
    net.setup()
    server = None
    try:
        port = 7555
        server = subprocess.Popen(
            [
                *net.exec_prefix("y"),
                sys.executable,
                "-c",
                "import socket,sys\n"
                "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"s.bind(('{net.address('y')}',{port}));s.listen()\n"
                "print('up',flush=True)\n"
                "while True:\n c,_=s.accept();c.sendall(b'hi');c.close()\n",
            ],
            stdout=subprocess.PIPE,
        )
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"up"

        def connect_from_x() -> bool:
            probe = (
                "import socket\n"
                f"s=socket.create_connection(('{net.address('y')}',{port}),timeout=1)\n"
                "assert s.recv(2)==b'hi'\n"
            )
            r = subprocess.run(
                [*net.exec_prefix("x"), sys.executable, "-c", probe],
                capture_output=True,
                check=False,
            )
            return r.returncode == 0

        assert connect_from_x()
        net.cut("x", "y")
        assert not connect_from_x()
        assert net.dropped_packets("y") > 0
        net.heal_all()
        assert connect_from_x()
    finally:
        if server is not None:
            server.kill()
            server.wait()
        net.teardown()
    names = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    assert net.ns("x") not in names


# ---------------------------------------------------------------- clocks


def test_file_clock_follows_the_rate_and_never_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    write_skew(path, rate=1.0)
    clock = FileClock(path, poll=0.0)
    a = clock.now()
    write_skew(path, rate=0.5)
    clock.now()  # picks the new rate up
    t0, c0 = time.monotonic(), clock.now()
    time.sleep(0.2)  # the measured interval itself
    t1, c1 = time.monotonic(), clock.now()
    assert (c1 - c0) == pytest.approx(0.5 * (t1 - t0), rel=0.1)
    write_skew(path, rate=1.0, offset_ms=-10_000)  # a backwards step is ignored
    assert clock.now() >= c1 >= a
    write_skew(path, rate=1.0, offset_ms=1000)  # a forward step is applied once
    before = clock.now()
    assert clock.now() - before < 1.0
    assert before - c1 >= 0.9


# ---------------------------------------------------------------- processes


@pytest.mark.timeout(180)
def test_kill_and_pause_really_happen(tmp_path: Path) -> None:
    async def main() -> None:
        c = ChaosCluster(tmp_path / "c", n=3, spare=0, partitions=1)
        async with anyio.create_task_group() as tg:
            c.plan()
            assert c.proxy is not None
            await tg.start(c.proxy.serve)
            try:
                for nid in c.initial:
                    c.start(nid)
                await anyio.to_thread.run_sync(c.wait_healthy, 90.0)
                pid = c.nodes["n1"].pid
                assert pid is not None
                c.kill("n1", signal.SIGKILL)
                assert c.process_state("n1") == "dead"
                with pytest.raises(ProcessLookupError):
                    os.kill(pid, 0)
                c.start("n1")
                assert c.nodes["n1"].pid != pid and c.nodes["n1"].alive()
                c.pause("n2")
                deadline = time.monotonic() + 5
                while c.process_state("n2") != "T" and time.monotonic() < deadline:
                    await anyio.sleep(0.01)  # polling interval of a deadline-bounded wait
                assert c.process_state("n2") == "T"
                # a stopped process does not answer, even asked directly
                ask = functools.partial(fetch_status_sync, c.nodes["n2"].listen, 0.5)
                assert await anyio.to_thread.run_sync(ask) is None
                c.resume("n2")
                await anyio.to_thread.run_sync(c.wait_healthy, 60.0)
            finally:
                await anyio.to_thread.run_sync(c.stop)
                tg.cancel_scope.cancel()

    anyio.run(main)


def test_the_cluster_config_names_the_storage_backend(tmp_path: Path) -> None:
    for backend in ("lmdb", "rocksdb"):
        c = ChaosCluster(tmp_path / backend, n=3, spare=0, storage=backend)
        c.plan()
        try:
            for nid in c.initial:
                text = (c.root / f"{nid}.toml").read_text()
                assert f'[storage]\nbackend = "{backend}"\nsync = true' in text
        finally:
            c.stop()
