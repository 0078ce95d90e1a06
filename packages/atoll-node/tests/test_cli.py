"""atoll-node's command line: a bad configuration is one line on stderr and exit code 2;
a node runs on the event loop its configuration names."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from atoll.node._cli import main


def test_a_bad_event_loop_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nevent_loop = "tokio"\n')
    assert main(["--config", str(cfg)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "atoll-node: node.event_loop = 'tokio' is not one of auto, uvloop, asyncio"
    ]


def test_uvloop_asked_for_but_missing_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'[node]\nevent_loop = "uvloop"\ndata_dir = "{tmp_path / "d"}"\n')
    assert main(["--config", str(cfg)]) == 2
    assert "uvloop is not installed" in capsys.readouterr().err
