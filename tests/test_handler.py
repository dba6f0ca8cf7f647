"""GlobusSocketHandler against a real listener on a real abstract socket."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import logging.config
import math
import os
import socket
import tempfile
import threading
import time
import unittest
from unittest import mock

from globus.cwlogger import ENV_ADDRESS, GlobusSocketHandler
from globus.cwlogger.protocol import EMPTY_MESSAGE, MAX_MESSAGE_BYTES
from globus.cwlogger.testing import LocalDaemon

from .support import DaemonTestCase, unique_address


def summary_of(message: str) -> dict[str, object]:
    body = json.loads(message)
    assert isinstance(body, dict)
    assert body["subtype"] == "cwlogger.undelivered"
    return body


class DeliveryTest(DaemonTestCase):
    def test_one_acknowledged_request_per_record_byte_for_byte(self) -> None:
        record = logging.makeLogRecord({"msg": 'said "hi"\nbye', "created": 1764090000.1234})
        self.handler.handle(record)
        self.assertEqual(
            self.daemon.requests,
            [b'{"message": "said \\"hi\\"\\nbye", "timestamp": 1764090000123}\n'],
        )
        self.assertEqual((self.handler.delivered, self.handler.undelivered), (1, 0))

    def test_timestamp_is_when_the_record_was_created(self) -> None:
        record = self.log.makeRecord(self.log.name, logging.INFO, "f", 1, "late", (), None)
        time.sleep(0.05)
        self.handler.handle(record)
        (event,) = self.daemon.wait_for(1)
        self.assertEqual(event.timestamp, int(record.created * 1000))
        self.assertLess(event.timestamp or 0, time.time() * 1000 - 40)

    def test_traceback_stays_one_event(self) -> None:
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        try:
            int("x")
        except ValueError:
            self.log.exception("failed")
        (event,) = self.daemon.wait_for(1)
        self.assertTrue(
            event.message.startswith("ERROR failed\nTraceback (most recent call last):")
        )
        self.assertIn("ValueError: invalid literal", event.message)

    def test_oversized_is_cut_and_counted(self) -> None:
        self.log.info("%s", "y" * (MAX_MESSAGE_BYTES + 10))
        self.log.info("small")
        events = self.daemon.wait_for(2)
        self.assertLessEqual(len(events[0].message.encode()), MAX_MESSAGE_BYTES)
        self.assertRegex(events[0].message, r"\[\d+ bytes cut\]$")
        h = self.handler
        self.assertEqual((h.delivered, h.undelivered, h.truncated), (2, 0, 1))

    def test_empty_and_surrogate_messages(self) -> None:
        self.log.info("")
        self.log.info("bad \udc80 byte")
        events = self.daemon.wait_for(2)
        self.assertEqual([e.message for e in events], [EMPTY_MESSAGE, "bad \ufffd byte"])
        self.assertFalse(self.daemon.wedged)
        self.assertEqual(self.handler.delivered, 2)

    def test_threads_share_one_handler(self) -> None:
        def work(n: int) -> None:
            for i in range(100):
                self.log.info("thread %d record %d", n, i)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        events = self.daemon.wait_for(800)
        expected = [f"thread {n} record {i}" for n in range(8) for i in range(100)]
        self.assertEqual(sorted(e.message for e in events), sorted(expected))
        self.assertEqual((self.handler.delivered, self.handler.undelivered), (800, 0))

    def test_works_in_a_child_after_fork(self) -> None:
        self.log.info("parent before")
        pid = os.fork()
        if pid == 0:  # the child: report through its exit status only
            status = 1
            try:
                for i in range(3):
                    self.log.info("child %d", i)
                status = 0 if self.handler.delivered == 3 else 2  # the child's own
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(
            os.waitstatus_to_exitcode(status)
            if hasattr(os, "waitstatus_to_exitcode")
            else status >> 8,
            0,
        )
        self.log.info("parent after")
        messages = [e.message for e in self.daemon.wait_for(5)]
        self.assertEqual(
            sorted(messages),
            sorted(["parent before", "child 0", "child 1", "child 2", "parent after"]),
        )

    def test_format_error_does_not_raise_and_is_not_lost(self) -> None:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            self.log.info("%d", "not a number")
        self.assertIn("not a number", stderr.getvalue())  # handleError printed it
        (event,) = self.daemon.wait_for(1)
        self.assertIn("could not format '%d' % ('not a number',): TypeError", event.message)
        self.assertEqual((self.handler.delivered, self.handler.undelivered), (1, 0))

    def test_format_error_without_daemon_or_raise_exceptions_reaches_the_fallback(self) -> None:
        self.daemon.stop()
        self.addCleanup(setattr, logging, "raiseExceptions", logging.raiseExceptions)
        logging.raiseExceptions = False  # handleError prints nothing
        with contextlib.redirect_stderr(io.StringIO()):
            self.log.info("%d", "not a number")
        (record,) = self.fallback.records
        self.assertIn("could not format '%d'", record.getMessage())
        self.assertEqual(self.handler.undelivered, 1)

    def test_registered_until_closed_and_close_twice(self) -> None:
        name = f"cw-{unique_address()[1:]}"
        logging.config.dictConfig(
            {
                "version": 1,
                "incremental": False,
                "disable_existing_loggers": False,
                "handlers": {
                    name: {
                        "class": "globus.cwlogger.GlobusSocketHandler",
                        "host": self.daemon.address,
                    }
                },
            }
        )
        handler = logging._handlers[name]  # type: ignore[attr-defined]
        self.addCleanup(handler.close)
        record = logging.makeLogRecord({"msg": "x"})
        handler.handle(record)
        with LocalDaemon(unique_address()) as other:
            handler.address = other.address + "-absent"
            with contextlib.redirect_stderr(io.StringIO()):
                handler.handle(record)
        self.assertIs(logging._handlers.get(name), handler)  # type: ignore[attr-defined]
        handler.close()
        handler.close()
        self.assertNotIn(name, logging._handlers)  # type: ignore[attr-defined]


class FailureTest(DaemonTestCase):
    timeout = 0.3

    def assert_fallback(self, *messages: str) -> None:
        self.assertEqual([r.getMessage() for r in self.fallback.records], list(messages))

    def timed_log(self, message: str) -> float:
        start = time.monotonic()
        self.log.info(message)
        return time.monotonic() - start

    def test_no_daemon_then_daemon_returns(self) -> None:
        self.daemon.stop()
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            for i in range(3):
                self.assertLess(self.timed_log(f"lost {i}"), self.timeout)
        self.assert_fallback("lost 0", "lost 1", "lost 2")
        self.assertIn("ConnectionRefusedError", stderr.getvalue())  # one warning
        self.assertEqual(stderr.getvalue().count("globus.cwlogger:"), 1)
        with LocalDaemon(self.daemon.address) as daemon:
            self.log.info("back")
            events = daemon.wait_for(2)
        summary = summary_of(events[0].message)
        self.assertEqual(summary["undelivered"], 3)
        self.assertEqual(events[1].message, "back")
        h = self.handler
        self.assertEqual((h.delivered, h.undelivered), (1, 3))

    def test_filesystem_path_left_behind(self) -> None:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "cwlogs.sock")
        handler = self.make_handler(host=path)
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            handler.handle(logging.makeLogRecord({"msg": "no file"}))
            stale = socket.socket(socket.AF_UNIX)
            stale.bind(path)
            stale.close()  # the file stays: a dead daemon's socket
            handler.handle(logging.makeLogRecord({"msg": "stale file"}))
        self.assertIn("FileNotFoundError", stderr.getvalue())
        self.assert_fallback("no file", "stale file")
        os.unlink(path)
        with LocalDaemon(path) as daemon:
            handler.handle(logging.makeLogRecord({"msg": "back"}))
            events = daemon.wait_for(2)
        self.assertEqual(summary_of(events[0].message)["undelivered"], 2)
        self.assertEqual(events[1].message, "back")

    def test_error_reply(self) -> None:
        self.daemon.behaviour = "refuse"
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            self.log.info("refused")
        self.assertIn("too many events in queue", stderr.getvalue())
        self.daemon.behaviour = "ok"
        self.log.info("accepted")  # no backoff after an answer
        self.assert_fallback("refused")
        events = self.daemon.wait_for(2)
        self.assertEqual(summary_of(events[0].message)["undelivered"], 1)
        self.assertEqual(events[1].message, "accepted")

    def test_close_without_reply(self) -> None:
        self.daemon.behaviour = "close"
        with contextlib.redirect_stderr(io.StringIO()):
            self.log.info("dropped by daemon")
        self.assert_fallback("dropped by daemon")
        self.assertEqual(self.handler.undelivered, 1)

    def test_hung_daemon_blocks_at_most_the_timeout_then_backs_off(self) -> None:
        self.daemon.behaviour = "hang"
        with contextlib.redirect_stderr(io.StringIO()):
            first = self.timed_log("hung 1")
            second = self.timed_log("hung 2")
        self.assertGreaterEqual(first, self.timeout * 0.9)
        self.assertLess(first, self.timeout + 0.2)
        self.assertLess(second, self.timeout / 3)  # backing off: straight to the fallback
        self.assert_fallback("hung 1", "hung 2")
        self.daemon.behaviour = "ok"  # answers the request it held
        deadline = time.monotonic() + 5
        while len(self.daemon.events) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.log.info("resumed")  # well within the 1 s backoff: the late reply ended it
        messages = [e.message for e in self.daemon.wait_for(3)]
        self.assertEqual(messages[0], "hung 1")
        self.assertEqual(summary_of(messages[1])["undelivered"], 2)
        self.assertEqual(messages[2], "resumed")

    def test_requests_left_waiting_are_never_abandoned(self) -> None:
        self.handler.retryStart = 0.1  # retry soon: two requests left waiting
        self.daemon.behaviour = "hang"
        with contextlib.redirect_stderr(io.StringIO()):
            self.log.info("hung 1")
            time.sleep(0.15)
            self.log.info("hung 2")  # the backoff ran out: tried again, timed out
            self.log.info("backing off")
        self.assertEqual(len(self.handler._pending), 2)
        self.daemon.behaviour = "ok"  # answers both, in order
        self.assertEqual(len(self.daemon.wait_for(2)), 2)
        self.log.info("resumed")
        self.assertEqual(self.handler._pending, [])
        self.handler.close()
        messages = [e.message for e in self.daemon.wait_for(4)]
        self.assertEqual(messages[0], "hung 1")
        self.assertEqual(summary_of(messages[1])["undelivered"], 1)  # the retry's first request
        # the late summary counted "hung 1": this one the two records since
        self.assertEqual(summary_of(messages[2])["undelivered"], 2)
        self.assertEqual(messages[3], "resumed")
        self.assertEqual(self.daemon.hangups, 0)

    def test_threads_sharing_the_handler_each_wait_for_their_own_reply_only(self) -> None:
        self.daemon.delay = 0.2  # serves one at a time: the third reply comes at 0.6 s
        barrier = threading.Barrier(3)
        took: list[float] = []

        def log_once(n: int) -> None:
            barrier.wait()
            took.append(self.timed_log(f"thread {n}"))

        threads = [threading.Thread(target=log_once, args=(n,)) for n in range(3)]
        with contextlib.redirect_stderr(io.StringIO()):
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.assertEqual(len(took), 3)
        self.assertLess(max(took), self.timeout + 0.1)  # not behind another thread's call
        self.assertEqual(self.handler.delivered + self.handler.undelivered, 3)

    def test_full_backlog_waits_for_room_within_the_timeout(self) -> None:
        address = unique_address()
        with LocalDaemon(address, behaviour="stall", backlog=0) as daemon:
            handler = self.make_handler(host=address)
            fillers = []
            for _ in range(2):  # a backlog of 0 still queues one connection
                s = socket.socket(socket.AF_UNIX)
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(address)
                fillers.append(s)
            start = time.monotonic()
            with contextlib.redirect_stderr(io.StringIO()):
                handler.handle(logging.makeLogRecord({"msg": "no room"}))
            elapsed = time.monotonic() - start
            self.assertGreaterEqual(elapsed, self.timeout * 0.9)  # it waited for room
            self.assertLess(elapsed, self.timeout + 0.2)
            self.assert_fallback("no room")
            for s in fillers:
                s.close()
            daemon.behaviour = "ok"  # drains the backlog: there is room again
            time.sleep(0.1)
            handler.handle(logging.makeLogRecord({"msg": "room again"}))
            self.assertLess(time.monotonic() - start, handler.retryStart)  # not after the backoff
            events = daemon.wait_for(2)
        self.assertEqual(summary_of(events[0].message)["undelivered"], 1)
        self.assertEqual(events[1].message, "room again")

    def test_fallback_off_still_counts(self) -> None:
        self.daemon.stop()
        for off in (None, False, "off"):
            with self.subTest(off=off), contextlib.redirect_stderr(io.StringIO()):
                handler = self.make_handler(fallback=off)
                self.assertIsNone(handler.fallback)
                handler.handle(logging.makeLogRecord({"msg": "gone"}))
                self.assertEqual(handler.undelivered, 1)

    def test_fallback_streams(self) -> None:
        self.daemon.stop()
        for name in ("stderr", "stdout"):
            with self.subTest(name=name):
                handler = self.make_handler(fallback=name)
                handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
                with (
                    contextlib.redirect_stderr(io.StringIO()) as err,
                    contextlib.redirect_stdout(io.StringIO()) as out,
                ):
                    handler.handle(
                        logging.makeLogRecord({"msg": "to the stream", "levelname": "ERROR"})
                    )
                self.assertIn(
                    "ERROR to the stream\n", (err if name == "stderr" else out).getvalue()
                )
                self.assertNotIn("to the stream", (out if name == "stderr" else err).getvalue())

    def test_fallback_by_handler_name(self) -> None:
        name = f"a-fallback-{unique_address()[1:]}"
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {
                    name: {"class": "tests.support.ListHandler"},
                    "zz-" + name: {
                        "class": "globus.cwlogger.GlobusSocketHandler",
                        "host": unique_address(),
                        "fallback": name,
                    },
                },
            }
        )
        fallback = logging._handlers[name]  # type: ignore[attr-defined]
        handler = logging._handlers["zz-" + name]  # type: ignore[attr-defined]
        self.addCleanup(fallback.close)
        self.addCleanup(handler.close)
        self.assertIs(handler.fallback, fallback)
        with contextlib.redirect_stderr(io.StringIO()):
            handler.handle(logging.makeLogRecord({"msg": "to a named handler"}))
        self.assertEqual([r.getMessage() for r in fallback.records], ["to a named handler"])

    def test_root_at_debug_no_recursion(self) -> None:
        self.daemon.stop()
        root = logging.getLogger()
        level = root.level
        handler = self.make_handler(fallback="off")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        self.addCleanup(root.setLevel, level)
        self.addCleanup(root.removeHandler, handler)
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            logging.getLogger("test.recursion").debug("once")
        self.assertEqual(handler.undelivered, 1)
        self.assertIn("globus.cwlogger:", stderr.getvalue())


class ConfigurationTest(unittest.TestCase):
    def setUp(self) -> None:
        environment = mock.patch.dict(os.environ)  # restored after each test
        environment.start()
        self.addCleanup(environment.stop)

    def test_defaults(self) -> None:
        os.environ.pop(ENV_ADDRESS, None)
        handler = GlobusSocketHandler()
        self.assertEqual(handler.address, "\0org.globus.cwlogs")
        self.assertIsNone(handler.port)
        self.assertEqual(handler.timeout, 1.0)
        self.assertEqual(handler.fallback, "stderr")
        self.assertIsInstance(handler, logging.handlers.SocketHandler)
        self.assertEqual(repr(handler), "<GlobusSocketHandler @org.globus.cwlogs (NOTSET)>")

    def test_environment_variable(self) -> None:
        os.environ[ENV_ADDRESS] = "/tmp/org.globus.cwlogs"
        self.assertEqual(GlobusSocketHandler().address, "/tmp/org.globus.cwlogs")
        self.assertEqual(GlobusSocketHandler("@explicit").address, "\0explicit")
        os.environ[ENV_ADDRESS] = "relative"
        with self.assertRaisesRegex(ValueError, "'relative'"):
            GlobusSocketHandler()

    def test_keywords_as_dictconfig_passes_them(self) -> None:
        handler = GlobusSocketHandler(host="\\0x", port=None, timeout=2, fallback="off")
        self.assertEqual((handler.address, handler.timeout, handler.fallback), ("\0x", 2.0, None))

    def test_bad_configuration_is_a_clear_error(self) -> None:
        cases: list[tuple[dict[str, object], type[Exception], str]] = [
            ({"timeout": -1}, ValueError, "-1"),
            ({"timeout": 0}, ValueError, "0"),
            ({"timeout": math.inf}, ValueError, "inf"),
            ({"timeout": math.nan}, ValueError, "nan"),
            ({"timeout": "1"}, TypeError, "'1'"),
            ({"timeout": True}, TypeError, "True"),
            ({"port": 9999}, ValueError, "9999"),
            ({"host": ""}, ValueError, "''"),
            ({"host": "localhost"}, ValueError, "'localhost'"),
            ({"host": 123}, TypeError, "123"),
            ({"fallback": "no-such-handler"}, ValueError, "'no-such-handler'"),
            ({"fallback": 3}, TypeError, "3"),
        ]
        for kwargs, error, text in cases:
            with self.subTest(**kwargs), self.assertRaises(error) as caught:
                GlobusSocketHandler(**kwargs)  # type: ignore[arg-type]
            self.assertIn(text, str(caught.exception))


if __name__ == "__main__":
    unittest.main()


class ListenerCredentialsTest(DaemonTestCase):
    def test_listener_of_another_uid_gets_nothing(self) -> None:
        handler = self.make_handler(daemon_uid=os.getuid() + 1)
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            for i in range(2):
                handler.handle(logging.makeLogRecord({"msg": f"secret {i}"}))
        self.assertEqual(self.daemon.events, [])
        self.assertNotIn(b"secret", b"".join(self.daemon.requests))
        self.assertEqual(handler.undelivered, 2)
        self.assertEqual([r.getMessage() for r in self.fallback.records], ["secret 0", "secret 1"])
        self.assertEqual(stderr.getvalue().count("globus.cwlogger:"), 1)  # one clear warning
        self.assertIn(f"not daemon_uid {os.getuid() + 1}", stderr.getvalue())

    def test_listener_of_the_given_uid_gets_records(self) -> None:
        handler = self.make_handler(daemon_uid=os.getuid())
        handler.handle(logging.makeLogRecord({"msg": "for the daemon"}))
        self.assertEqual([e.message for e in self.daemon.wait_for(1)], ["for the daemon"])

    @unittest.skipUnless(os.geteuid() == 0, "a listener of another uid needs root to set up")
    def test_listener_in_a_child_that_dropped_to_another_uid(self) -> None:
        address = unique_address()
        ready_r, ready_w = os.pipe()
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the impostor: binds the name first, as nobody
            status = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                impostor = socket.socket(socket.AF_UNIX)
                impostor.bind(address)
                impostor.listen(8)
                impostor.settimeout(1)
                os.write(ready_w, b"1")
                received = b""
                with contextlib.suppress(OSError):
                    while True:
                        conn, _ = impostor.accept()
                        conn.settimeout(1)
                        received += conn.recv(65536)
                        conn.close()
                os.write(report_w, str(len(received)).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(ready_w)
        os.close(report_w)
        self.assertEqual(os.read(ready_r, 1), b"1")
        handler = self.make_handler(host=address, daemon_uid=0)
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            handler.handle(logging.makeLogRecord({"msg": "audit record"}))
        report = os.read(report_r, 64)
        _, status = os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(report_r)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertEqual(report, b"0")  # the impostor received nothing
        self.assertEqual((handler.delivered, handler.undelivered), (0, 1))
        self.assertIn("runs as uid 65534, not daemon_uid 0", stderr.getvalue())

    def test_bad_uid_is_a_configuration_error(self) -> None:
        with self.assertRaisesRegex(ValueError, "-1"):
            GlobusSocketHandler(daemon_uid=-1)
        with self.assertRaisesRegex(TypeError, "'0'"):
            GlobusSocketHandler(daemon_uid="0")  # type: ignore[arg-type]


class CloseTest(DaemonTestCase):
    timeout = 0.3

    def test_close_waits_a_timeout_for_late_replies_then_lets_go(self) -> None:
        self.daemon.behaviour = "hang"
        with contextlib.redirect_stderr(io.StringIO()):
            self.log.info("late")
        threading.Timer(0.1, setattr, (self.daemon, "behaviour", "ok")).start()
        self.handler.close()  # the reply comes 0.1 s later: read, not abandoned
        self.assertEqual(self.handler._pending, [])
        self.assertEqual(self.daemon.hangups, 0)

    def test_close_tells_the_daemon_what_it_missed(self) -> None:
        self.daemon.stop()
        with contextlib.redirect_stderr(io.StringIO()):
            self.log.info("lost 0")
            self.log.info("lost 1")
        with LocalDaemon(self.daemon.address) as daemon:
            self.handler.close()  # no record follows: the summary goes now
            events = daemon.wait_for(1)
            self.handler.close()  # nothing more to say
            time.sleep(0.05)
            self.assertEqual(len(daemon.events), 1)
        self.assertEqual(summary_of(events[0].message)["undelivered"], 2)
        self.assertEqual(self.handler._missed, 0)

    def test_close_sends_no_summary_to_a_daemon_it_backs_off_from(self) -> None:
        self.daemon.behaviour = "hang"
        with contextlib.redirect_stderr(io.StringIO()):
            self.log.info("never answered")
        self.handler.close()  # waits for the late reply, in vain
        self.assertEqual(self.handler._pending, [])
        self.daemon.behaviour = "ok"
        self.handler.close()  # still backing off: no summary, no wait
        self.assertEqual(self.daemon.events, [])

    def test_close_gives_up_on_a_daemon_that_stays_hung(self) -> None:
        self.daemon.behaviour = "hang"
        with contextlib.redirect_stderr(io.StringIO()):
            self.log.info("never answered")
        start = time.monotonic()
        self.handler.close()
        self.assertLess(time.monotonic() - start, self.timeout + 0.2)
        self.assertEqual(self.handler._pending, [])
