"""A local stand-in for the CWLogger daemon, for tests and the command line.

    with LocalDaemon() as daemon:
        handler = GlobusSocketHandler(daemon.address)
        logging.getLogger().addHandler(handler)
        logging.error("boom")
        assert daemon.wait_for(1)[0].message == "boom"

It speaks the daemon's protocol, answers one connection at a time, and
enforces the same limits with the same replies.  ``behaviour`` makes it fail
on purpose: ``"refuse"`` (error replies, as when its queue is full),
``"hang"`` (read requests but answer only once the behaviour changes, as
it then answers),
``"close"`` (hang up without a reply) or ``"stall"`` (stop accepting, so the
listen backlog fills); ``delay`` makes it slow.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Callable, Literal, Optional

from typing_extensions import Self, TypeAlias

from . import protocol

__all__ = ["Behaviour", "Event", "LocalDaemon"]

Behaviour: TypeAlias = Literal["ok", "refuse", "hang", "close", "stall"]

_QUEUE_SIZE = 100000  # the daemon's queue, for queue_percent_full


@dataclass(frozen=True)
class Event:
    """One event the stand-in acknowledged."""

    message: str
    #: Milliseconds since the epoch, as sent (None when the client sent null).
    timestamp: Optional[int]  # noqa: UP045  # dataclass fields are evaluated on 3.9


def _accept(request: bytes) -> Event | bytes | None:
    """What the daemon makes of one request: the event it accepts, the error
    reply it sends, or None when it hangs up without a reply."""
    try:
        body = json.loads(request.decode("utf-8"))
        message, timestamp = body["message"], body["timestamp"]
        if timestamp is not None:
            if type(timestamp) is not int:
                raise TypeError("timestamp must be an int")  # noqa: TRY301, EM101
            if timestamp < 0:
                raise ValueError("Event.timestamp must be non-negative")  # noqa: TRY301, EM101
        if len(message.encode("utf-8")) + 26 > 262144:
            return _error("InvalidMessage('message too large')")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # the daemon logs it and closes without a reply
    except Exception as error:  # the daemon replies with any error
        return _error(repr(error))
    return Event(message, timestamp)


def _error(message: str) -> bytes:
    return json.dumps({"status": "error", "message": message}).encode() + b"\n"


class LocalDaemon:
    """A stand-in for the CWLogger daemon on ``address`` (by default a fresh
    abstract name), served by a thread while the context is open."""

    #: The normalised address to give a handler.
    address: str
    #: How it treats the next connections; may be changed at any time.
    behaviour: Behaviour
    #: Seconds it waits before each reply (a slow daemon); may be changed too.
    delay: float
    #: The events it acknowledged, in order.
    events: list[Event]
    #: Every request it read, as raw bytes, acknowledged or not.
    requests: list[bytes]
    #: True once it acknowledged an empty message, which wedges the real daemon.
    wedged: bool
    #: Clients that hung up before their reply (the daemon logs each one).
    hangups: int
    #: The ``queue_percent_full`` each acknowledgement reports; None: the
    #: share of the real daemon's 100000-event queue that ``events`` fill.
    queue_percent_full: float | None

    def __init__(
        self,
        address: str | None = None,
        *,
        behaviour: Behaviour = "ok",
        backlog: int = 1024,
        on_event: Callable[[Event], object] | None = None,
    ) -> None:
        if address is None:
            address = "\0globus-cwlogger-standin-" + uuid.uuid4().hex
        self.address = protocol.parse_address(address)
        self.behaviour = behaviour
        self.delay = 0.0
        self.events = []
        self.requests = []
        self.wedged = False
        self.hangups = 0
        self.queue_percent_full = None
        self._backlog = backlog
        self._on_event = on_event
        self._held: list[tuple[socket.socket, bytes]] = []
        self._changed = threading.Condition()
        self._answered = 0  # events whose acknowledgement was sent
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind the address and start answering."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.address)
            listener.listen(self._backlog)
        except OSError:
            listener.close()
            raise
        listener.settimeout(0.02)  # to notice stop() and behaviour changes
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="LocalDaemon", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering, close held connections and release the address."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        for conn, _ in self._held:
            conn.close()
        self._held.clear()
        if self._listener is not None:
            self._listener.close()
            if not self.address.startswith("\0"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.address)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 5.0, *, strict: bool = False) -> list[Event]:
        """Wait until ``count`` events were acknowledged (their reply written),
        or ``timeout`` seconds passed, and return the events received so far;
        with ``strict``, fewer than ``count`` raise TimeoutError instead."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: self._answered >= count, timeout)
            if strict and not arrived:
                msg = f"{len(self.events)} of {count} events arrived within {timeout} s"
                raise TimeoutError(msg)
            return list(self.events)

    def _serve(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            if self.behaviour != "hang" and self._held:
                held, self._held = self._held, []
                for conn, request in held:  # answered as it would answer now
                    self._answer(conn, request)
            if self.behaviour == "stall":
                time.sleep(0.02)
                continue
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        request = b""
        try:
            while not request.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                request += chunk
        except OSError:
            pass
        self.requests.append(request)
        if self.behaviour == "hang":
            self._held.append((conn, request))
        else:
            self._answer(conn, request)

    def _answer(self, conn: socket.socket, request: bytes) -> None:
        behaviour = self.behaviour
        if behaviour == "close" or not request.endswith(b"\n"):
            conn.close()
        elif behaviour == "refuse":
            self._send(conn, _error("Exception('too many events in queue')"))
        else:
            self._reply(conn, request)

    def _reply(self, conn: socket.socket, request: bytes) -> None:
        if self.delay:
            time.sleep(self.delay)
        accepted = _accept(request)
        if isinstance(accepted, Event):
            event = accepted
            if not event.message:
                self.wedged = True
                sys.stderr.write("LocalDaemon: acknowledged an empty message (wedges the daemon)\n")
            self.events.append(event)  # there before its client has the reply
            length = len(self.events)
            full = self.queue_percent_full
            full = 100 * length / _QUEUE_SIZE if full is None else full
            health = {"queue_length": length, "queue_percent_full": full}
            self._send(conn, json.dumps({"status": "ok", "health": health}).encode() + b"\n")
            with self._changed:  # and wait_for() returns only once the reply is sent
                self._answered += 1
                self._changed.notify_all()
            if self._on_event is not None:
                self._on_event(event)
        elif accepted is None:
            conn.close()
        else:
            self._send(conn, accepted)

    def _send(self, conn: socket.socket, reply: bytes) -> None:
        try:
            conn.sendall(reply)
        except OSError:
            self.hangups += 1
            sys.stderr.write("LocalDaemon: the client hung up before its reply\n")
        finally:
            conn.close()
