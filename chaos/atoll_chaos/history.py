"""Operation histories: what the chaos clients did, as Jepsen-style events and as ops.

Owns: the event record (``invoke`` / ``ok`` / ``fail`` / ``info``) with monotonic
timestamps, a thread- and task-safe recorder that appends them to a JSON-lines file, and
pairing events into :class:`Op` records for the checker.
Never: judges a history (that is :mod:`atoll_chaos.checker`) or talks to a cluster.

Meaning of the completion types (as in Jepsen):

* ``ok``   -- the operation happened, with the recorded output;
* ``fail`` -- the operation certainly did not happen (dropped before checking);
* ``info`` -- the outcome is unknown: it may have happened, at any time after its
  invocation, or never. Its completion time is +infinity.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

__all__ = [
    "Event",
    "EventType",
    "HistoryRecorder",
    "Op",
    "OpKind",
    "OpStatus",
    "load_events",
    "pair_events",
]

EventType = Literal["invoke", "ok", "fail", "info"]
OpKind = Literal["get", "put", "delete", "cas"]
OpStatus = Literal["ok", "fail", "info"]


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a history: a call or its completion.

    ``value`` is the input on ``invoke`` (put: the value; cas: ``[expected, new]``) and the
    output on ``ok`` (get: the value read; cas: ``[swapped, previous]``; delete: whether
    the key existed). Values are text or None (absent).
    """

    index: int
    type: EventType
    process: int
    f: OpKind
    key: str
    value: Any
    time: float
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (the on-disk line)."""
        d: dict[str, Any] = {
            "index": self.index,
            "type": self.type,
            "process": self.process,
            "f": self.f,
            "key": self.key,
            "value": self.value,
            "time": self.time,
        }
        if self.error is not None:
            d["error"] = self.error
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        """Inverse of :meth:`to_json`."""
        return cls(
            int(d["index"]),
            d["type"],
            int(d["process"]),
            d["f"],
            str(d["key"]),
            d.get("value"),
            float(d["time"]),
            d.get("error"),
        )


@dataclass(frozen=True, slots=True)
class Op:
    """A paired operation as the checker sees it.

    ``call``/``ret`` are monotonic seconds; ``ret`` is ``math.inf`` for ``info``.
    ``arg``: put -> value; cas -> (expected, new); get/delete -> None.
    ``out``: get -> value read; cas -> (swapped, previous or None); delete -> existed;
    put -> None. Meaningless when ``status == "info"``.
    """

    id: int
    process: int
    key: str
    f: OpKind
    arg: Any
    out: Any
    status: OpStatus
    call: float
    ret: float

    def describe(self) -> str:
        """A short human label: ``cas(a->b)=ok``."""
        if self.f == "get":
            body = "get"
            res = "?" if self.status == "info" else _show(self.out)
        elif self.f == "put":
            body, res = f"put({_show(self.arg)})", "ok"
        elif self.f == "delete":
            body = "delete"
            res = "existed" if self.out else "absent"
        else:
            body = f"cas({_show(self.arg[0])}->{_show(self.arg[1])})"
            res = ("ok" if self.out[0] else "failed") if self.status == "ok" else "?"
        if self.status == "info":
            res = "?"
        return f"{body}={res}"


def _show(v: Any) -> str:
    return "nil" if v is None else str(v)


@dataclass
class HistoryRecorder:
    """Appends events to memory and (optionally) a JSON-lines file, in completion order.

    Timestamps come from ``time.monotonic`` in this process: every client of a run lives
    here, so real-time order between events is the order of their timestamps.
    """

    path: Path | None = None
    events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0
    _file: Any = None

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 -- closed by close()

    def invoke(self, process: int, f: OpKind, key: str, value: Any) -> Event:
        """Record a call; returns its event (pass it to :meth:`complete`)."""
        return self._append("invoke", process, f, key, value, None)

    def complete(
        self, call: Event, type_: EventType, value: Any = None, error: str | None = None
    ) -> Event:
        """Record the completion (``ok``/``fail``/``info``) of ``call``."""
        if type_ == "invoke":
            raise ValueError("a completion cannot be of type 'invoke'")
        return self._append(type_, call.process, call.f, call.key, value, error)

    def _append(
        self,
        type_: EventType,
        process: int,
        f: OpKind,
        key: str,
        value: Any,
        error: str | None,
    ) -> Event:
        with self._lock:
            ev = Event(self._next, type_, process, f, key, value, time.monotonic(), error)
            self._next += 1
            self.events.append(ev)
            if self._file is not None:
                self._file.write(orjson.dumps(ev.to_json()) + b"\n")
            return ev

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def load_events(path: Path) -> list[Event]:
    """Read a JSON-lines history written by :class:`HistoryRecorder`."""
    with open(path, "rb") as f:
        return [Event.from_json(orjson.loads(line)) for line in f if line.strip()]


def pair_events(events: Iterable[Event]) -> list[Op]:
    """Pair each process's invoke with its next completion.

    A process has at most one operation in flight (as in Jepsen); an invoke left without
    a completion (the run ended) becomes ``info``. ``fail`` ops are kept here (the
    checker drops them) so counts can be reported.
    """
    open_calls: dict[int, Event] = {}
    ops: list[Op] = []

    def mk(call: Event, status: OpStatus, out: Any, ret: float) -> Op:
        arg = call.value
        if call.f == "cas" and arg is not None:
            arg = (arg[0], arg[1])
        if call.f == "cas" and status == "ok":
            out = (bool(out[0]), out[1])
        return Op(len(ops), call.process, call.key, call.f, arg, out, status, call.time, ret)

    for ev in sorted(events, key=lambda e: e.index):
        if ev.type == "invoke":
            if ev.process in open_calls:
                raise ValueError(
                    f"process {ev.process} invoked event {ev.index} while event "
                    f"{open_calls[ev.process].index} was still open"
                )
            open_calls[ev.process] = ev
            continue
        call = open_calls.pop(ev.process, None)
        if call is None:
            raise ValueError(f"completion event {ev.index} has no open invoke")
        if ev.type == "info":
            ops.append(mk(call, "info", None, math.inf))
        else:
            ops.append(mk(call, ev.type, ev.value, ev.time))
    for call in open_calls.values():
        ops.append(mk(call, "info", None, math.inf))
    return ops


def iter_keys(ops: Iterable[Op]) -> Iterator[str]:
    """Distinct keys in first-seen order."""
    seen: dict[str, None] = {}
    for op in ops:
        seen.setdefault(op.key, None)
    yield from seen
