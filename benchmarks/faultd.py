"""An independent CWLogger daemon for fault benchmarks (stdlib only).

    python benchmarks/faultd.py --address @name [--mode ok] [--fault error]
        [--every 3] [--delay 0.5] [--backlog 1024]
        [--events FILE] [--journal FILE] [--head CHARS]

It follows the daemon's protocol (PROTOCOL.md) and shares no code with the
package or its stand-in, so the two cannot be wrong together: one accept
loop that serves one connection at a time, reads until its buffer ends with
a newline, decodes ONE JSON document, answers with the daemon's replies and
limits, and hangs up without a reply when the request is not JSON.
``--mode`` makes it misbehave on purpose:

``ok``       acknowledge, as the daemon does;
``error``    refuse every ``--every``-th request ("too many events in queue");
``delay``    sleep ``--delay`` seconds before acknowledging;
``close``    read the request, then hang up without a reply;
``cutoff``   hang up in the middle of a large request (one that does not
             arrive in one read of ``--chunk`` bytes); serve the others;
``noaccept`` keep listening but stop accepting, so the backlog fills.

Like the daemon, it refuses events ("too many events in queue") once it
holds 100000; it uploads nothing, so that is after 100000 acknowledgements.

SIGUSR2 switches to the ``--fault`` mode, SIGUSR1 back to ``ok``, SIGTERM
stops it once the connection it serves is done.  Each acknowledged event is
one flushed JSON line in ``--events`` (written when the event is queued,
before the reply, as the daemon does), and the ``--journal`` gets one JSON
line per thing worth counting: ``ready``, ``mode``, ``hangup`` (the client
left before its reply), ``refused``, ``noreply``, ``wedged`` (an empty
message was acknowledged).  All times are ``time.monotonic()``, one clock for
every process on Linux, so a harness can compare them with its own.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

MODES = ("ok", "error", "delay", "close", "cutoff", "noaccept")
MAX_EVENT_BYTES = 262144  # message bytes + 26 may not exceed this
QUEUE_SIZE = 100000
QUEUE_FULL = "Exception('too many events in queue')"


class InvalidMessage(Exception):
    """The daemon's own exception for an event it cannot upload."""


def parse_address(text: str) -> str:
    """``@name`` or ``\\0name`` (as two characters or a NUL) or a path."""
    if text.startswith("@"):
        return "\0" + text[1:]
    if text.startswith("\\0"):
        return "\0" + text[2:]
    return text


@dataclass
class Event:
    """One event the daemon queued."""

    message: str
    timestamp: int | None


@dataclass
class Daemon:
    """The accept loop and what it counts."""

    address: str
    mode: str = "ok"
    fault: str = "ok"
    every: int = 3
    delay: float = 0.5
    backlog: int = 1024
    read_timeout: float = 30.0
    #: cutoff mode: a request longer than this is hung up on after one read.
    chunk: int = 4096
    head: int | None = None
    events: IO[str] | None = None
    journal: IO[str] | None = None
    requests: int = 0
    in_mode: int = 0  # requests since the last change of mode
    queued: int = 0
    hangups: int = 0
    listener: socket.socket | None = field(default=None, repr=False)
    #: Mode changes not yet written to the journal: (time, mode).
    changes: list[tuple[float, str]] = field(default_factory=list)
    stopping: bool = False
    #: Leave when this process is no longer the parent (the harness died).
    parent: int | None = None

    # -- setup --------------------------------------------------------------

    def bind(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if not self.address.startswith("\0"):
            remove_stale_socket(self.address)
        listener.bind(self.address)
        listener.listen(self.backlog)
        self.listener = listener
        self.note("ready", pid=os.getpid(), backlog=self.backlog)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            if not self.address.startswith("\0"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.address)

    def set_mode(self, mode: str) -> None:
        """Switch modes (called from a signal handler: no I/O here, or a
        write to the journal could interrupt another and raise)."""
        self.mode = mode
        self.in_mode = 0
        self.changes.append((time.monotonic(), mode))

    # -- the loop -----------------------------------------------------------

    def serve(self) -> None:
        listener = self.listener
        assert listener is not None
        while not self.stopping:
            while self.changes:
                at, mode = self.changes.pop(0)
                self.note("mode", mode=mode, at=at)
            if self.mode == "noaccept":
                time.sleep(0.002)
                if self.parent is not None and os.getppid() != self.parent:
                    return
                continue
            # select() with a short timeout, so that a switch to noaccept
            # takes effect at once instead of after the next connection.
            readable, _, _ = select.select([listener], [], [], 0.05)
            if self.parent is not None and os.getppid() != self.parent:
                return
            if not readable or self.mode == "noaccept":
                continue
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            with conn:
                self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        request = self.read(conn)
        if request is None:
            return
        self.requests += 1
        self.in_mode += 1
        mode = self.mode
        if mode == "close":
            self.note("noreply", reason="close mode")
            return
        if mode == "error" and self.in_mode % max(1, self.every) == 0:
            self.refuse(conn, QUEUE_FULL)
            return
        if mode == "delay":
            time.sleep(self.delay)
        try:
            body = parse_request(request)
        except ValueError as error:  # not UTF-8, not JSON, several documents
            self.note("noreply", reason=repr(error)[:200])
            return
        try:
            event = make_event(body)
        except Exception as error:  # the daemon replies with any
            self.refuse(conn, repr(error))
            return
        if self.queued >= QUEUE_SIZE:  # it holds them all: it uploads nothing
            self.refuse(conn, QUEUE_FULL)
            return
        self.queue(event)
        # A percentage: PROTOCOL.md's 12 events are 0.012 (percent) full.
        full = 100 * self.queued / QUEUE_SIZE
        self.reply(
            conn,
            {"status": "ok", "health": {"queue_length": self.queued, "queue_percent_full": full}},
        )

    def read(self, conn: socket.socket) -> bytes | None:
        """The request, or None when there is none to answer: the client
        ended before the newline, or (cutoff mode) the request is large
        and the connection is closed with the rest of it unread."""
        if self.mode == "cutoff":
            request = read_request(conn, self.read_timeout, self.chunk, whole=False)
            reason = "hung up mid-request"
        else:
            request = read_request(conn, self.read_timeout)
            reason = "connection ended before the newline"
        if request.endswith(b"\n"):
            return request
        self.note("noreply", reason=reason, size=len(request))
        return None

    def refuse(self, conn: socket.socket, error: str) -> None:
        self.note("refused", reason=error[:200])
        self.reply(conn, {"status": "error", "message": error})

    def queue(self, event: Event) -> None:
        self.queued += 1
        message = event.message
        if not message:
            # CloudWatch refuses it; the real daemon then retries forever.
            self.note("wedged", reason="acknowledged an empty message")
        if self.events is not None:
            line: dict[str, object] = {
                "t": time.monotonic(),
                "timestamp": event.timestamp,
                "bytes": len(message.encode("utf-8")),
                "message": message,
            }
            if self.head is not None and len(message) > self.head:
                line["message"] = message[: self.head]
                line["tail"] = message[-self.head :]
            self.events.write(json.dumps(line) + "\n")
            self.events.flush()

    def reply(self, conn: socket.socket, reply: dict[str, Any]) -> None:
        try:
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError) as error:
            # The real daemon logs a traceback here, once per record.
            self.hangups += 1
            self.note("hangup", error=type(error).__name__)

    def note(self, kind: str, **details: object) -> None:
        if self.journal is not None:
            self.journal.write(json.dumps({"kind": kind, "t": time.monotonic(), **details}) + "\n")
            self.journal.flush()


def read_request(
    conn: socket.socket, timeout: float, size: int = 65536, *, whole: bool = True
) -> bytes:
    """Read until the buffer ends with a newline or the client stops (or
    is silent for ``timeout`` seconds: a kernel timeout, cheaper than
    Python's, which polls before every call); without ``whole``, one read."""
    seconds = int(timeout)
    timeval = struct.pack("ll", seconds, int((timeout - seconds) * 1e6))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    buffer = bytearray()
    try:
        while not buffer.endswith(b"\n"):
            chunk = conn.recv(size)
            if not chunk:
                break
            buffer += chunk
            if not whole:
                break
    except OSError:
        pass
    return bytes(buffer)


def parse_request(request: bytes) -> Any:
    """The one JSON document before the newline.  Raises ValueError for what
    the daemon answers with silence: invalid UTF-8 or JSON, an empty line,
    two documents."""
    return json.loads(request[:-1].decode("utf-8"))


def make_event(body: Any) -> Event:
    """The event a request describes; any exception becomes an error reply
    holding its repr, as in the daemon."""
    message = body["message"]
    timestamp = body["timestamp"]
    if timestamp is not None:
        if type(timestamp) is not int:
            raise TypeError("timestamp must be an int")  # noqa: EM101
        if timestamp < 0:
            raise ValueError("Event.timestamp must be non-negative")  # noqa: EM101
    size = len(message.encode("utf-8"))  # UnicodeEncodeError on lone surrogates
    if size + 26 > MAX_EVENT_BYTES:
        raise InvalidMessage("message too large")  # noqa: EM101
    return Event(message, timestamp)


def remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a daemon that died, as daemons do; refuse
    to take over one that still answers."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        msg = f"{path} exists and is not a socket"
        raise SystemExit(msg)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as error:
        if error.errno != errno.ECONNREFUSED:
            raise
        os.unlink(path)
    else:
        msg = f"another daemon listens on {path}"
        raise SystemExit(msg)
    finally:
        probe.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--address", required=True, help="@name, \\0name or /path")
    parser.add_argument("--mode", choices=MODES, default="ok", help="mode at start")
    parser.add_argument("--fault", choices=MODES, default=None, help="mode SIGUSR2 turns on")
    parser.add_argument("--every", type=int, default=3, help="error mode: refuse every N-th")
    parser.add_argument("--delay", type=float, default=0.5, help="delay mode: seconds")
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument("--read-timeout", type=float, default=30.0)
    parser.add_argument("--chunk", type=int, default=4096, help="cutoff mode: bytes read")
    parser.add_argument("--events", help="append acknowledged events here (JSON lines)")
    parser.add_argument("--journal", help="append ready/mode/hangup/... here (JSON lines)")
    parser.add_argument("--head", type=int, default=None, help="keep this many characters")
    parser.add_argument("--parent", type=int, default=None, help="exit when this pid is gone")
    args = parser.parse_args(argv)

    events = open(args.events, "a", encoding="utf-8") if args.events else None  # noqa: SIM115
    journal = open(args.journal, "a", encoding="utf-8") if args.journal else None  # noqa: SIM115
    daemon = Daemon(
        address=parse_address(args.address),
        mode=args.mode,
        fault=args.fault or args.mode,
        every=args.every,
        delay=args.delay,
        backlog=args.backlog,
        read_timeout=args.read_timeout,
        chunk=args.chunk,
        head=args.head,
        parent=args.parent,
        events=events,
        journal=journal,
    )

    def on_signal(signum: int, frame: object) -> None:
        if signum == signal.SIGTERM:
            daemon.stopping = True  # after the connection it is serving
        else:
            daemon.set_mode(daemon.fault if signum == signal.SIGUSR2 else "ok")

    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, on_signal)
    try:
        daemon.bind()
        print(f"ready {os.getpid()} {time.monotonic()!r}", flush=True)
        daemon.serve()
    finally:
        daemon.close()
        print(
            f"faultd: requests={daemon.requests} queued={daemon.queued} hangups={daemon.hangups}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
