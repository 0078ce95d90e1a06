"""loop_options: node.event_loop and --event-loop to anyio's backend options."""

from __future__ import annotations

import importlib.util

import pytest

from atoll.core import ConfigError, NodeConfig, loop_options, parse_config


def test_auto_picks_uvloop_when_installed_and_asyncio_is_plain() -> None:
    pytest.importorskip("uvloop")  # atoll-node depends on it; atoll-core alone does not
    assert loop_options("auto") == {"use_uvloop": True}
    assert loop_options("uvloop") == {"use_uvloop": True}
    assert loop_options("asyncio") == {}


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    assert loop_options("auto") == {}
    with pytest.raises(ConfigError, match=r"event_loop = 'uvloop' but uvloop is not installed"):
        loop_options("uvloop")


def test_unknown_loops_are_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="--event-loop = 'tokio' is not one of auto, uvloop"):
        loop_options("tokio", what="--event-loop")
    with pytest.raises(ConfigError, match=r"node\.event_loop = 'trio' is not one of"):
        NodeConfig(event_loop="trio")
    assert parse_config({"node": {"event_loop": "asyncio"}}).node.event_loop == "asyncio"
    assert NodeConfig().event_loop == "auto"


def test_running_loop_name_names_the_loop_actually_running() -> None:
    import anyio

    from atoll.core import running_loop_name

    async def name() -> str:
        return running_loop_name()

    assert running_loop_name() == ""
    assert anyio.run(name, backend_options=loop_options("asyncio")) == "asyncio"
    if importlib.util.find_spec("uvloop") is not None:
        assert anyio.run(name, backend_options=loop_options("uvloop")) == "uvloop"
