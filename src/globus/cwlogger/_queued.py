"""GlobusQueueHandler: the socket work off the caller's thread.

A logging call formats the record and puts it on a queue; a background
thread hands it to a :class:`GlobusSocketHandler` (the ``target``).  What
keeps a record from being lost on the way:

- ``_sync``: after ``close()``, and in forked children when asked
  (``children="sync"``), records go through the target in the caller's
  thread.  A caller that queued a record while ``close()`` swept the queue
  sees ``_sync`` set after its put and sweeps the queue itself.
- the exits that skip ``logging.shutdown``: children of ``multiprocessing``
  and ``concurrent.futures`` end with ``os._exit`` after
  ``threading._shutdown()`` (its ``_register_atexit`` hooks run), billiard's
  processes after multiprocessing's finalizers, Celery's prefork workers
  after its ``worker_process_shutdown`` signal.  Each closes the handler,
  as ``logging.shutdown`` would.  A child that calls ``os._exit`` with none
  of these cannot be helped: ``children="sync"`` is for it.
- ``close()`` has one deadline: the queue gets five times the timeout to
  drain (some 100000 records from a daemon that answers, with the default
  timeout) and the record being sent one timeout more; what is left then
  goes to the spool or the fallback, counted; then the target closes (one
  more timeout at most for late replies).  So closing takes at most seven
  times the timeout, and a hung daemon (backed off) much less.
- the queue is bounded (``max_queue`` records): a record over the bound goes
  to the fallback, counted, instead of growing memory without end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from queue import Empty, SimpleQueue

from ._handler import DEFAULT_TIMEOUT, Fallback, GlobusSocketHandler, _live, _Unlocked
from ._options import check_choice, check_count
from ._records import stand_in, text_of
from ._typing import override

TYPE_CHECKING = False  # without importing typing: see _typing.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Literal, Union

    from typing_extensions import TypeAlias

    _Item: TypeAlias = Union[logging.LogRecord, threading.Barrier, None]

__all__ = ["DEFAULT_MAX_QUEUE", "DEFAULT_SENDERS", "GlobusQueueHandler"]

#: Records a GlobusQueueHandler holds at most, unless told otherwise.
DEFAULT_MAX_QUEUE = 100_000

#: Threads that send a GlobusQueueHandler's records, each one connection at
#: a time: while the daemon serves one, the next waits in its backlog.
DEFAULT_SENDERS = 4

_STOP = None  # tells a sender to stop, once what came before it is sent
_DRAIN = 5  # timeouts close() gives the queue to drain
_YIELD_EVERY = 511  # a caller yields each time the queue grows by 512 (a mask)
_YIELD_FOR = 1e-6  # seconds, as short as a sleep that gives the lock away


class QueueFull(Exception):
    """The record was not queued: the queue holds ``max_queue`` records."""


class ClosedBeforeSent(Exception):
    """The record was still queued when ``close()``'s deadline ran out."""


class GlobusQueueHandler(_Unlocked):
    """Queue each record and deliver it from a background thread.

    Takes the arguments of :class:`GlobusSocketHandler`, which it builds as
    :attr:`target` (its counters tell what happened to each record), and:
    ``max_queue``, the most records it holds (more go to the fallback,
    counted); ``children``, what a forked child does: ``"queue"`` (its own
    queue and thread) or ``"sync"`` (send in the logging call, for children
    that end with a bare ``os._exit``).  A logging call costs a format and
    a queue put.  :meth:`flush` waits for what is queued; :meth:`close`
    (which ``logging.shutdown`` calls at exit) delivers it, within at most
    seven times the timeout.
    """

    #: The handler that does the sending; its counters tell what happened.
    target: GlobusSocketHandler
    #: The most records the queue holds.
    max_queue: int
    #: What a forked child does: its own queue and thread, or send at once.
    children: Literal["queue", "sync"]
    #: Threads that send the queued records.
    senders: int

    def __init__(
        self,
        host: str | os.PathLike[str] | None = None,
        port: None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        fallback: Fallback = "stderr",
        daemon_uid: int | None = None,
        spool: str | os.PathLike[str] | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        children: Literal["queue", "sync"] = "queue",
        senders: int = DEFAULT_SENDERS,
    ) -> None:
        self.max_queue = check_count("max_queue", max_queue)
        self.senders = check_count("senders", senders)
        self.children = check_choice("children", children, ("queue", "sync"))  # type: ignore[assignment]  # one of the two
        # Built first, so logging.shutdown (newest first) closes it after us.
        self.target = GlobusSocketHandler(
            host, port, timeout=timeout, fallback=fallback, daemon_uid=daemon_uid, spool=spool
        )
        super().__init__()
        self._sync = False
        self._closed = self._closed_target = False
        self._start()
        _live.add(self)
        _hook_exits()

    def _start(self) -> None:
        self._queue: SimpleQueue[_Item] = SimpleQueue()
        self._stopping = False
        self._threads = [
            threading.Thread(
                target=self._drain, args=(self._queue,), name="GlobusQueueHandler", daemon=True
            )
            for _ in range(self.senders)
        ]
        for thread in self._threads:
            thread.start()

    def _drain(self, queue: SimpleQueue[_Item]) -> None:
        handle = self.target.handle
        while not self._stopping:
            item = queue.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Barrier):  # flush() waits for every sender
                with contextlib.suppress(threading.BrokenBarrierError):
                    item.wait()
            else:
                handle(item)

    @override
    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record (or send it, once closed); never raises."""
        try:
            prepared = self.prepare(record)
        except Exception as error:  # a format string that does not fit its args, say
            self.handleError(record)  # the standard report, if logging.raiseExceptions
            prepared = stand_in(record, error)
            with contextlib.suppress(Exception):
                prepared = self.prepare(prepared)  # the formatter's shape, if it can
        queued = self._queue.qsize()
        if self._sync:
            self.target.handle(prepared)
        elif queued >= self.max_queue:
            self.target._undelivered(prepared, None, QueueFull(self.max_queue))
        else:
            self._queue.put(prepared)
            if self._sync:  # closed meanwhile: its sweep may have come before our put
                self._sweep(self.target.handle)  # type: ignore[unreachable]  # another thread sets it
            elif queued & _YIELD_EVERY == _YIELD_EVERY:
                # A caller that outruns the senders holds the interpreter
                # lock, and they get it back once per switch interval (5
                # ms): a short sleep hands it to them now and then.
                time.sleep(_YIELD_FOR)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Format in the caller's thread (arguments may change later) and
        queue a copy that holds the text only, as ``QueueHandler`` does."""
        text = text_of(self, record)
        prepared: logging.LogRecord = object.__new__(type(record))
        prepared.__dict__.update(record.__dict__)
        prepared.message = prepared.msg = text
        prepared.args = prepared.exc_info = prepared.exc_text = prepared.stack_info = None
        return prepared

    def _sweep(self, dispose: Callable[[logging.LogRecord], object]) -> None:
        """Take every record left on the queue and hand it to ``dispose``."""
        while True:
            try:
                item = self._queue.get_nowait()
            except Empty:
                return
            if isinstance(item, threading.Barrier):
                item.abort()
            elif item is not _STOP:
                dispose(item)

    @override
    def flush(self) -> None:
        """Wait, at most the timeout, until every record queued before this
        call was delivered or handed to the fallback."""
        if not self._sync:
            # Each sender stops at the barrier once done with what it took
            # before it: when all have, everything queued before is done.
            done = threading.Barrier(self.senders + 1)
            for _ in range(self.senders):
                self._queue.put(done)
            with contextlib.suppress(threading.BrokenBarrierError):
                done.wait(self.target.timeout)
            done.abort()  # a sender still busy goes on when it gets there

    @override
    def close(self) -> None:
        """Deliver what is queued, within the deadline, then stop; records
        logged later are sent in the logging call.  Closing twice is harmless."""
        with _closing:
            closed, self._closed = self._closed, True
        if not closed:
            timeout = self.target.timeout
            deadline = time.monotonic() + _DRAIN * timeout
            for _ in self._threads:
                self._queue.put(_STOP)
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            self._stopping = True  # after the record each is sending, if any
            for thread in self._threads:
                thread.join(max(0.0, deadline + timeout - time.monotonic()))
            self._sync = True
            self._sweep(lambda record: self._send_by(deadline, record))
            self.target.close()
            self._closed_target = True
        elif self._closed_target:
            # Once the first close is over, each later one closes the target
            # again, as its own close does: what records sent since opened
            # again (a spool's segment) is let go.  Never while the first
            # close drains: this one would then wait in the target's.
            self.target.close()
        super().close()

    def _send_by(self, deadline: float, record: logging.LogRecord) -> None:
        if time.monotonic() < deadline:
            self.target.handle(record)
        else:
            self.target._undelivered(record, None, ClosedBeforeSent("close() ran out of time"))

    def _after_fork_in_child(self) -> None:
        # The thread did not survive the fork, and the queue's lock may be
        # held by it: a fresh queue (the parent delivers what it had queued).
        if self._closed:
            return
        if self.children == "sync":
            self._queue = SimpleQueue()
            self._sync = True
        else:
            self._start()
        _hook_exits()


_closing = threading.Lock()  # a few assignments only


class _Exits:
    """The exit paths hooked in this process (an object multiprocessing can
    hold a weak reference to)."""

    def __init__(self) -> None:
        self.hooked: set[str] = set()


_exits = _Exits()


def _close_all(*_: object, **__: object) -> None:
    for handler in list(_live):
        if isinstance(handler, GlobusQueueHandler):
            handler.close()


def _hook_exits() -> None:
    """Close every queue handler on the exit paths that skip ``logging.shutdown``."""
    hooked = _exits.hooked
    if "threading" not in hooked:
        hooked.add("threading")
        with contextlib.suppress(RuntimeError):  # already shutting down
            threading._register_atexit(_close_all)  # type: ignore[attr-defined]  # threading._shutdown() runs it
    util = sys.modules.get("multiprocessing.util")
    if util is None and "billiard" in sys.modules:  # its processes import it only to end
        from multiprocessing import util
    if util is not None and "multiprocessing" not in hooked:
        hooked.add("multiprocessing")
        util.Finalize(None, _close_all, exitpriority=100)
        # A process's bootstrap clears the finalizers its parent left it.
        util.register_after_fork(_exits, _rehook_multiprocessing)
    signals = sys.modules.get("celery.signals")
    if signals is not None and "celery" not in hooked:
        hooked.add("celery")
        signals.worker_process_shutdown.connect(
            _close_all, weak=False, dispatch_uid="globus.cwlogger"
        )


def _rehook_multiprocessing(exits: _Exits) -> None:
    exits.hooked.discard("multiprocessing")
    _hook_exits()
