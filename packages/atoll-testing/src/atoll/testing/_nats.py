"""A real ``nats-server`` process for tests and benchmarks: start, wait until ready, stop.

Owns: finding the binary, choosing a free loopback port (kept across restarts), writing
a small config file, and polling until the server answers with its ``INFO`` line.
Never: sleeps blindly (every wait polls with a deadline), or skips when the binary is
missing (it raises, naming what to install).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["NatsServer", "NatsServerError", "find_nats_server"]

_FALLBACK_PATHS = ("/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/usr/bin/nats-server")


class NatsServerError(RuntimeError):
    """The nats-server binary is missing, or the server did not start or stop."""


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary: ``$ATOLL_NATS_SERVER``, ``$PATH``, then usual places.

    :raises NatsServerError: it is nowhere to be found.
    """
    env = os.environ.get("ATOLL_NATS_SERVER")
    if env:
        if os.access(env, os.X_OK):
            return env
        raise NatsServerError(f"ATOLL_NATS_SERVER={env!r} is not an executable file")
    found = shutil.which("nats-server")
    if found:
        return found
    for path in _FALLBACK_PATHS:
        if os.access(path, os.X_OK):
            return path
    raise NatsServerError(
        "the nats-server binary was not found (looked at $ATOLL_NATS_SERVER, $PATH and "
        f"{', '.join(_FALLBACK_PATHS)}); install NATS server 2.9+ "
        "(https://github.com/nats-io/nats-server/releases) or set ATOLL_NATS_SERVER"
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One ``nats-server`` on loopback. Restartable: the port stays the same.

    :param max_payload: the server's ``max_payload`` in bytes (its default is 1 MiB).
    :param start_timeout: how long :meth:`start` polls for readiness before giving up.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_payload: int | None = None,
        binary: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.max_payload = max_payload
        self.binary = binary or find_nats_server()
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="atoll-nats-")
        self._log = Path(self._dir.name) / "nats.log"

    @property
    def url(self) -> str:
        """``nats://host:port`` for clients."""
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and return once it accepts clients.

        :raises NatsServerError: it exited or did not become ready within ``start_timeout``.
        """
        if self.running:
            return
        conf = Path(self._dir.name) / "nats.conf"
        lines = [f'listen: "{self.host}:{self.port}"']
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        conf.write_text("\n".join(lines) + "\n")
        log = self._log.open("ab")
        try:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with code {self._proc.returncode} on port "
                    f"{self.port}:\n{self.log_tail()}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise NatsServerError(
                    f"nats-server on port {self.port} was not ready within "
                    f"{self.start_timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.01)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.settimeout(0.5)
                return s.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        # The port is free once nobody answers on it.
        deadline = time.monotonic() + timeout
        while self._answers() and time.monotonic() < deadline:
            time.sleep(0.01)

    def restart(self) -> None:
        """Stop and start again on the same port (clients see a disconnect/reconnect)."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log (for error messages)."""
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop the server and remove its temporary files."""
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
