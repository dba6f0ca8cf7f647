"""GlobusQueueHandler: the socket work off the caller's thread.

A queue and the standard library's ``QueueListener``, wired to a
:class:`GlobusSocketHandler` and started and stopped with the handler's own
life, so that nothing is lost at interpreter exit or in a forked child.  It
is not a ``QueueHandler`` subclass: dictConfig on Python 3.12 would demand a
``handlers`` key for one.
"""

from __future__ import annotations

import logging
import logging.handlers
from queue import SimpleQueue
from typing import Any

from ._handler import GlobusSocketHandler, _handle_unlocked, _live
from ._typing import override

__all__ = ["GlobusQueueHandler"]


class GlobusQueueHandler(logging.Handler):
    """Queue each record and deliver it from a background thread.

    Takes the same keywords as :class:`GlobusSocketHandler` (``host``,
    ``timeout``, ``fallback``), which it builds as :attr:`target`.  A logging
    call costs a format and a queue put.  ``close()`` (which
    ``logging.shutdown`` calls at exit) waits until every queued record was
    delivered or handed to the fallback.
    """

    #: The handler that does the sending; its counters tell what happened.
    target: GlobusSocketHandler
    #: The records on their way to :attr:`target`.
    queue: SimpleQueue[logging.LogRecord]

    def __init__(self, **kwargs: Any) -> None:
        # Built first, so logging.shutdown (newest first) closes it after us.
        self.target = GlobusSocketHandler(**kwargs)
        super().__init__()
        self.queue = SimpleQueue()
        self._listener: logging.handlers.QueueListener | None = None
        self._start()
        _live.add(self)

    def _start(self) -> None:
        self._listener = logging.handlers.QueueListener(self.queue, self.target)
        self._listener.start()

    def _after_fork_in_child(self) -> None:
        # The listener thread did not survive the fork, and the queue's locks
        # may be held by it: a fresh queue and thread (the parent still
        # delivers what it had queued).
        if self._listener is not None:
            self.queue = SimpleQueue()
            self._start()

    @override
    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and queue the record (the queue is thread-safe: no lock)."""
        return _handle_unlocked(self, record)

    @override
    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record; never raises."""
        try:
            prepared = self.prepare(record)
        except Exception:  # a format string that does not fit its args, say
            self.handleError(record)  # the standard report, if logging.raiseExceptions
            prepared = record  # and the target sends an event saying what failed
        self.queue.put(prepared)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Format in the caller's thread (arguments may change later) and
        queue a copy that holds the text only, as ``QueueHandler`` does."""
        text = self.format(record)
        prepared: logging.LogRecord = object.__new__(type(record))
        prepared.__dict__.update(record.__dict__)
        prepared.message = prepared.msg = text
        prepared.args = prepared.exc_info = prepared.exc_text = prepared.stack_info = None
        return prepared

    @override
    def close(self) -> None:
        """Deliver what is queued, then stop; closing twice is harmless."""
        self.acquire()
        try:
            listener, self._listener = self._listener, None
        finally:
            self.release()
        if listener is not None:
            listener.stop()  # drains the queue
        self.target.close()
        super().close()
