"""faultd.py with the real daemon's queue: drained about once a second.

    python benchmarks/spool_daemon.py --address @name --events FILE [faultd options]

The real daemon holds what it acknowledged in a queue of 100000 events,
uploads it about once a second, and refuses events while the queue is full
(PROTOCOL.md); ``queue_percent_full`` in each reply says how full it is.
faultd.py counts every event it ever queued, so a replayer pacing itself on
that figure would stop for good; this daemon drains it every ``--drain``
seconds instead, and refuses when it is full, as the real one does.

:class:`Running` starts one in a process of its own, for the benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import faultd

HERE = Path(__file__).resolve().parent


class DrainingDaemon(faultd.Daemon):
    """faultd's accept loop; its queue is emptied every ``drain`` seconds."""

    drain = 1.0
    drained = 0.0

    def handle(self, conn: socket.socket) -> None:
        now = time.monotonic()
        if now - self.drained >= self.drain:
            self.queued, self.drained = 0, now  # uploaded
        if self.queued < faultd.QUEUE_SIZE:
            super().handle(conn)
            return
        request = faultd.read_request(conn, self.read_timeout)
        if request.endswith(b"\n"):
            self.requests += 1
            self.note("refused", reason=faultd.QUEUE_FULL)
            self.reply(conn, {"status": "error", "message": faultd.QUEUE_FULL})


def main() -> int:
    faultd.Daemon = DrainingDaemon  # type: ignore[misc]  # main() builds this one
    return faultd.main()


class Running:
    """A draining daemon in its own process on ``address``, writing each
    event it queued to ``events`` (a JSON line: time, timestamp, message)."""

    def __init__(self, address: str, events: Path, *args: str) -> None:
        self.address, self.events, self.args = address, events, args
        self.process: subprocess.Popen[str] | None = None
        self.ready = 0.0
        self._read = 0  # bytes of the events file already read

    def start(self) -> float:
        """Start it; return the ``time.monotonic()`` it began to listen."""
        shown = "@" + self.address[1:] if self.address.startswith("\0") else self.address
        command = [sys.executable, str(HERE / "spool_daemon.py"), "--address", shown]
        command += ["--events", str(self.events), "--parent", str(os.getpid()), *self.args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if len(line) != 3 or line[0] != "ready":
            msg = f"spool_daemon did not start: {line!r}"
            raise RuntimeError(msg)
        self.ready = float(line[2])
        return self.ready

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def messages(self) -> list[tuple[float, str]]:
        """(time queued, message) of each event queued since the last call."""
        if not self.events.exists():
            return []
        with open(self.events, "rb") as file:
            file.seek(self._read)
            data = file.read()
        whole = data[: data.rfind(b"\n") + 1]
        self._read += len(whole)
        events = [json.loads(line) for line in whole.splitlines()]
        return [(event["t"], event["message"]) for event in events]


if __name__ == "__main__":
    sys.exit(main())
