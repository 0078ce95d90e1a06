"""Typed node configuration: a TOML file plus ``ATOLL_<SECTION>_<KEY>`` environment overrides.

Owns: the config sections, loading, validation and the error messages for bad input.
Never: checks that a named backend is installed (the plugin layer does, because only it
knows what is installed).

Every problem raises :class:`ConfigError` with one line naming the key, the bad value
and what would have been accepted.
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._errors import ConfigError

__all__ = [
    "EVENT_LOOPS",
    "AtollConfig",
    "ClusterConfig",
    "LimitsConfig",
    "NodeConfig",
    "RaftSettings",
    "StorageConfig",
    "TelemetryConfig",
    "TransportConfig",
    "load_config",
    "parse_address",
    "parse_config",
]


def parse_address(value: str, *, what: str = "address") -> tuple[str, int]:
    """Split ``"host:port"`` (``"[::1]:7401"`` for IPv6) into its parts, or raise ConfigError."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ConfigError(f"{what} = {value!r} is not of the form host:port")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what} = {value!r}: port {port} is outside 0-65535")
    return host.strip("[]"), port


def _positive(inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value <= 0:
        raise ValueError("must be greater than zero")


EVENT_LOOPS = ("auto", "uvloop", "asyncio")
"""The accepted values of ``node.event_loop`` (see :func:`atoll.core.loop_options`)."""


@attrs.define(kw_only=True)
class NodeConfig:
    """``[node]``: who this node is and where it keeps its data."""

    id: str = "n1"
    listen: str = "127.0.0.1:7401"
    """Address the node's transport binds (host:port)."""
    advertise: str = ""
    """Address others should use, if not ``listen`` (behind NAT, in containers)."""
    client_listen: str = ""
    """Reserved for a separate client port, which is not built yet: clients connect to
    ``listen``. Setting it is a configuration error rather than a silent no-op."""
    zone: str = "z1"
    rack: str = "r1"
    host: str = ""
    data_dir: str = "./data/n1"
    seeds: list[str] = attrs.field(factory=list)
    tags: dict[str, str] = attrs.field(factory=dict)
    event_loop: str = "auto"
    """``auto`` (uvloop when it is installed, else asyncio's own loop), ``uvloop`` (an
    error if it is not installed) or ``asyncio``."""

    def __attrs_post_init__(self) -> None:
        if self.event_loop not in EVENT_LOOPS:
            raise ConfigError(
                f"node.event_loop = {self.event_loop!r} is not one of {', '.join(EVENT_LOOPS)}"
            )
        if not self.id or not all(c.isalnum() or c in "-_." for c in self.id):
            raise ConfigError(
                f"node.id = {self.id!r} is not valid (letters, digits, '-', '_', '.')"
            )
        parse_address(self.listen, what="node.listen")
        if self.advertise:
            parse_address(self.advertise, what="node.advertise")
        if self.client_listen:
            raise ConfigError(
                f"node.client_listen = {self.client_listen!r} is not supported yet: "
                f"clients connect to node.listen ({self.listen})"
            )
        for s in self.seeds:
            parse_address(s, what="node.seeds entry")


@attrs.define(kw_only=True)
class StorageConfig:
    """``[storage]``: which engine holds the data and how durably."""

    backend: str = "lmdb"
    sync: bool = True
    """fsync before acknowledging. ``false`` is UNSAFE: acknowledged writes can be lost."""
    map_size_mb: int = attrs.field(default=1024, validator=_positive)
    """LMDB: the map size ceiling in MiB (the database can never grow beyond it)."""
    options: dict[str, Any] = attrs.field(factory=dict)
    """Backend-specific settings, passed through to the engine."""


@attrs.define(kw_only=True)
class TransportConfig:
    """``[transport]``: how frames move between nodes."""

    backend: str = "tcp"
    servers: list[str] = attrs.field(factory=lambda: ["nats://127.0.0.1:4222"])
    """NATS: the server URLs."""
    subject_prefix: str = "atoll"
    """NATS: subjects are ``<prefix>.<node id>``."""
    max_frame_mb: int = attrs.field(default=64, validator=_positive)
    connect_timeout: float = attrs.field(default=2.0, validator=_positive)
    send_queue: int = attrs.field(default=1024, validator=_positive)
    """Frames queued per peer before ``send`` waits (backpressure)."""
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(kw_only=True)
class LimitsConfig:
    """``[limits]``: request size limits enforced at the client-facing edge."""

    max_key_bytes: int = attrs.field(default=4096, validator=_positive)
    max_value_bytes: int = attrs.field(default=1024 * 1024, validator=_positive)


def _member(value: str) -> tuple[str, str]:
    node_id, sep, address = value.partition("=")
    if not sep or not node_id or not address:
        raise ConfigError(
            f"cluster.initial_members entry {value!r} is not of the form id=address "
            "(host:port for tcp, the node's subject such as atoll.n1 for nats)"
        )
    return node_id, address


@attrs.define(kw_only=True)
class ClusterConfig:
    """``[cluster]``: how a new cluster bootstraps (like etcd's ``--initial-cluster``)."""

    id: str = "atoll"
    initial_members: list[str] = attrs.field(factory=list)
    """``"id=address"`` of the nodes that form the cluster and its meta group (the
    address is what the transport uses: ``host:port`` for tcp, ``atoll.<id>`` for nats). Every
    initial member lists the same set. Empty: this node alone bootstraps a cluster (if
    it has no seeds) or joins through ``node.seeds``."""
    partitions: int = attrs.field(default=64, validator=_positive)
    """Partitions of the default keyspace created at bootstrap."""
    replication_factor: int = attrs.field(default=3, validator=_positive)
    """Replicas per partition of the default keyspace (capped at the member count)."""

    def __attrs_post_init__(self) -> None:
        seen: set[str] = set()
        for m in self.initial_members:
            node_id, _ = _member(m)
            if node_id in seen:
                raise ConfigError(f"cluster.initial_members names {node_id!r} twice")
            seen.add(node_id)

    def members(self) -> dict[str, str]:
        """``initial_members`` as ``{node id: address}``."""
        return dict(_member(m) for m in self.initial_members)


@attrs.define(kw_only=True)
class RaftSettings:
    """``[raft]``: consensus timing and features, shared by every group on the node."""

    tick_ms: int = attrs.field(default=50, validator=_positive)
    """One logical Raft tick. Heartbeats go out every ``heartbeat_ticks`` ticks."""
    election_ticks: int = attrs.field(default=10, validator=_positive)
    """Election timeout base in ticks (randomised in [base, 2*base))."""
    heartbeat_ticks: int = attrs.field(default=2, validator=_positive)
    """Heartbeat interval in ticks (100 ms by default, a fifth of the election timeout,
    as TiKV runs it): every non-quiesced group sends one to each follower, so with many
    active partitions heartbeats are a large share of all Raft messages."""
    lease_reads: bool = True
    """Serve linearizable reads from the leader lease when it is valid (else ReadIndex)."""
    max_clock_drift_ms: int = 50
    """How far clocks may drift apart over an election timeout; shortens the lease."""
    snapshot_interval_entries: int = attrs.field(default=100_000, validator=_positive)
    """Snapshot a group and compact its log every this many applied entries (etcd's
    default ``--snapshot-count``). Building a snapshot serialises the partition on the
    event loop (about 13 ms for 10,000 100-byte keys), so a small interval shows in the
    tail latency; a large one keeps more log on disk (about 200 bytes per entry)."""
    request_timeout_ms: int = attrs.field(default=5000, validator=_positive)
    """How long the node waits for a proposal to apply or a read to be confirmed."""
    log_storage: str = "auto"
    """Where the Raft log and hard state live: ``"wal"`` (an append-only file set in
    ``<data_dir>/raftwal``, like etcd's WAL), ``"engine"`` (the storage engine's own
    namespaces) or ``"auto"``: the WAL on LMDB, whose copy-on-write pages make every
    log append cost a page per group, the engine on the others. A directory written
    with the engine moves its log into the WAL when it first opens in WAL mode; the
    way back is refused."""
    wal_segment_mb: int = attrs.field(default=64, validator=_positive)
    """Size at which the WAL starts a new segment file (old ones are deleted once the
    entries in them are compacted)."""

    def __attrs_post_init__(self) -> None:
        if self.log_storage not in ("auto", "wal", "engine"):
            raise ConfigError(
                f"raft.log_storage = {self.log_storage!r} is not one of 'auto', 'wal', 'engine'"
            )
        if self.heartbeat_ticks >= self.election_ticks:
            raise ConfigError(
                f"raft.heartbeat_ticks = {self.heartbeat_ticks} must be below "
                f"raft.election_ticks = {self.election_ticks}"
            )


@attrs.define(kw_only=True)
class TelemetryConfig:
    """``[telemetry]``: the HTTP endpoint for /metrics, /livez and /readyz."""

    listen: str = ""
    """``host:port`` to serve on (port 0 picks one); empty disables the endpoint."""

    def __attrs_post_init__(self) -> None:
        if self.listen:
            parse_address(self.listen, what="telemetry.listen")


@attrs.define(kw_only=True)
class AtollConfig:
    """The whole node configuration."""

    node: NodeConfig = attrs.field(factory=NodeConfig)
    cluster: ClusterConfig = attrs.field(factory=ClusterConfig)
    storage: StorageConfig = attrs.field(factory=StorageConfig)
    transport: TransportConfig = attrs.field(factory=TransportConfig)
    raft: RaftSettings = attrs.field(factory=RaftSettings)
    limits: LimitsConfig = attrs.field(factory=LimitsConfig)
    telemetry: TelemetryConfig = attrs.field(factory=TelemetryConfig)


_SECTIONS: dict[str, type[Any]] = typing.get_type_hints(AtollConfig)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(key: str, tp: Any, value: Any, *, from_env: bool) -> Any:
    """Check ``value`` against ``tp`` (converting env strings) or raise ConfigError."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key} = {value!r} is not valid: expected {_describe(tp)}")
    if from_env and isinstance(value, str) and tp is not str:
        if tp is bool:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise bad
        if tp in (int, float):
            try:
                return tp(value)
            except ValueError:
                raise bad from None
        if origin is list:
            return [
                _coerce(key, typing.get_args(tp)[0], v.strip(), from_env=True)
                for v in value.split(",")
                if v.strip()
            ]
        raise bad
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (inner,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", inner, v, from_env=False) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    raise bad  # pragma: no cover - a section declared a type this loader does not know


def _build_section(name: str, cls: type[Any], raw: Mapping[str, Any], env_keys: set[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            accepted = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key '{name}.{key}' (accepted in [{name}]: {accepted})")
        kwargs[key] = _coerce(f"{name}.{key}", hints[key], value, from_env=key in env_keys)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        # attrs validators raise ValueError("must be ..."); find which key.
        for key, f in fields.items():
            if f.validator is not None and key in kwargs:
                try:
                    f.validator(None, f, kwargs[key])
                except ValueError:
                    raise ConfigError(f"{name}.{key} = {kwargs[key]!r} {exc}") from None
        raise ConfigError(f"[{name}]: {exc}") from None


def parse_config(
    doc: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> AtollConfig:
    """Validate a parsed TOML document (plus environment overrides) into an AtollConfig.

    ``ATOLL_STORAGE_BACKEND=rocksdb`` overrides ``[storage] backend``; list values in the
    environment are comma-separated.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, dict[str, Any]] = {}
    for section, body in doc.items():
        if section not in _SECTIONS:
            accepted = ", ".join(f"[{s}]" for s in _SECTIONS)
            raise ConfigError(f"unknown section [{section}] (accepted: {accepted})")
        if not isinstance(body, dict):
            raise ConfigError(f"[{section}] must be a table, not {type(body).__name__}")
        merged[section] = dict(body)
    env_keys: dict[str, set[str]] = {s: set() for s in _SECTIONS}
    for var, value in environ.items():
        if not var.startswith("ATOLL_") or var.count("_") < 2:
            continue
        rest = var[len("ATOLL_") :].lower()
        section, _, key = rest.partition("_")
        if section not in _SECTIONS:
            continue
        field_names = {f.name for f in attrs.fields(_SECTIONS[section])}
        if key not in field_names:
            accepted = ", ".join(
                f"ATOLL_{section.upper()}_{k.upper()}" for k in sorted(field_names)
            )
            raise ConfigError(f"unknown environment override {var} (accepted: {accepted})")
        merged.setdefault(section, {})[key] = value
        env_keys[section].add(key)
    built = {
        section: _build_section(section, cls, merged.get(section, {}), env_keys[section])
        for section, cls in _SECTIONS.items()
    }
    return AtollConfig(**built)


def load_config(
    path: str | os.PathLike[str] | None, *, environ: Mapping[str, str] | None = None
) -> AtollConfig:
    """Read and validate a TOML config file (None: defaults plus environment)."""
    if path is None:
        return parse_config({}, environ=environ)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
    return parse_config(doc, environ=environ)
