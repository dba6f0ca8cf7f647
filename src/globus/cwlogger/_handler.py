"""GlobusSocketHandler: one acknowledged request to the daemon per record.

How it works.  Each record is one connection: connect, send, read the
reply, close (see _connect.py for the waits).  What a handler remembers
between records is all here, guarded by ``_lock``:

- ``_stall``: None while the daemon answers.  ``"hung"`` after a request
  got no reply in time (the daemon took it and did not answer), ``"full"``
  after its listen backlog stayed full for a whole timeout.  Either starts
  a backoff (``SocketHandler``'s ``retryTime``, ``retryPeriod``: 1 s,
  doubling with each retry that fails too, at most 30 s) during which
  records go to the spool or the fallback at once instead of blocking their
  caller, except: a late reply to a held request ends a hung stall, and a
  connect that finds room ends a full one.  A daemon that is absent or
  refuses answers in microseconds: no stall, the next record tries again.
- ``_held``: requests that got no reply in time, kept open so that the
  daemon never sees a client leave before its reply (it logs a traceback
  for each); the next record reads their late replies without waiting.
- ``_ledger``: the records that were not acknowledged, and the one summary
  event that reports them (see _ledger.py).
- ``_counts``: what befell the records that were not simply delivered.
- ``_threads``: each thread's own state (whether a call of its is under way,
  the records a signal handler logged meanwhile, how many it delivered).
- ``_replayer``: with a spool, what sends its records once the daemon answers.

The usual record finds nothing amiss (unlocked reads are enough to see it)
and takes the fewest steps: its thread's delivered count is its own, so it
takes no lock at all.  Otherwise a call takes the lock only to read and
change the state: connecting, sending, reading replies, the spool, the
fallback and the warnings happen outside it, so a slow daemon or a slow
fallback delays no other thread.  A signal handler (or a formatter) that
logs through the handler while its thread is inside it does not re-enter:
its record waits and is sent right after the current one.
"""

from __future__ import annotations

import _socket
import logging
import logging.handlers
import math
import os
import socket
import sys
import threading
import time
import weakref
from threading import get_ident

from . import _connect, protocol
from ._connect import ENV_ADDRESS
from ._ledger import Ledger, Summary
from ._options import check_fallback, check_spool, check_timeout, check_uid
from ._records import iso_ms, stand_in
from ._typing import override

TYPE_CHECKING = False  # without importing typing: see _typing.py
if TYPE_CHECKING:
    from typing import Protocol

    from typing_extensions import TypeAlias

    from ._replay import Replayer

__all__ = ["DEFAULT_TIMEOUT", "ENV_ADDRESS", "Fallback", "GlobusSocketHandler"]

#: Seconds one logging call may block at most, unless told otherwise.
DEFAULT_TIMEOUT = 1.0

#: Where undelivered records go: ``"stderr"``, ``"stdout"``, ``"off"`` (or
#: ``None`` or ``False``), a handler, or the name of a configured handler.
if TYPE_CHECKING or sys.version_info < (3, 10):
    from typing import Literal, Union

    Fallback: TypeAlias = Union[logging.Handler, str, Literal[False], None]
else:  # the same alias, without importing typing
    Fallback = logging.Handler | str | bool | None

_HUNG, _FULL = "hung", "full"  # the two kinds of stall
_WARN_EVERY = 60.0  # seconds between two warnings of the handler's own
_MAX_HELD = 64  # requests held open for a late reply, at most
_OK = b'{"status": "ok"'  # how every acknowledgement starts (json.dumps)
_MAX_AGE, _MAX_AHEAD = protocol.MAX_AGE, protocol.MAX_AHEAD
_UNIX, _STREAM = _connect._UNIX, _connect._STREAM
_STDLIB_SOCKET = _connect._STDLIB_SOCKET
_NOSIGNAL, _SOON = _connect._NOSIGNAL, _connect._SOON
_LogRecord = logging.LogRecord  # see _records.text_of
_time, _trunc = time.time, math.trunc  # a global lookup less, on every record


class _Refused(Exception):
    """The daemon answered with an error, or hung up without an answer."""


class _BackingOff(Exception):
    """Not tried: the daemon is stalled and its backoff has not run out."""


class _Counts:
    """What befell the records that were not simply delivered (see the
    properties of the same names), changed under the handler's lock.  One
    object, not four attributes: CPython shares an instance's dict keys for
    at most 30 attributes, and past that every attribute read of the hot
    path costs more (1.2k instructions a record, measured with 32)."""

    __slots__ = ("restamped", "spooled", "truncated", "undelivered")

    def __init__(self) -> None:
        self.undelivered = self.truncated = self.restamped = self.spooled = 0


class _Thread:
    """What one thread's logging calls keep: whether one is under way (a
    signal handler's record then waits its turn), the records that wait,
    and how many records it delivered (counted by the thread alone, so the
    usual record takes no lock)."""

    __slots__ = ("busy", "delivered", "waiting")

    def __init__(self) -> None:
        self.busy = False
        self.delivered = 0
        self.waiting: list[logging.LogRecord] = []


class _Unlocked(logging.Handler):
    """A handler whose ``handle`` filters and emits without the handler's
    lock: threads that share the handler each wait for their own reply only
    (or queue without waiting), so the timeout bounds every logging call."""

    @override
    def handle(self, record: logging.LogRecord) -> bool:
        """Filter the record and emit it, without the handler's lock."""
        if self.filters:
            kept: object = self.filter(record)
            if not kept:
                return False
            if isinstance(kept, logging.LogRecord):  # Python 3.12+: a filter may replace it
                record = kept
        self.emit(record)
        return True


class GlobusSocketHandler(_Unlocked, logging.handlers.SocketHandler):
    """Send each record to the CWLogger daemon and wait for its acknowledgement.

    ``host`` is the daemon's address (see :func:`protocol.parse_address`);
    without it, ``$GLOBUS_CWLOGGER_ADDRESS``, else the abstract name
    ``"\\0org.globus.cwlogs"`` or, when nothing listens there, the newer
    daemon's ``/tmp/org.globus.cwlogs``.  ``port`` must stay None: the
    daemon listens on a Unix socket.  ``timeout`` bounds, in seconds, how
    long one logging call may block.  ``daemon_uid``, when given, is the only
    uid a listener may run as (the daemon runs as root: 0).  A record the
    daemon does not acknowledge goes to ``fallback`` and is counted in
    :attr:`undelivered`; nothing is raised into the caller.
    """

    #: The fallback as resolved: a handler, "stderr", "stdout", or None (off).
    fallback: logging.Handler | str | None
    #: When set, records go only to a listener running as this uid.
    daemon_uid: int | None
    #: Where the daemon is looked for, in this order, on every connection.
    addresses: tuple[str, ...]

    def __init__(
        self,
        host: str | os.PathLike[str] | None = None,
        port: None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        fallback: Fallback = "stderr",
        daemon_uid: int | None = None,
        spool: str | os.PathLike[str] | None = None,
    ) -> None:
        if host is None:
            addresses = _connect.default_addresses()
        else:
            addresses = (protocol.parse_address(host),)
        given_port: object = port
        if given_port is not None:
            msg = f"port must be None, the daemon listens on a Unix socket: {port!r}"
            raise ValueError(msg)
        self.timeout = check_timeout(timeout)
        self.fallback = check_fallback(fallback)
        self.daemon_uid = check_uid(daemon_uid)
        directory = check_spool(spool)
        super().__init__(addresses[0], None)
        self.addresses = addresses
        self._lock = threading.Lock()
        self._reset()
        self._stall: str | None = None
        self._closed = False
        self._replayer: Replayer | None = None
        if directory is not None:
            from ._replay import Replayer  # a spool's machinery, loaded only for one
            from ._spool import Spool

            self._replayer = Replayer(Spool(directory), self._round_trip)
        _live.add(self)

    def _reset(self) -> None:
        """The state of a new handler, or of a child's after fork."""
        self._counts = _Counts()
        self._held: list[tuple[_socket.socket, Summary | None]] = []
        self._ledger = Ledger()
        self._threads: dict[int, _Thread] = {}
        self._warned_at = -_WARN_EVERY
        self._emf_warned = False

    @property
    def delivered(self) -> int:
        """Records the daemon acknowledged."""
        return sum(thread.delivered for thread in self._threads.copy().values())

    @property
    def undelivered(self) -> int:
        """Records the daemon did not acknowledge (they went to the fallback)."""
        return self._counts.undelivered

    @property
    def truncated(self) -> int:
        """Records whose message was cut to fit the daemon's size limit."""
        return self._counts.truncated

    @property
    def restamped(self) -> int:
        """Records sent stamped with the current time instead of their
        creation time, which CloudWatch would have discarded (protocol.stamp)."""
        return self._counts.restamped

    @property
    def spooled(self) -> int:
        """Records the daemon did not acknowledge that went to the spool instead."""
        return self._counts.spooled

    @property
    def spool(self) -> str | None:
        """The spool's directory, or None."""
        return None if self._replayer is None else self._replayer.spool.directory

    @property
    def replayed(self) -> int:
        """Spooled records the daemon acknowledged later (this process sent them)."""
        return 0 if self._replayer is None else self._replayer.replayed

    def _round_trip(self, request: bytes) -> protocol.Reply:
        """One request on its own connection, as the spool's replayer sends:
        like a record's, held open for a late reply."""
        deadline = time.monotonic() + self.timeout
        sock = _connect.connect(self.addresses, deadline, self.daemon_uid)
        return protocol.decode_reply(self._exchange(sock, request, deadline))

    @property
    def address(self) -> str:
        """The daemon's address (the first one looked at)."""
        return self.addresses[0]

    @address.setter
    def address(self, address: str) -> None:  # SocketHandler.__init__ sets it
        self.addresses = (address,)

    @override
    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        where = " or ".join(map(protocol.display_address, self.addresses))
        return f"<{type(self).__name__} {where} ({level})>"

    @override
    def makePickle(self, record: logging.LogRecord) -> bytes:
        """The request for one record: its formatted text, stamped with the
        time the record was created (or now, if CloudWatch would discard that)."""
        if self.formatter is None and not (record.exc_info or record.exc_text or record.stack_info):
            text = record.msg  # _text(), inline: a call costs more than its work here
            if type(record) is not _LogRecord or type(text) is not str or record.args:
                text = record.getMessage()
        else:
            text = self.format(record)
        if "_aws" in record.__dict__ and not self._emf_warned and '"_aws"' not in text:
            self._warn_emf()
        created, now = record.created, _time()
        # protocol.stamp's test, inline for the usual record: a call costs more.
        if type(created) is float and now - _MAX_AGE < created < now + _MAX_AHEAD:
            request, cut = protocol.encode_event(text, _trunc(created * 1000))
            if cut:
                self._count(truncated=1)
            return request
        return self._encode(text, created)

    def _encode(self, text: str, created: object) -> bytes:
        timestamp, restamped = protocol.stamp(created, time.time())
        request, cut = protocol.encode_event(text, timestamp)
        if cut or restamped:
            self._count(truncated=bool(cut), restamped=restamped)
        return request

    def _count(self, *, truncated: int = 0, restamped: int = 0) -> None:
        with self._lock:
            self._counts.truncated += truncated
            self._counts.restamped += restamped

    def _stand_in(
        self, record: logging.LogRecord, error: Exception
    ) -> tuple[logging.LogRecord, bytes]:
        """A record that could not be formatted: its stand-in, and the request."""
        self.handleError(record)  # the standard report, if logging.raiseExceptions
        record = stand_in(record, error)
        try:
            text = self.format(record)  # the formatter's shape (JSON, say), if it can
        except Exception:
            text = record.msg
        return record, self._encode(text, record.created)

    @override
    def emit(self, record: logging.LogRecord) -> None:
        """Send the record; if the daemon does not acknowledge it, hand it to
        the fallback and count it.  Never raises, but for a BaseException
        that is not an Exception (KeyboardInterrupt from a signal handler,
        say), once the record is counted and in the fallback."""
        thread = self._threads.get(get_ident())
        if thread is None:
            thread = self._threads[get_ident()] = _Thread()
        if thread.busy:  # a signal handler, or a formatter, logging from inside
            thread.waiting.append(record)
            return
        thread.busy = True
        request = None
        try:
            try:
                request = self.makePickle(record)
            except Exception as error:  # e.g. a format string that does not fit its args
                record, request = self._stand_in(record, error)
            self.send(request)
            thread.delivered += 1  # this thread's own count: no lock needed
            if self._replayer is not None:  # the daemon answers: the spool's turn
                self._replayer.wake()
        except (OSError, _Refused, _BackingOff, protocol.ProtocolError) as error:
            self._undelivered(record, request, error)
        except Exception as error:  # a fault of this handler's own: still not lost
            self.handleError(record)
            self._undelivered(record, request, error)
        except BaseException as error:  # KeyboardInterrupt from a signal handler, say
            self._undelivered(record, request, error)
            raise
        finally:
            thread.busy = False
            while thread.waiting:  # each in its turn, as if logged now
                self.emit(thread.waiting.pop(0))

    @override
    def send(self, s: bytes) -> None:  # type: ignore[override]  # bytes only
        """Deliver one request and read the daemon's acknowledgement within
        the timeout; raise when it is not acknowledged."""
        ledger = self._ledger
        # Unlocked reads are enough to see that nothing is amiss.
        amiss = self._held or self._stall is not None or ledger.open or ledger.on_its_way
        sock = None
        if not (amiss or self.daemon_uid is not None or socket.socket is not _STDLIB_SOCKET):
            # The usual record, in the fewest steps (each costs on every
            # record): the first address accepts at once, or the careful way
            # below decides what its refusal means.
            sock = _socket.socket(_UNIX, _STREAM)
            try:
                sock.connect(self.addresses[0])
            except OSError:
                sock.close()
                sock = None
        if sock is None:
            sock, timeout = self._connect_carefully(amiss)
        else:
            timeout = self.timeout
        try:
            # _exchange, inline (a call costs 0.5k instructions a record).
            sent = sock.send(s, _NOSIGNAL)
            sock.settimeout(timeout if timeout > _SOON else _SOON)
            reply = sock.recv(512) if sent == len(s) else b""
            if not reply.endswith(b"\n"):
                reply = _connect.exchange_rest(sock, s, sent, reply)
        except OSError as error:
            if _connect.is_timeout(error):
                self._hold(sock, None)
            else:
                sock.close()
            raise
        except BaseException:
            sock.close()
            raise
        sock.close()
        if not reply.startswith(_OK):  # anything but an acknowledgement is decoded in full
            answer = protocol.decode_reply(reply)
            if isinstance(answer, protocol.Error):
                raise _Refused(answer.message)
        if amiss:
            with self._lock:  # it answers again
                self._stall = self.retryTime = None

    def _connect_carefully(self, amiss: object) -> tuple[_socket.socket, float]:
        """A connection as the state asks (see _before_sending), and the
        time left for the reply."""
        deadline = time.monotonic() + self.timeout
        sock = self._before_sending(deadline) if amiss else None
        if sock is None:
            sock = _connect.connect(self.addresses, deadline, self.daemon_uid)
        return sock, deadline - time.monotonic()

    def _before_sending(self, deadline: float) -> _socket.socket | None:
        """Read late replies, honour a backoff, send the summary if one is
        due; return the connection to use (None: a new one)."""
        self._reap()
        sock = None
        with self._lock:
            stall = self._stall if self._backing_off() else None
        if stall == _HUNG:
            raise _BackingOff(self._stall)
        if stall == _FULL:  # is there room now? Asking costs microseconds
            try:
                sock = _connect.connect(self.addresses, 0.0, self.daemon_uid)
            except OSError:
                raise _BackingOff(self._stall) from None
        with self._lock:
            summary = self._ledger.claim(time.monotonic())
        if summary is not None:
            self._send_summary(summary, deadline, sock)
            sock = None
        return sock

    def _backing_off(self) -> bool:
        return self.retryTime is not None and time.monotonic() < self.retryTime

    def _send_summary(self, summary: Summary, deadline: float, sock: _socket.socket | None) -> None:
        """Tell the daemon how many records it missed, and when.  If it
        refuses, the record is tried anyway; if it does not answer in time,
        the summary is settled by its late reply."""
        event = (
            f'{{"type": "audit", "subtype": "cwlogger.undelivered", '
            f'"undelivered": {summary.records}, "first": "{iso_ms(summary.first)}", '
            f'"last": "{iso_ms(summary.last)}", "pid": {os.getpid()}}}'
        )
        request, _ = protocol.encode_event(event, int(time.time() * 1000))
        try:
            if sock is None:
                sock = _connect.connect(self.addresses, deadline, self.daemon_uid)
            reply = self._exchange(sock, request, deadline, summary)
        except OSError as error:
            if _connect.is_timeout(error):
                raise  # held: settled by its late reply
            self._settle(summary, delivered=False)
            if isinstance(error, ConnectionResetError):
                return  # the daemon hung up on it: try the record anyway
            raise
        except BaseException:
            self._settle(summary, delivered=False)
            raise
        self._settle(summary, delivered=reply.startswith(_OK))

    def _exchange(
        self,
        sock: _socket.socket,
        request: bytes,
        deadline: float,
        summary: Summary | None = None,
    ) -> bytes:
        """The reply to ``request`` on ``sock``, which is then closed; or, when
        there is no reply in time, held open for a late one (so that the
        daemon never sees a client leave before its reply)."""
        try:
            reply = _connect.exchange(sock, request, deadline - time.monotonic())
        except OSError as error:
            if _connect.is_timeout(error):
                self._hold(sock, summary)
            else:
                sock.close()
            raise
        except BaseException:
            sock.close()
            raise
        sock.close()
        return reply

    def _settle(self, summary: Summary, *, delivered: bool) -> None:
        with self._lock:
            self._ledger.settle(summary, delivered=delivered)

    def _hold(self, sock: _socket.socket, summary: Summary | None) -> None:
        """Keep a request that got no reply in time open for its late reply."""
        sock.settimeout(0.0)  # its reply is read later without waiting
        with self._lock:
            self._held.append((sock, summary))
            dropped = self._held.pop(0) if len(self._held) > _MAX_HELD else None
            if dropped is not None and dropped[1] is not None:
                self._ledger.settle(dropped[1], delivered=False)
        if dropped is not None:
            dropped[0].close()

    def _reap(self, wait_until: float | None = None) -> None:
        """Read the late replies that came (waiting until ``wait_until`` for
        them, if given); a reply from a hung daemon ends its stall."""
        with self._lock:
            held, self._held = self._held, []
        if not held:
            return
        waiting: list[tuple[_socket.socket, Summary | None]] = []
        settled: list[tuple[Summary, bool]] = []
        for sock, summary in held:
            try:
                if wait_until is not None:
                    sock.settimeout(max(wait_until - time.monotonic(), 1e-9))
                reply = sock.recv(512)
            except OSError as error:
                if isinstance(error, BlockingIOError) or _connect.is_timeout(error):
                    waiting.append((sock, summary))
                    continue
                reply = b""
            sock.close()
            if summary is not None:
                settled.append((summary, reply.startswith(_OK)))
        with self._lock:
            self._held = waiting + self._held
            for summary, delivered in settled:
                self._ledger.settle(summary, delivered=delivered)
            if len(waiting) < len(held) and self._stall == _HUNG:
                self._stall = self.retryTime = None  # it answers again

    def _undelivered(
        self, record: logging.LogRecord, request: bytes | None, error: BaseException
    ) -> None:
        """Note what the failure says about the daemon; keep the record in the
        spool, or else count it and hand it to the fallback."""
        spooled = self._replayer is not None and self._keep(record, request)
        timestamp = (
            protocol.timestamp_of(request)
            if request is not None
            else protocol.stamp(record.created, time.time())[0]
        )
        now = time.monotonic()
        with self._lock:
            if spooled:
                self._counts.spooled += 1
            else:
                self._counts.undelivered += 1
            unreachable = True
            if isinstance(error, BlockingIOError):
                self._back_off(_FULL)
            elif isinstance(error, OSError) and _connect.is_timeout(error):
                self._back_off(_HUNG)
            elif isinstance(error, (_Refused, protocol.ProtocolError)):
                self._stall = self.retryTime = None  # it answers: no backoff
                unreachable = False  # so summaries come at most once a second
            elif isinstance(error, OSError):  # absent: cheap to try with the next record
                self._stall = self.retryTime = None
            elif not isinstance(error, _BackingOff):  # a fault of ours, an interrupt
                unreachable = False
            if not spooled:  # the spool's replay reports its own
                self._ledger.add(timestamp, unreachable=unreachable)
            warn = now - self._warned_at >= _WARN_EVERY and not isinstance(error, _BackingOff)
            if warn:
                self._warned_at = now
        if not spooled:
            self._to_fallback(record)
        if warn:
            self._warn(f"{type(error).__name__}: {error}")

    def _keep(self, record: logging.LogRecord, request: bytes | None) -> bool:
        """Whether the spool took the record (never raises)."""
        assert self._replayer is not None
        if request is None:  # not encoded yet (the queue was full, say)
            try:
                request = self.makePickle(record)
            except Exception:
                return False
        return self._replayer.spool.append(request)

    def _back_off(self, stall: str) -> None:
        """Stop blocking callers for a while: 1 s, doubling with each retry
        that fails too, at most 30 s.  Calls that were already waiting when
        the backoff began (other threads') fail with it: they double nothing."""
        now = time.monotonic()
        if self.retryTime is None:
            self.retryPeriod = self.retryStart
        elif now < self.retryTime:
            return
        else:
            self.retryPeriod = min(self.retryPeriod * self.retryFactor, self.retryMax)
        self.retryTime = now + self.retryPeriod
        self._stall = stall

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
        """Say on stderr why records are not delivered (never through
        logging: this handler may be on the root logger)."""
        where = " or ".join(map(protocol.display_address, self.addresses))
        kept = "the fallback" if self.spool is None else f"the spool {self.spool} or the fallback"
        _say(
            f"globus.cwlogger: records to {where} are not acknowledged ({text}); "
            f"they go to {kept} ({self.spooled + self.undelivered} so far)"
        )

    def _warn_emf(self) -> None:
        self._emf_warned = True
        name = type(self.formatter).__name__
        _say(
            f"globus.cwlogger: a record carries emf() metrics, but its formatter "
            f"({name}) does not write them: CloudWatch gets no metric; use "
            f"globus.cwlogger.JSONFormatter"
        )

    @override
    def close(self) -> None:
        """Release the handler; closing it again is harmless and instant.

        Requests held for a late reply get up to one timeout to receive it
        (the daemon never sees a client leave before its reply unless it
        stays hung that long).  Otherwise, if records went to the fallback
        since the last summary, the daemon gets one now, within the same
        timeout, unless the handler is backing off from a hung daemon.
        The handler stays usable: a record logged after close is sent too.
        """
        with self._lock:
            closed, self._closed = self._closed, True
        summary = None
        if not closed:  # the first close waits; a second one lets go at once
            deadline = time.monotonic() + self.timeout
            self._reap(wait_until=deadline)
            with self._lock:
                hung = bool(self._held) or (self._stall == _HUNG and self._backing_off())
                # Due or not: there is no later.
                summary = None if hung else self._ledger.claim(math.inf)
            if summary is not None:
                try:  # noqa: SIM105  # contextlib costs an import
                    self._send_summary(summary, deadline, None)
                except Exception:  # the records are in the fallback already
                    pass
        with self._lock:
            held, self._held = self._held, []
        for sock, _ in held:  # still no reply: let go
            sock.close()
        if self._replayer is not None:
            self._replayer.close(time.monotonic() + self.timeout)  # the rest waits for later
            self._replayer.spool.close()
        super().close()

    def _after_fork_in_child(self) -> None:
        # The child's own counts; the parent reads the replies it waits for.
        held = self._held
        self._lock = threading.Lock()
        self._reset()
        for sock, _ in held:
            sock.close()


def _say(line: str) -> None:
    try:
        if sys.stderr is not None:
            sys.stderr.write(line + "\n")
    except Exception:  # nowhere left to say it
        pass


if TYPE_CHECKING:

    class _ForkAware(Protocol):
        def _after_fork_in_child(self) -> None: ...


# Every live handler of this package, told when the process forked.
_live: weakref.WeakSet[_ForkAware] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_live):
        handler._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
