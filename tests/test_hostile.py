"""The promises under hostile conditions: signals at any point of a logging
call, SIGPIPE at its default, a slow fallback, and exit with a hung daemon."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import threading
import time
import unittest
from collections.abc import Iterator
from types import FrameType

from globus.cwlogger.protocol import MAX_MESSAGE_BYTES
from globus.cwlogger.testing import LocalDaemon

from .support import DaemonTestCase, ListHandler, run_python, unique_address


class Interrupted(BaseException):
    """What a signal handler raised (as KeyboardInterrupt is, not an Exception,
    which logging handlers report with handleError instead)."""


@contextlib.contextmanager
def ticking(interval: float) -> Iterator[None]:
    """SIGALRM every ``interval`` seconds while the context is open."""
    signal.setitimer(signal.ITIMER_REAL, interval, interval)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)


class SignalTest(DaemonTestCase):
    timeout = 0.5

    def on_signal(self, signum: int, handler: object) -> None:
        previous = signal.signal(signum, handler)  # type: ignore[arg-type]
        self.addCleanup(signal.signal, signum, previous)

    def test_a_signal_handler_that_logs_from_inside_emit_waits_its_turn(self) -> None:
        def log_two(*_: object) -> None:
            self.log.info("from the signal handler")
            self.log.info("and its second")

        self.on_signal(signal.SIGUSR1, log_two)

        class Signalling(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                if record.getMessage() == "trigger":
                    os.kill(os.getpid(), signal.SIGUSR1)  # runs the handler right here
                return super().format(record)

        self.handler.setFormatter(Signalling())
        self.log.info("trigger")
        messages = [e.message for e in self.daemon.wait_for(3, strict=True)]
        self.assertEqual(messages, ["trigger", "from the signal handler", "and its second"])
        self.assertEqual(self.counts(), (3, 0))

    def assert_every_record_accounted(self, fallback: ListHandler, behaviour: str) -> None:
        self.daemon.behaviour = behaviour  # type: ignore[assignment]
        fired = []

        def log_from_signal(signum: int, frame: FrameType | None) -> None:
            fired.append(signum)
            self.log.info("signal %d", len(fired))

        self.on_signal(signal.SIGALRM, log_from_signal)
        with ticking(0.0005), contextlib.redirect_stderr(io.StringIO()):
            for i in range(300):
                self.log.info("record %d", i)
        total = 300 + len(fired)
        self.assertGreater(len(fired), 10)  # the signals did come, inside logging calls
        self.assertEqual(sum(self.counts()), total)
        self.assertEqual(len(fallback.records), self.handler.undelivered)
        if behaviour == "ok":
            self.assertEqual(len(self.daemon.wait_for(total, strict=True)), total)
            self.assertEqual(self.handler.undelivered, 0)

    def test_signals_at_any_point_of_delivery(self) -> None:
        self.assert_every_record_accounted(self.fallback, "ok")

    def test_signals_at_any_point_of_the_fallback(self) -> None:
        self.assert_every_record_accounted(self.fallback, "refuse")

    def test_a_wait_for_the_reply_outlasts_signals(self) -> None:
        self.on_signal(signal.SIGALRM, lambda *_: None)
        self.daemon.delay = 0.2
        with ticking(0.005):
            took = self.timed_log("answered late, but in time")
        self.assertGreaterEqual(took, 0.19)
        self.assertEqual(self.counts(), (1, 0))

    def test_a_wait_for_a_hung_daemon_lasts_the_timeout_through_signals(self) -> None:
        self.on_signal(signal.SIGALRM, lambda *_: None)
        self.daemon.behaviour = "hang"
        with ticking(0.005), contextlib.redirect_stderr(io.StringIO()):
            took = self.timed_log("no answer")
        self.assertGreaterEqual(took, self.timeout * 0.9)
        self.assertLess(took, self.timeout + 0.15)
        self.assertEqual(self.counts(), (0, 1))

    def test_a_wait_for_room_in_a_full_backlog_lasts_the_timeout_through_signals(self) -> None:
        self.on_signal(signal.SIGALRM, lambda *_: None)
        address = unique_address()
        with LocalDaemon(address, behaviour="stall", backlog=0):
            handler = self.make_handler(host=address)
            filler = socket.socket(socket.AF_UNIX)
            self.addCleanup(filler.close)
            filler.connect(address)
            start = time.monotonic()
            with ticking(0.005), contextlib.redirect_stderr(io.StringIO()):
                handler.handle(logging.makeLogRecord({"msg": "no room"}))
            took = time.monotonic() - start
        self.assertGreaterEqual(took, self.timeout * 0.9)
        self.assertLess(took, self.timeout + 0.15)
        self.assertEqual((handler.delivered, handler.undelivered), (0, 1))

    def test_what_a_signal_handler_raises_reaches_the_caller_after_the_record_is_kept(
        self,
    ) -> None:
        def interrupt(signum: int, frame: FrameType | None) -> None:
            raise Interrupted

        self.on_signal(signal.SIGALRM, interrupt)
        self.daemon.behaviour = "hang"
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with self.assertRaises(Interrupted), contextlib.redirect_stderr(io.StringIO()):
            self.log.info("interrupted")
        self.assertEqual(self.fallback.messages(), ["interrupted"])
        self.assertEqual(self.counts(), (0, 1))


SIGPIPE_AT_DEFAULT = """\
import logging, signal
from globus.cwlogger import GlobusSocketHandler
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as command-line tools do
handler = GlobusSocketHandler(timeout=2, fallback="off")
handler.handle(logging.makeLogRecord({"msg": "x" * %d}))
print(handler.delivered, handler.undelivered)
"""


class SigpipeTest(unittest.TestCase):
    def test_a_daemon_hanging_up_mid_request_never_raises_sigpipe(self) -> None:
        address = unique_address()
        listener = socket.socket(socket.AF_UNIX)
        self.addCleanup(listener.close)
        listener.bind(address)
        listener.listen(1)

        def hang_up_early() -> None:
            conn, _ = listener.accept()
            conn.recv(1)  # a little of a request too large for the socket buffer
            conn.close()

        thread = threading.Thread(target=hang_up_early)
        thread.start()
        result = run_python(SIGPIPE_AT_DEFAULT % MAX_MESSAGE_BYTES, address)
        thread.join()
        self.assertEqual(result.returncode, 0, result.stderr)  # -13: killed by SIGPIPE
        self.assertEqual(result.stdout.split(), ["0", "1"])


class SlowFallbackTest(DaemonTestCase):
    timeout = 0.3

    def test_a_stuck_fallback_delays_no_other_thread(self) -> None:
        release = threading.Event()
        entered = threading.Event()

        class Stuck(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                entered.set()
                release.wait(10)

        handler = self.make_handler(fallback=Stuck())
        self.daemon.behaviour = "refuse"
        stuck = threading.Thread(
            target=handler.handle, args=(logging.makeLogRecord({"msg": "refused"}),)
        )
        with contextlib.redirect_stderr(io.StringIO()):
            stuck.start()
            self.assertTrue(entered.wait(5))
            self.daemon.behaviour = "ok"
            start = time.monotonic()
            handler.handle(logging.makeLogRecord({"msg": "meanwhile"}))
            took = time.monotonic() - start
            release.set()
            stuck.join()
        self.assertLess(took, self.timeout)
        self.assertEqual(handler.delivered, 1)


EXIT_WITH_A_HUNG_DAEMON = """\
import logging, time
from globus.cwlogger import {cls}
handler = {cls}(timeout={timeout}, fallback="off")
log = logging.getLogger()
log.addHandler(handler)
for i in range({count}):
    log.warning("record %d", i)
print(time.monotonic(), flush=True)
"""


class ExitTest(unittest.TestCase):
    """Interpreter exit with a hung daemon: bounded by a multiple of the timeout."""

    timeout = 0.5

    def exit_time(self, cls: str, count: int, behaviour: str, delay: float = 0.0) -> float:
        with LocalDaemon(unique_address(), behaviour=behaviour) as daemon:  # type: ignore[arg-type]
            daemon.delay = delay
            code = EXIT_WITH_A_HUNG_DAEMON.format(cls=cls, timeout=self.timeout, count=count)
            result = run_python(code, daemon.address)
            ended = time.monotonic()
            self.assertEqual(result.returncode, 0, result.stderr)
            return ended - float(result.stdout.split()[-1])

    def test_socket_handler_exits_within_one_timeout(self) -> None:
        took = self.exit_time("GlobusSocketHandler", 20, "hang")
        self.assertLess(took, self.timeout + 0.5)  # close() waits once for late replies

    def test_queue_handler_exits_within_about_one_timeout_from_a_hung_daemon(self) -> None:
        took = self.exit_time("GlobusQueueHandler", 2000, "hang")  # the rest backed off
        self.assertLess(took, 2 * self.timeout + 0.5)

    def test_queue_handler_drains_for_five_timeouts_then_stops(self) -> None:
        took = self.exit_time("GlobusQueueHandler", 2000, "ok", delay=0.01)  # 20 s to drain
        self.assertGreater(took, 5 * self.timeout - 0.2)  # it did drain, for that long
        self.assertLess(took, 7 * self.timeout + 0.5)


if __name__ == "__main__":
    unittest.main()
