"""Config loading: defaults, TOML, environment overrides and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from atoll.core import AtollConfig, ConfigError, load_config, parse_config


def test_defaults_are_embedded_and_safe() -> None:
    cfg = load_config(None, environ={})
    assert isinstance(cfg, AtollConfig)
    assert cfg.storage.backend == "lmdb"
    assert cfg.storage.sync is True
    assert cfg.transport.backend == "tcp"


def test_toml_file(tmp_path: Path) -> None:
    p = tmp_path / "node.toml"
    p.write_text(
        '[node]\nid = "n2"\nlisten = "127.0.0.1:7402"\nseeds = ["127.0.0.1:7401"]\n'
        '[storage]\nbackend = "rocksdb"\nsync = false\n'
        '[transport]\nbackend = "nats"\nservers = ["nats://127.0.0.1:4222"]\n'
    )
    cfg = load_config(p, environ={})
    assert cfg.node.id == "n2"
    assert cfg.node.seeds == ["127.0.0.1:7401"]
    assert cfg.storage.backend == "rocksdb"
    assert cfg.storage.sync is False
    assert cfg.transport.backend == "nats"


def test_environment_overrides() -> None:
    cfg = parse_config(
        {"storage": {"backend": "lmdb"}},
        environ={
            "ATOLL_STORAGE_BACKEND": "rocksdb",
            "ATOLL_STORAGE_SYNC": "off",
            "ATOLL_NODE_SEEDS": "127.0.0.1:1, 127.0.0.1:2",
            "ATOLL_LIMITS_MAX_VALUE_BYTES": "2048",
            "UNRELATED": "x",
        },
    )
    assert cfg.storage.backend == "rocksdb"
    assert cfg.storage.sync is False
    assert cfg.node.seeds == ["127.0.0.1:1", "127.0.0.1:2"]
    assert cfg.limits.max_value_bytes == 2048


@pytest.mark.parametrize(
    ("doc", "env", "message"),
    [
        ({"storage": {"backnd": "x"}}, {}, "unknown key 'storage.backnd' (accepted in [storage]:"),
        ({"storag": {}}, {}, "unknown section [storag]"),
        (
            {"storage": {"sync": "yes"}},
            {},
            "storage.sync = 'yes' is not valid: expected true or false",
        ),
        (
            {"transport": {"max_frame_mb": 0}},
            {},
            "transport.max_frame_mb = 0 must be greater than zero",
        ),
        (
            {"node": {"listen": "nowhere"}},
            {},
            "node.listen = 'nowhere' is not of the form host:port",
        ),
        ({"node": {"listen": "h:70000"}}, {}, "port 70000 is outside 0-65535"),
        ({"node": {"id": "bad id!"}}, {}, "node.id = 'bad id!' is not valid"),
        (
            {"node": {"client_listen": "127.0.0.1:9000"}},
            {},
            "node.client_listen = '127.0.0.1:9000' is not supported yet",
        ),
        ({"node": {"seeds": "127.0.0.1:1"}}, {}, "expected a list of a string"),
        ({}, {"ATOLL_STORAGE_SYNC": "maybe"}, "storage.sync = 'maybe' is not valid"),
        ({}, {"ATOLL_STORAGE_NOPE": "1"}, "unknown environment override ATOLL_STORAGE_NOPE"),
        ({"limits": {"max_key_bytes": True}}, {}, "limits.max_key_bytes = True is not valid"),
    ],
)
def test_bad_config_names_key_value_and_accepted(
    doc: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(doc, environ=env)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nid=")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)
