"""GlobusQueueHandler: nothing lost at exit, after close, in children that
end through os._exit, at its bound; flush and close within their deadlines."""

from __future__ import annotations

import contextlib
import io
import logging
import logging.config
import os
import pathlib
import socket
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

from globus.cwlogger import GlobusQueueHandler, GlobusSocketHandler
from globus.cwlogger.testing import LocalDaemon

from .support import ListHandler, fork, run_python, unique_address, wait_until

EXIT_AT_ONCE = """\
import logging
from globus.cwlogger import GlobusQueueHandler

logging.getLogger().addHandler(GlobusQueueHandler(timeout=10))  # close() drains 10 s at most
logging.getLogger().setLevel(logging.INFO)
for i in range(10000):
    logging.info("record %d", i)
"""

DICTCONFIG_AT_ONCE = """\
import logging.config
logging.config.dictConfig({
    "version": 1,
    "formatters": {"plain": {"format": "%(levelname)s %(message)s"}},
    "handlers": {"cloudwatch": {"class": "globus.cwlogger.GlobusQueueHandler",
                                "formatter": "plain", "timeout": 2, "senders": 1}},
    "root": {"level": "INFO", "handlers": ["cloudwatch"]},
})
for i in range(1000):
    logging.info("record %d", i)
"""

FILECONFIG = """\
import io, logging, logging.config
logging.config.fileConfig(io.StringIO('''
[loggers]
keys=root
[handlers]
keys=cloudwatch
[formatters]
keys=
[logger_root]
level=INFO
handlers=cloudwatch
[handler_cloudwatch]
class=globus.cwlogger.GlobusQueueHandler
args=('%s',)
'''))
logging.info("from an INI file")
"""

STDLIB_KEYS = """\
import atexit, logging, logging.config
logging.config.dictConfig({
    "version": 1,
    "handlers": {
        "cloudwatch": {"class": "globus.cwlogger.GlobusSocketHandler"},
        "queued": {"class": "logging.handlers.QueueHandler", "handlers": ["cloudwatch"]},
    },
    "root": {"level": "INFO", "handlers": ["queued"]},
})
listener = logging.getHandlerByName("queued").listener
listener.start()
atexit.register(listener.stop)  # after logging's own exit hook: stops first
for i in range(1000):
    logging.info("record %d", i)
"""

AFTER_SHUTDOWN = """\
import atexit
atexit.register(lambda: logging.warning("from an exit hook after logging.shutdown"))
import logging
from globus.cwlogger import GlobusQueueHandler

class Late:
    def __del__(self):
        logging.warning("from __del__")

logging.getLogger().addHandler(GlobusQueueHandler())
logging.warning("before exit")
late = Late()
"""

DAEMON_THREAD_AT_EXIT = """\
import logging, threading, time
from globus.cwlogger import GlobusQueueHandler

logging.getLogger().addHandler(GlobusQueueHandler())

def forever():
    for i in range(10**9):
        logging.warning("daemon thread %d", i)
        time.sleep(0.001)

threading.Thread(target=forever, daemon=True).start()
time.sleep(0.05)
"""

CHILDREN = """\
import concurrent.futures, logging, multiprocessing, sys
from globus.cwlogger import GlobusQueueHandler

def work(n):
    root = logging.getLogger()
    if not any(isinstance(h, GlobusQueueHandler) for h in root.handlers):
        root.addHandler(GlobusQueueHandler(timeout=5))
        root.setLevel(logging.INFO)
    for i in range(200):
        logging.info("child %d record %d", n, i)
    return n

if __name__ == "__main__":
    how, method = sys.argv[1], sys.argv[2]
    context = multiprocessing.get_context(method)
    if how == "process":
        processes = [context.Process(target=work, args=(n,)) for n in range(4)]
        for p in processes:
            p.start()
        for p in processes:
            p.join()
    elif how == "pool":
        pool = context.Pool(2, maxtasksperchild=1)
        pool.map(work, range(4))
        pool.close()
        pool.join()
    else:
        new = sys.version_info >= (3, 11) and method != "fork"  # a new process per task
        options = {"max_tasks_per_child": 1} if new else {}
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context, **options) as pool:
            list(pool.map(work, range(4)))
"""

BARE_EXIT_CHILD = """\
import logging, os, sys
from globus.cwlogger import GlobusQueueHandler

logging.getLogger().addHandler(GlobusQueueHandler(children=sys.argv[1]))
logging.getLogger().setLevel(logging.INFO)
pid = os.fork()
if pid == 0:
    for i in range(200):
        logging.info("child record %d", i)
    os._exit(0)
os.waitpid(pid, 0)
"""


def run_and_collect(code: str, expected: int, *args: str) -> list[str]:
    with LocalDaemon(unique_address()) as daemon:
        if args:
            directory = tempfile.mkdtemp()
            script = pathlib.Path(directory, "script.py")
            script.write_text(code)
            code = f"import runpy, sys; sys.argv[1:] = {list(args)!r}; "
            code += f"runpy.run_path({str(script)!r}, run_name='__main__')"
            code = f"import sys; sys.path.insert(0, {directory!r}); " + code
        result = run_python(code, daemon.address)
        if result.returncode != 0:
            raise AssertionError(result.stderr)
        return [event.message for event in daemon.wait_for(expected, timeout=10)]


class ExitTest(unittest.TestCase):
    def test_process_that_exits_at_once_loses_nothing(self) -> None:
        messages = run_and_collect(EXIT_AT_ONCE, 10000)
        # Four senders: the daemon may get them out of order (it sorts by timestamp).
        self.assertEqual(sorted(messages), sorted(f"record {i}" for i in range(10000)))
        self.assertNotEqual(messages, [f"record {i}" for i in range(10000)])

    def test_from_dictconfig_with_a_formatter(self) -> None:
        messages = run_and_collect(DICTCONFIG_AT_ONCE, 1000)
        self.assertEqual(
            messages, [f"INFO record {i}" for i in range(1000)]
        )  # one sender: in order

    def test_from_an_ini_file_with_a_positional_address(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            result = run_python(FILECONFIG % ("@" + daemon.address[1:]))
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual([e.message for e in daemon.wait_for(1)], ["from an INI file"])

    @unittest.skipIf(sys.version_info < (3, 12), "the handlers key of QueueHandler is 3.12+")
    def test_standard_library_keys(self) -> None:
        messages = run_and_collect(STDLIB_KEYS, 1000)
        self.assertEqual(messages, [f"record {i}" for i in range(1000)])

    def test_records_after_logging_shutdown_are_sent_too(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            result = run_python(AFTER_SHUTDOWN, daemon.address)
            self.assertEqual(result.returncode, 0, result.stderr)
            messages = [e.message for e in daemon.events]
        self.assertEqual(
            messages,
            ["before exit", "from an exit hook after logging.shutdown", "from __del__"],
        )

    def test_a_daemon_thread_logging_through_exit_loses_nothing_it_logged(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            result = run_python(DAEMON_THREAD_AT_EXIT, daemon.address)
            self.assertEqual(result.returncode, 0, result.stderr)
            time.sleep(0.2)  # a record it was sending when the process ended, if any
            messages = [e.message for e in daemon.events]
        self.assertGreater(len(messages), 5)
        self.assertEqual(
            sorted(messages), sorted(f"daemon thread {i}" for i in range(len(messages)))
        )
        self.assertNotIn("globus.cwlogger", result.stderr)  # none went to the fallback


class ChildrenTest(unittest.TestCase):
    """Children that end through os._exit after multiprocessing's bootstrap."""

    expected = sorted(f"child {n} record {i}" for n in range(4) for i in range(200))

    def check(self, how: str, method: str) -> None:
        messages = run_and_collect(CHILDREN, 800, how, method)
        self.assertEqual(sorted(messages), self.expected)

    def test_fork_processes(self) -> None:
        self.check("process", "fork")

    def test_forkserver_processes(self) -> None:
        self.check("process", "forkserver")

    def test_spawn_processes(self) -> None:
        self.check("process", "spawn")

    def test_pool_that_replaces_each_worker_after_a_task(self) -> None:
        self.check("pool", "fork")

    def test_process_pool_executor(self) -> None:
        self.check("executor", "fork")

    def test_process_pool_executor_forkserver(self) -> None:
        self.check("executor", "forkserver")

    def test_a_bare_os_exit_needs_children_sync(self) -> None:
        messages = run_and_collect(BARE_EXIT_CHILD, 200, "sync")
        self.assertEqual(messages, [f"child record {i}" for i in range(200)])


class LocalDaemonAddress:
    """Where a stand-in in another process listens (for QueuedTest.make)."""

    def __init__(self, address: str) -> None:
        self.address = address


class QueuedTest(unittest.TestCase):
    timeout = 0.3

    def make(
        self, daemon: LocalDaemon | LocalDaemonAddress, **kwargs: object
    ) -> GlobusQueueHandler:
        options: dict[str, object] = {"timeout": self.timeout, **kwargs}
        handler = GlobusQueueHandler(daemon.address, **options)  # type: ignore[arg-type]
        self.addCleanup(handler.close)
        return handler

    def daemon(self, **kwargs: object) -> LocalDaemon:
        daemon = LocalDaemon(unique_address(), **kwargs).start()  # type: ignore[arg-type]
        self.addCleanup(daemon.stop)
        return daemon

    def test_timestamps_are_creation_times_when_sending_is_delayed(self) -> None:
        daemon = self.daemon(behaviour="stall")
        handler = self.make(daemon, timeout=5)
        created: list[float] = []

        def note_creation(record: logging.LogRecord) -> bool:
            created.append(record.created)
            return True

        handler.addFilter(note_creation)
        for i in range(5):
            handler.handle(logging.makeLogRecord({"msg": f"delayed {i}"}))
        time.sleep(0.3)
        daemon.behaviour = "ok"
        handler.close()  # waits for the queue to drain
        events = sorted(daemon.wait_for(5), key=lambda e: e.message)  # in any order
        self.assertEqual([e.message for e in events], [f"delayed {i}" for i in range(5)])
        self.assertEqual([e.timestamp for e in events], [int(c * 1000) for c in created])
        self.assertEqual(handler.target.delivered, 5)

    def test_flush_waits_until_what_was_queued_is_delivered(self) -> None:
        daemon = self.daemon()
        daemon.delay = 0.01
        handler = self.make(daemon, timeout=5)
        for i in range(20):
            handler.handle(logging.makeLogRecord({"msg": f"record {i}"}))
        handler.flush()
        self.assertEqual(len(daemon.events), 20)
        self.assertEqual(handler.target.delivered, 20)

    def test_flush_waits_at_most_the_timeout(self) -> None:
        daemon = self.daemon(behaviour="stall")
        handler = self.make(daemon, timeout=0.3)
        handler.handle(logging.makeLogRecord({"msg": "stuck"}))
        start = time.monotonic()
        with contextlib.redirect_stderr(io.StringIO()):
            handler.flush()
        self.assertLess(time.monotonic() - start, 0.3 + 0.15)

    def test_close_drains_within_its_deadline_and_the_rest_goes_to_the_fallback(self) -> None:
        daemon = self.daemon()
        daemon.delay = 0.05  # alive but slow: 200 records would take 10 s
        fallback = ListHandler()
        handler = self.make(daemon, fallback=fallback)
        for i in range(200):
            handler.handle(logging.makeLogRecord({"msg": f"record {i}"}))
        start = time.monotonic()
        with contextlib.redirect_stderr(io.StringIO()):
            handler.close()
        self.assertLess(time.monotonic() - start, 7 * self.timeout + 0.2)
        target = handler.target
        delivered = {e.message for e in daemon.events if e.message.startswith("record")}
        self.assertTrue(wait_until(lambda: target.delivered == len(delivered)))
        self.assertGreater(target.undelivered, 100)
        self.assertEqual(target.delivered + target.undelivered, 200)
        self.assertEqual(len(fallback.records), target.undelivered)
        self.assertEqual(delivered | set(fallback.messages()), {f"record {i}" for i in range(200)})

    def test_records_after_close_go_through_at_once(self) -> None:
        daemon = self.daemon()
        handler = self.make(daemon)
        handler.close()
        handler.handle(logging.makeLogRecord({"msg": "after close"}))
        self.assertEqual([e.message for e in daemon.events], ["after close"])  # already there

    def test_a_thread_still_logging_through_a_closed_handler_loses_nothing(self) -> None:
        # As when dictConfig replaces handlers while other threads log: they
        # may still be inside the old handler when it is closed.
        daemon = self.daemon()
        handler = self.make(daemon)
        sent = []

        def keep_logging() -> None:
            for i in range(300):
                handler.handle(logging.makeLogRecord({"msg": f"record {i}"}))
                sent.append(i)
                time.sleep(0.0005)

        thread = threading.Thread(target=keep_logging)
        thread.start()
        self.assertTrue(wait_until(lambda: len(sent) > 50))
        handler.close()
        thread.join()
        messages = [e.message for e in daemon.wait_for(300, strict=True)]
        self.assertEqual(sorted(messages), sorted(f"record {i}" for i in range(300)))

    def test_the_queue_is_bounded_and_what_does_not_fit_is_counted(self) -> None:
        daemon = self.daemon(behaviour="stall")
        fallback = ListHandler()
        handler = self.make(daemon, timeout=5, max_queue=10, fallback=fallback, senders=1)
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            handler.handle(logging.makeLogRecord({"msg": "record 0"}))
            self.assertTrue(wait_until(lambda: handler._queue.qsize() == 0))  # being sent
            for i in range(1, 30):
                handler.handle(logging.makeLogRecord({"msg": f"record {i}"}))
        # One is being sent; ten wait; the other 19 did not fit.
        self.assertEqual(handler._queue.qsize(), 10)
        self.assertEqual(fallback.messages(), [f"record {i}" for i in range(11, 30)])
        self.assertEqual(handler.target.undelivered, 19)
        self.assertIn("QueueFull", stderr.getvalue())

    def test_forked_child_delivers_through_its_own_thread(self) -> None:
        daemon = self.daemon()
        handler = self.make(daemon)
        handler.handle(logging.makeLogRecord({"msg": "parent"}))
        pid = fork()
        if pid == 0:
            status = 1
            try:
                for i in range(3):
                    handler.handle(logging.makeLogRecord({"msg": f"child {i}"}))
                handler.close()
                status = 0 if handler.target.delivered == 3 else 2
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        messages = sorted(e.message for e in daemon.wait_for(4))
        self.assertEqual(messages, ["child 0", "child 1", "child 2", "parent"])

    def test_a_child_forked_after_close_sends_in_the_logging_call(self) -> None:
        daemon = self.daemon()
        handler = self.make(daemon)
        handler.close()
        pid = fork()
        if pid == 0:
            status = 1
            try:
                handler.handle(logging.makeLogRecord({"msg": "child, after close"}))
                status = 0 if handler.target.delivered == 1 else 2  # sent before returning
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertEqual([e.message for e in daemon.wait_for(1)], ["child, after close"])

    def test_a_sync_child_leaves_the_parents_queue_to_the_parent(self) -> None:
        daemon = self.daemon(behaviour="stall")
        handler = self.make(daemon, timeout=1, senders=1, children="sync")
        for i in range(5):  # one being sent, four waiting
            handler.handle(logging.makeLogRecord({"msg": f"parent {i}"}))
        self.assertTrue(wait_until(lambda: handler._queue.qsize() == 4))
        pid = fork()
        if pid == 0:
            status = 1
            try:  # sending the parent's records again would duplicate them
                status = 0 if (handler._sync, handler._queue.qsize()) == (True, 0) else 2
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)

    def test_unformattable_record_is_not_lost(self) -> None:
        daemon = self.daemon()
        handler = self.make(daemon)
        handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
        with contextlib.redirect_stderr(io.StringIO()):
            record = logging.makeLogRecord({"msg": "%d", "args": ("x",)})
            record.levelname, record.levelno = "INFO", logging.INFO
            handler.handle(record)
            handler.close()
        (event,) = daemon.wait_for(1)
        self.assertTrue(event.message.startswith("[INFO] INFO"), event.message)
        self.assertIn("could not format '%d' % ('x',)", event.message)

    def test_filters_are_applied_before_queueing(self) -> None:
        daemon = self.daemon()
        handler = self.make(daemon)
        handler.addFilter(lambda record: record.getMessage() != "drop me")
        self.assertFalse(handler.handle(logging.makeLogRecord({"msg": "drop me"})))
        self.assertTrue(handler.handle(logging.makeLogRecord({"msg": "keep me"})))
        handler.close()
        self.assertEqual([e.message for e in daemon.events], ["keep me"])

    def test_a_formatter_that_always_fails(self) -> None:
        class Failing(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                msg = "formatter down"
                raise RuntimeError(msg)

        daemon = self.daemon()
        handler = self.make(daemon)
        handler.setFormatter(Failing())
        with contextlib.redirect_stderr(io.StringIO()):
            handler.handle(logging.makeLogRecord({"msg": "kept anyway"}))
            handler.close()
        (event,) = daemon.wait_for(1, strict=True)
        self.assertIn("could not format 'kept anyway'", event.message)

    def test_a_flush_during_close_is_not_left_waiting(self) -> None:
        daemon = self.daemon(behaviour="stall")
        handler = self.make(daemon, timeout=0.3, fallback="off")
        with contextlib.redirect_stderr(io.StringIO()):
            handler.handle(logging.makeLogRecord({"msg": "stuck"}))
            flushing = threading.Thread(target=handler.flush)
            closing = threading.Thread(target=handler.close)
            closing.start()
            flushing.start()
            flushing.join()
            closing.join()
        self.assertEqual(handler.target.delivered + handler.target.undelivered, 1)

    def test_one_sender_keeps_the_order(self) -> None:
        daemon = self.daemon()
        handler = self.make(daemon, senders=1)
        for i in range(300):
            handler.handle(logging.makeLogRecord({"msg": f"record {i}"}))
        handler.close()
        messages = [e.message for e in daemon.wait_for(300, strict=True)]
        self.assertEqual(messages, [f"record {i}" for i in range(300)])

    def test_several_senders_send_at_once(self) -> None:
        address = unique_address()
        listener = socket.socket(socket.AF_UNIX)
        self.addCleanup(listener.close)
        listener.bind(address)
        listener.listen(8)
        handler = GlobusQueueHandler(address, timeout=2, fallback="off", senders=4)
        for i in range(4):
            handler.handle(logging.makeLogRecord({"msg": f"record {i}"}))
        listener.settimeout(1)
        waiting = []
        for _ in range(4):  # four requests at once, none answered yet
            conn, _ = listener.accept()
            self.addCleanup(conn.close)
            waiting.append(conn)
        for conn in waiting:
            conn.settimeout(1)
            self.assertTrue(conn.recv(65536).startswith(b'{"message": "record '))
            conn.sendall(
                b'{"status": "ok", "health": {"queue_length": 1, "queue_percent_full": 0.0}}\n'
            )
        handler.close()
        self.assertEqual(handler.target.delivered, 4)

    def test_a_caller_that_outruns_the_senders_yields_to_them_now_and_then(self) -> None:
        # A caller that never waits keeps the interpreter lock from the
        # senders but once per switch interval; each 512 records it lets
        # them have it (nox -s bench measures what that does to the rate).
        daemon = self.daemon(behaviour="hang")  # nothing drains: the queue only grows
        handler = self.make(daemon, timeout=5, fallback="off")
        for i in range(4):  # each sender takes one, and waits for its reply
            handler.handle(logging.makeLogRecord({"msg": f"held {i}"}))
        self.assertTrue(wait_until(lambda: len(daemon._held) == 4))
        slept: list[float] = []
        sleep = time.sleep

        def noted(seconds: float) -> None:
            slept.append(seconds)
            sleep(seconds)

        with mock.patch.object(time, "sleep", noted):
            for i in range(2048):
                handler.handle(logging.makeLogRecord({"msg": f"burst {i}"}))
        self.assertEqual(slept.count(1e-6), 4)  # at 511, 1023, 1535 and 2047 waiting

    def test_a_second_close_while_the_first_drains_is_instant(self) -> None:
        daemon = self.daemon(behaviour="hang")
        handler = self.make(daemon, timeout=0.5, fallback="off", senders=1)
        target = handler.target
        with contextlib.redirect_stderr(io.StringIO()):
            handler.handle(logging.makeLogRecord({"msg": "never answered"}))
            self.assertTrue(wait_until(lambda: target._held))  # held for a late reply
            target.retryTime = None  # no backoff: the next is sent, and waits
            handler.handle(logging.makeLogRecord({"msg": "being sent"}))
            self.assertTrue(wait_until(lambda: len(daemon.requests) == 2))
            first = threading.Thread(target=handler.close)
            first.start()
            self.assertTrue(wait_until(lambda: handler._closed))
            start = time.monotonic()
            handler.close()  # on another thread, while the first waits for the reply
            took = time.monotonic() - start
            first.join()
        self.assertLess(took, 0.5 / 3)

    def test_close_twice(self) -> None:
        handler = GlobusQueueHandler(unique_address())
        handler.close()
        handler.close()

    def test_the_signature_of_the_socket_handler(self) -> None:
        handler = GlobusQueueHandler("@a.name", None, timeout=2.5, fallback="off", daemon_uid=0)
        self.addCleanup(handler.close)
        target = handler.target
        self.assertIsInstance(target, GlobusSocketHandler)
        self.assertEqual(
            (target.address, target.timeout, target.fallback, target.daemon_uid),
            ("\0a.name", 2.5, None, 0),
        )
        self.assertEqual(
            (handler.max_queue, handler.children, handler.senders), (100_000, "queue", 4)
        )
        self.assertEqual(len(handler._threads), 4)

    def test_bad_arguments_are_configuration_errors(self) -> None:
        cases: list[tuple[dict[str, object], type[Exception], str]] = [
            ({"timeout": -1}, ValueError, "-1"),
            ({"max_queue": 0}, ValueError, "0"),
            ({"max_queue": "10"}, TypeError, "'10'"),
            ({"children": "thread"}, ValueError, "'thread'"),
            ({"senders": 0}, ValueError, "0"),
            ({"no_such_option": 1}, TypeError, "no_such_option"),
        ]
        for kwargs, error, text in cases:
            with self.subTest(**kwargs), self.assertRaises(error) as caught:
                GlobusQueueHandler(**kwargs)  # type: ignore[arg-type]
            self.assertIn(text, str(caught.exception))


if __name__ == "__main__":
    unittest.main()
