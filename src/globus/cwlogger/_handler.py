"""GlobusSocketHandler: one acknowledged request to the daemon per record."""

from __future__ import annotations

import copy
import errno
import json
import logging
import logging.handlers
import math
import os
import select
import socket
import struct
import sys
import threading
import time
import weakref

from . import protocol
from ._connect import ENV_ADDRESS
from ._options import check_fallback, check_timeout, check_uid
from ._typing import override

TYPE_CHECKING = False  # without importing typing: see _typing.py
if TYPE_CHECKING:
    from typing import Protocol

    from typing_extensions import TypeAlias

__all__ = ["DEFAULT_TIMEOUT", "ENV_ADDRESS", "Fallback", "GlobusSocketHandler"]

#: Seconds one logging call may block at most, unless told otherwise.
DEFAULT_TIMEOUT = 1.0

#: Where undelivered records go: ``"stderr"``, ``"stdout"``, ``"off"`` (or
#: ``None`` or ``False``), a handler, or the name of a configured handler.
if TYPE_CHECKING or sys.version_info < (3, 10):
    from typing import Union

    Fallback: TypeAlias = Union[logging.Handler, str, bool, None]
else:  # the same alias, without importing typing
    Fallback = logging.Handler | str | bool | None

_WARN_EVERY = 60.0  # seconds between two warnings of the handler's own
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_MAX_PENDING = 64  # requests left waiting for a late reply, at most
_SLICE = 0.02  # seconds: the kernel's socket timers may fire 12% late
_SUMMARY_EVERY = 1.0  # seconds between two summary events, at least
_OK = b'{"status": "ok"'  # how every acknowledgement starts (json.dumps)


def _timeval(seconds: float) -> bytes:
    """Pack ``seconds`` as the ``struct timeval`` of SO_SNDTIMEO."""
    whole = int(seconds)
    # At least 1 us: a zero timeval would mean "wait forever".
    return struct.pack("ll", whole, max(1, int((seconds - whole) * 1e6)))


def _iso(created: float) -> str:
    """``created`` (seconds since the epoch) as ``2026-11-25T19:58:19.123Z``."""
    ms = int(created * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _stand_in(record: logging.LogRecord, error: Exception) -> logging.LogRecord:
    """A copy of a record that could not be formatted, whose message says
    what it was and why: sent and kept like any other, never dropped."""
    try:
        what = f"{record.msg!r} % {record.args!r}: {type(error).__name__}: {error}"
    except Exception:  # a repr or str that raises too
        what = f"{object.__repr__(record.msg)}: {type(error).__name__}"
    where = f"{record.levelname} {record.name} {record.pathname}:{record.lineno}"
    stand_in = copy.copy(record)
    stand_in.msg, stand_in.args = f"{where}: could not format {what}", None
    if not 0 <= stand_in.created < math.inf:  # also NaN: not a time the daemon takes
        stand_in.created = time.time()
    return stand_in


def _handle_unlocked(handler: logging.Handler, record: logging.LogRecord) -> bool:
    """``Handler.handle`` without the handler's lock around ``emit``."""
    kept: object = handler.filter(record)
    if isinstance(kept, logging.LogRecord):  # Python 3.12+: a filter may replace it
        record = kept
    if kept:
        handler.emit(record)
    return bool(kept)


class _Refused(Exception):
    """The daemon answered with an error, or hung up without an answer."""


class GlobusSocketHandler(logging.handlers.SocketHandler):
    """Send each record to the CWLogger daemon and wait for its acknowledgement.

    ``host`` is the daemon's address (see :func:`protocol.parse_address`);
    without it, ``$GLOBUS_CWLOGGER_ADDRESS`` or ``"\\0org.globus.cwlogs"``.
    ``port`` must stay None: the daemon listens on a Unix socket.
    ``timeout`` bounds, in seconds, how long one logging call may block.
    ``daemon_uid``, when given, is the only uid a listener may run as (the
    daemon runs as root: 0); records for any other listener are undelivered.
    A record the daemon does not acknowledge goes to ``fallback`` and is
    counted in :attr:`undelivered`; nothing is raised into the caller.
    """

    #: Records the daemon acknowledged.
    delivered: int
    #: Records it did not (they went to the fallback).
    undelivered: int
    #: Records whose message was cut to fit the daemon's size limit.
    truncated: int
    #: The fallback as resolved: a handler, "stderr", "stdout", or None (off).
    fallback: logging.Handler | str | None
    #: When set, records go only to a listener running as this uid.
    daemon_uid: int | None

    def __init__(
        self,
        host: str | os.PathLike[str] | None = None,
        port: None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        fallback: Fallback = "stderr",
        daemon_uid: int | None = None,
    ) -> None:
        if host is None:
            host = os.environ.get(ENV_ADDRESS) or protocol.DEFAULT_ADDRESS
        address = protocol.parse_address(host)
        given_port: object = port
        if given_port is not None:
            msg = f"port must be None, the daemon listens on a Unix socket: {port!r}"
            raise ValueError(msg)
        self.timeout = check_timeout(timeout)
        self.fallback = check_fallback(fallback)
        self.daemon_uid = check_uid(daemon_uid)
        super().__init__(address, None)
        self.address: str = address
        self.delivered = self.undelivered = self.truncated = 0
        # Requests whose reply did not come in time stay open, so that the
        # daemon never sees a client leave before its reply; a late reply is
        # the sign that the daemon is back.  Each is held with the number of
        # undelivered records it reports (if it is a summary).
        self._pending: list[tuple[socket.socket, int]] = []
        # Records not acknowledged since the last one that was.
        self._missed = 0
        self._missed_since = 0.0
        self._missed_until = 0.0
        self._summary_due = 0.0
        self._summary_busy = False  # a thread is sending one
        self._warned_at = -math.inf
        # Guards the state above, never a round trip (see handle()).
        self._state = threading.RLock()
        _live.add(self)

    @override
    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} {protocol.display_address(self.address)} ({level})>"

    @override
    def makeSocket(self, timeout: float = 1) -> socket.socket:
        """Connect to the daemon and return a non-blocking socket.

        When the listen backlog is full, wait up to ``timeout`` seconds for
        room (0: not at all), then raise BlockingIOError.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            sock.connect(self.address)  # AF_UNIX: connected at once, or EAGAIN
        except BlockingIOError:
            sock.close()
            if timeout <= 0:
                raise
            return self._connect_when_room(timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect_when_room(self, timeout: float) -> socket.socket:
        # A blocking connect() waits in the kernel for room, up to SO_SNDTIMEO,
        # taken in short slices so that a late timer cannot stretch the wait.
        deadline = time.monotonic() + timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BlockingIOError(errno.EAGAIN, "no room in the listen backlog")  # noqa: TRY301
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(min(left, _SLICE)))
                try:
                    sock.connect(self.address)
                    break
                except BlockingIOError:
                    continue
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    @override
    def makePickle(self, record: logging.LogRecord) -> bytes:
        """The request for one record: its formatted text, stamped with the
        time the record was created."""
        if self.formatter is None and not (record.exc_info or record.exc_text or record.stack_info):
            text = record.message = record.getMessage()  # what the default formatter gives
        else:
            text = self.format(record)
        request, cut = protocol.encode_event(text, int(record.created * 1000))
        if cut:
            with self._state:
                self.truncated += 1
        return request

    @override
    def send(self, s: bytes) -> None:  # type: ignore[override]  # bytes only
        """Deliver one request and read the daemon's reply, within the timeout.

        Raises OSError (TimeoutError when the daemon did not answer in time)
        or an exception of its own when the daemon refuses the event.
        """
        self._deliver(s, time.monotonic() + self.timeout)

    def _deliver(
        self, request: bytes, deadline: float, sock: socket.socket | None = None, reports: int = 0
    ) -> None:
        if sock is None:
            sock = self.makeSocket(deadline - time.monotonic())
        kept = False
        try:
            if self.daemon_uid is not None:
                self._check_listener(sock)
            sent = sock.send(request)  # all of it, unless over the socket buffer
            if sent < len(request):
                sock.settimeout(max(deadline - time.monotonic(), 1e-6))
                sock.sendall(memoryview(request)[sent:])  # whole, or closed at once
                sock.setblocking(False)  # so that a late reply is read without waiting
            reply = b""
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            while not reply.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not poller.poll(math.ceil(left * 1000)):
                    self._hold(sock, reports)  # the daemon has it: never hang up before its reply
                    kept = True
                    msg = f"no reply within {self.timeout} s"
                    raise TimeoutError(msg)
                chunk = sock.recv(512)
                if not chunk:
                    msg = "the daemon closed the connection without a reply"
                    raise _Refused(msg)
                reply += chunk
        finally:
            if not kept:
                sock.close()
        if not reply.startswith(_OK):  # anything but an acknowledgement is decoded in full
            answer = protocol.decode_reply(reply)
            if isinstance(answer, protocol.Error):
                raise _Refused(answer.message)

    def _check_listener(self, sock: socket.socket) -> None:
        """Any local process can bind an abstract name first: send nothing
        to a listener that does not run as ``daemon_uid``."""
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        pid, uid, _ = _PEERCRED.unpack(creds)
        if uid != self.daemon_uid:
            msg = f"the listener (pid {pid}) runs as uid {uid}, not daemon_uid {self.daemon_uid}"
            raise PermissionError(msg)

    def _hold(self, sock: socket.socket, reports: int) -> None:
        with self._state:
            if len(self._pending) >= _MAX_PENDING:
                self._pending.pop(0)[0].close()
            self._pending.append((sock, reports))

    def _reap(self) -> bool:
        """Close the waiting requests whose reply (or hang-up) came; True if
        any did: the daemon answers again.  Never blocks."""
        answered = False
        for held in list(self._pending):
            sock, reports = held
            try:
                if sock.recv(512).startswith(_OK):
                    self._missed = max(0, self._missed - reports)  # a late summary
            except BlockingIOError:
                continue
            except OSError:
                pass
            sock.close()
            self._pending.remove(held)
            answered = True
        return answered

    def _drop_pending(self) -> None:
        for sock, _ in self._pending:
            sock.close()
        self._pending = []

    def _after_fork_in_child(self) -> None:
        # The child's own counts; the parent reads the replies it waits for.
        self._state = threading.RLock()
        self._drop_pending()
        self.delivered = self.undelivered = self.truncated = self._missed = 0
        self._summary_busy = False

    def _connect_if_room(self) -> socket.socket | None:
        """During a backoff with no request waiting (the listen backlog was
        full): a connection if one can be had at once, else None."""
        if self._pending:
            return None
        try:
            return self.makeSocket(0)
        except OSError:
            return None

    @override
    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and emit the record without holding the handler's lock
        across the round trip: threads that share the handler each wait for
        their own reply only, so the timeout bounds every logging call."""
        return _handle_unlocked(self, record)

    @override
    def emit(self, record: logging.LogRecord) -> None:
        """Send the record; if the daemon does not acknowledge it, hand it to
        the fallback and count it.  Never raises."""
        try:
            request = self.makePickle(record)
        except Exception as error:  # e.g. a format string that does not fit its args
            self.handleError(record)  # the standard report, if logging.raiseExceptions
            record = _stand_in(record, error)
            request, _ = protocol.encode_event(record.msg, int(record.created * 1000))
        sock = summary = None
        # Unlocked reads are enough to see that nothing is amiss (the usual case).
        if self._pending or self._missed or self.retryTime is not None:
            sock, summary, done = self._before_sending(record)
            if done:
                return
        deadline = time.monotonic() + self.timeout  # for this whole call
        try:
            if summary is not None:
                self._send_summary(*summary, deadline, sock)
                sock = None
            self._deliver(request, deadline, sock)
        except Exception as error:  # OSError, TimeoutError, _Refused, ProtocolError
            with self._state:
                if isinstance(error, (BlockingIOError, TimeoutError, socket.timeout)):
                    self._back_off()  # hung: stop blocking callers for a while
                else:
                    self.retryTime = None  # it answered, or is absent: cheap to retry
                if not isinstance(error, (_Refused, protocol.ProtocolError)):
                    self._summary_due = 0.0  # unreachable: the summary goes first on return
                self._warn(f"{type(error).__name__}: {error}")
                self._undelivered(record)
        else:
            with self._state:
                self.delivered += 1
                self.retryTime = None

    def _before_sending(
        self, record: logging.LogRecord
    ) -> tuple[socket.socket | None, tuple[bytes, int] | None, bool]:
        """Read late replies, honour a backoff, decide on a summary: the
        connection to use (None: a new one), the summary to send first, and
        whether the record is already dealt with (sent to the fallback)."""
        sock = summary = None
        with self._state:
            answered = bool(self._pending) and self._reap()
            if not answered and self._backing_off():
                sock = self._connect_if_room()
                if sock is None:  # still hung: do not block the caller
                    self._undelivered(record)
                    return None, None, True
            if self._missed and self._summary_wanted():
                summary = self._summary()
        return sock, summary, False

    def _backing_off(self) -> bool:
        return self.retryTime is not None and time.monotonic() < self.retryTime

    def _back_off(self) -> None:
        """After a timeout (a hung daemon), stop blocking callers for a while.

        Refused or missing daemons are cheap to detect and are retried at
        once, so their return is noticed by the next record.
        """
        if self.retryTime is None:
            self.retryPeriod = self.retryStart
        else:
            self.retryPeriod = min(self.retryPeriod * self.retryFactor, self.retryMax)
        self.retryTime = time.monotonic() + self.retryPeriod

    def _undelivered(self, record: logging.LogRecord) -> None:
        self.undelivered += 1
        if not self._missed:
            self._missed_since = record.created
        self._missed += 1
        self._missed_until = record.created
        self._to_fallback(record)

    def _send_summary(
        self, request: bytes, count: int, deadline: float, sock: socket.socket | None
    ) -> None:
        """Tell the daemon how many records it missed, and when: first thing
        when it is reachable again, else once a second at most (it may be
        refusing some records).  If it refuses, the record is tried anyway."""
        try:
            self._deliver(request, deadline, sock, reports=count)
        except _Refused:
            return
        else:
            with self._state:
                self._missed = max(0, self._missed - count)
        finally:
            self._summary_busy = False

    def _summary_wanted(self) -> bool:
        # Not while another is on its way, nor while one waits for a late
        # reply: the counts would overlap.
        return (
            not self._summary_busy
            and time.monotonic() >= self._summary_due
            and not any(reports for _, reports in self._pending)
        )

    def _summary(self) -> tuple[bytes, int]:
        """The event that tells the daemon how many records it missed, when;
        the caller sends it (no other thread sends one meanwhile)."""
        self._summary_due = time.monotonic() + _SUMMARY_EVERY
        self._summary_busy = True
        summary = {
            "type": "audit",
            "subtype": "cwlogger.undelivered",
            "undelivered": self._missed,
            "first": _iso(self._missed_since),
            "last": _iso(self._missed_until),
            "pid": os.getpid(),
        }
        request, _ = protocol.encode_event(json.dumps(summary), int(time.time() * 1000))
        return request, self._missed

    def _to_fallback(self, record: logging.LogRecord) -> None:
        fallback = self.fallback
        try:
            if isinstance(fallback, logging.Handler):
                fallback.handle(record)
            elif fallback is not None:
                stream = sys.stderr if fallback == "stderr" else sys.stdout
                if stream is not None:
                    try:
                        line = self.format(record)
                    except Exception:  # a broken formatter: the message at least
                        line = str(record.msg)
                    stream.write(line + "\n")
                    stream.flush()
        except Exception:
            pass  # already counted; there is nowhere left to put it

    def _warn(self, text: str) -> None:
        """Say on stderr why records are not delivered, once a minute at
        most (never through logging: this handler may be on the root)."""
        now = time.monotonic()
        if now - self._warned_at < _WARN_EVERY or sys.stderr is None:
            return
        self._warned_at = now
        where = protocol.display_address(self.address)
        try:  # noqa: SIM105  # contextlib costs an import
            sys.stderr.write(
                f"globus.cwlogger: records to {where} are not acknowledged ({text}); "
                f"they go to the fallback ({self.undelivered} so far)\n"
            )
        except Exception:  # nowhere left to say it
            pass

    @override
    def close(self) -> None:
        """Release the handler; closing it twice is harmless.

        Requests still waiting for a late reply get one more timeout to
        receive it (the daemon never sees a client leave before its reply
        unless it stays hung that long).  Otherwise, if records went to the
        fallback since the last summary, the daemon gets one now, within the
        timeout, unless the handler is backing off from a hung daemon.
        """
        deadline = time.monotonic() + self.timeout
        summary = None
        with self._state:
            answered = self._reap()
            if self._pending:  # they get the timeout, and no summary follows them
                while self._pending and (left := deadline - time.monotonic()) > 0:
                    poller = select.poll()
                    for sock, _ in self._pending:
                        poller.register(sock, select.POLLIN)
                    poller.poll(math.ceil(left * 1000))
                    self._reap()
            elif self._missed and not self._summary_busy and (answered or not self._backing_off()):
                summary = self._summary()
        if summary is not None:
            try:  # noqa: SIM105  # contextlib costs an import
                self._send_summary(*summary, deadline, None)
            except Exception:  # the records are in the fallback already
                pass
        with self._state:
            self._drop_pending()  # what is still unanswered is not waited for
        super().close()


if TYPE_CHECKING:

    class _ForkAware(Protocol):
        def _after_fork_in_child(self) -> None: ...


# Every live handler of this package, told when the process forked.
_live: weakref.WeakSet[_ForkAware] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_live):
        handler._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
