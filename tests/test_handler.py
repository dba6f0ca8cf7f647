"""GlobusSocketHandler against a real listener on a real socket: what each
record becomes, and every decision about a daemon that does not answer."""

from __future__ import annotations

import contextlib
import io
import logging
import logging.config
import math
import os
import socket
import sys
import threading
import time
import unittest
from unittest import mock

from globus.cwlogger import ENV_ADDRESS, GlobusSocketHandler, _connect, protocol
from globus.cwlogger._connect import NEWER_DAEMON_PATH
from globus.cwlogger._records import iso_ms
from globus.cwlogger.protocol import EMPTY_MESSAGE, MAX_MESSAGE_BYTES
from globus.cwlogger.testing import LocalDaemon

from .support import (
    DaemonTestCase,
    PathAddress,
    answered_once,
    fork,
    message_of,
    summary_of,
    temporary_directory,
    unique_address,
    wait_until,
)


def quiet() -> contextlib.AbstractContextManager[io.StringIO]:
    """Catch the handler's own warnings on stderr."""
    return contextlib.redirect_stderr(io.StringIO())


class DeliveryTest(DaemonTestCase):
    def test_one_acknowledged_request_per_record_byte_for_byte(self) -> None:
        created = math.floor(time.time()) - 10 + 0.1234
        record = logging.makeLogRecord({"msg": 'said "hi"\nbye', "created": created})
        self.handler.handle(record)
        stamp = int(created * 1000)
        self.assertEqual(
            self.daemon.requests,
            [b'{"message": "said \\"hi\\"\\nbye", "timestamp": %d}\n' % stamp],
        )
        self.assertEqual(self.counts(), (1, 0))
        self.assertEqual(self.daemon.hangups, 0)  # the reply was read

    def test_timestamp_is_when_the_record_was_created(self) -> None:
        record = self.log.makeRecord(self.log.name, logging.INFO, "f", 1, "late", (), None)
        time.sleep(0.05)
        self.handler.handle(record)
        (event,) = self.daemon.wait_for(1)
        self.assertEqual(event.timestamp, int(record.created * 1000))
        self.assertEqual(self.handler.restamped, 0)

    def test_traceback_stays_one_event_with_a_formatter(self) -> None:
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

    def test_traceback_and_stack_kept_by_the_default_formatter(self) -> None:
        try:
            int("x")
        except ValueError:
            self.log.exception("failed")
        self.log.info("where", stack_info=True)
        first, second = self.daemon.wait_for(2)
        self.assertTrue(first.message.startswith("failed\nTraceback (most recent call last):"))
        self.assertTrue(second.message.startswith("where\nStack (most recent call last):"))

    def test_oversized_is_cut_and_counted(self) -> None:
        self.log.info("%s", "y" * (MAX_MESSAGE_BYTES + 10))
        self.log.info("small")
        events = self.daemon.wait_for(2)
        self.assertEqual(len(events[0].message.encode()), MAX_MESSAGE_BYTES)  # all that fits
        # 10 bytes over, and room for the marker's 18: 28 bytes cut.
        self.assertTrue(events[0].message.endswith("y... [28 bytes cut]"), events[0].message[-30:])
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
        self.assertEqual(self.counts(), (800, 0))

    def test_works_in_a_child_after_fork_with_its_own_counts(self) -> None:
        self.log.info("parent before")
        pid = fork()
        if pid == 0:  # the child: report through its exit status only
            status = 1
            try:
                for i in range(3):
                    self.log.info("child %d", i)
                status = 0 if self.counts() == (3, 0) else 2
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.log.info("parent after")
        messages = [e.message for e in self.daemon.wait_for(5)]
        self.assertEqual(
            sorted(messages),
            sorted(["parent before", "child 0", "child 1", "child 2", "parent after"]),
        )
        self.assertEqual(self.counts(), (2, 0))

    def test_format_error_does_not_raise_and_is_not_lost(self) -> None:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            self.log.info("%d", "not a number")
        self.assertIn("not a number", stderr.getvalue())  # handleError printed it
        (event,) = self.daemon.wait_for(1)
        self.assertIn("could not format '%d' % ('not a number',): TypeError", event.message)
        self.assertEqual(self.counts(), (1, 0))

    def test_format_error_goes_through_the_formatter(self) -> None:
        self.handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
        with quiet():
            self.log.warning("%d", "x")
        (event,) = self.daemon.wait_for(1)
        self.assertTrue(event.message.startswith("[WARNING] WARNING test."), event.message)

    def test_format_error_without_daemon_or_raise_exceptions_reaches_the_fallback(self) -> None:
        self.daemon.stop()
        self.addCleanup(setattr, logging, "raiseExceptions", logging.raiseExceptions)
        logging.raiseExceptions = False  # handleError prints nothing
        with quiet():
            self.log.info("%d", "not a number")
        (message,) = self.fallback.messages()
        self.assertIn("could not format '%d'", message)
        self.assertEqual(self.handler.undelivered, 1)

    def test_a_fault_of_the_handler_reaches_the_fallback_and_handle_error(self) -> None:
        class Broken(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return b"not a str"  # type: ignore[return-value]

        self.handler.setFormatter(Broken())
        with quiet() as stderr:
            self.log.info("kept")  # must not raise
        self.assertEqual([r.msg for r in self.fallback.records], ["kept"])
        self.assertEqual(self.counts(), (0, 1))
        self.assertIn("message must be a str", stderr.getvalue())  # handleError's report

    def test_a_message_whose_repr_fails_too_is_still_sent(self) -> None:
        class Hostile:
            def __str__(self) -> str:
                return "%d"

            def __repr__(self) -> str:
                msg = "no repr either"
                raise RuntimeError(msg)

        with quiet():
            self.log.info(Hostile(), "x")
        (event,) = self.daemon.wait_for(1, strict=True)
        self.assertIn("could not format <tests.test_handler", event.message)
        self.assertIn("Hostile object at 0x", event.message)

    def test_a_formatter_that_always_fails_still_gets_the_record_sent(self) -> None:
        class Failing(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                msg = "formatter down"
                raise RuntimeError(msg)

        self.handler.setFormatter(Failing())
        with quiet():
            self.log.info("plain %s", "text")
        (event,) = self.daemon.wait_for(1, strict=True)
        self.assertIn(
            "could not format 'plain %s' % ('text',): RuntimeError: formatter down", event.message
        )

    def test_an_acknowledgement_with_its_keys_in_another_order(self) -> None:
        ok = b'{"health": {"queue_length": 1, "queue_percent_full": 0.0}, "status": "ok"}\n'
        handler = self.make_handler(host=answered_once(self, ok))
        handler.handle(logging.makeLogRecord({"msg": "to another implementation"}))
        self.assertEqual((handler.delivered, handler.undelivered), (1, 0))

    def test_a_record_class_of_its_own_gives_its_own_message(self) -> None:
        class Record(logging.LogRecord):
            def getMessage(self) -> str:
                return "from getMessage: " + super().getMessage()

        previous = logging.getLogRecordFactory()
        logging.setLogRecordFactory(Record)
        self.addCleanup(logging.setLogRecordFactory, previous)
        self.log.info("plain")
        (event,) = self.daemon.wait_for(1, strict=True)
        self.assertEqual(event.message, "from getMessage: plain")

    def test_arguments_and_objects_as_the_default_formatter_gives_them(self) -> None:
        self.log.info("%s and %d", "text", 5)
        self.log.info(ValueError("an object as the message"))
        self.assertEqual(
            [e.message for e in self.daemon.wait_for(2, strict=True)],
            ["text and 5", "an object as the message"],
        )

    def test_a_reply_in_pieces_is_read_whole(self) -> None:
        head = b'{"status": "ok", "health": {"queue_length": 1, '
        address = answered_once(self, head, b'"queue_percent_full": 0.0}}\n', pause=0.05)
        handler = self.make_handler(host=address)
        handler.handle(logging.makeLogRecord({"msg": "answered in two writes"}))
        self.assertEqual((handler.delivered, handler.undelivered), (1, 0))

    def test_filters_are_applied(self) -> None:
        self.handler.addFilter(lambda record: record.getMessage() != "drop me")
        self.log.info("drop me")
        self.log.info("keep me")
        self.assertEqual([e.message for e in self.daemon.wait_for(1)], ["keep me"])
        self.assertEqual(self.counts(), (1, 0))

    def test_emf_through_a_formatter_that_cannot_carry_it_warns_once(self) -> None:
        extra = {"_aws": {"CloudWatchMetrics": []}, "Latency": 1}
        with quiet() as stderr:
            self.log.info("one", extra=extra)
            self.log.info("two", extra=extra)
        self.assertEqual(stderr.getvalue().count("does not write them"), 1, stderr.getvalue())
        self.assertEqual(self.counts(), (2, 0))  # sent all the same

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
        handler.handle(logging.makeLogRecord({"msg": "x"}))
        self.assertIs(logging._handlers.get(name), handler)  # type: ignore[attr-defined]
        handler.close()
        handler.close()
        self.assertNotIn(name, logging._handlers)  # type: ignore[attr-defined]
        handler.handle(logging.makeLogRecord({"msg": "after close"}))  # still usable
        self.assertEqual([e.message for e in self.daemon.wait_for(2)], ["x", "after close"])


class PathDeliveryTest(PathAddress, DeliveryTest):
    """The same, with the daemon on a filesystem path (newer daemons)."""


class TimestampTest(DaemonTestCase):
    def test_any_created_value_is_sent_stamped_now_and_counted(self) -> None:
        now = time.time()
        odd: list[object] = [
            math.nan,
            math.inf,
            -math.inf,
            -1.0,
            0.0,
            now - 15 * 86400,  # CloudWatch keeps 14 days
            now + 3 * 3600,  # and 2 hours ahead
            1e300,
            "yesterday",
            None,
        ]
        for created in odd:
            record = logging.makeLogRecord({"msg": f"created {created!r}"})
            record.created = created  # type: ignore[assignment]
            self.handler.handle(record)
        events = self.daemon.wait_for(len(odd))
        self.assertEqual(len(events), len(odd))
        for event in events:
            self.assertLessEqual(abs((event.timestamp or 0) / 1000 - now), 5, event)
        self.assertEqual(self.handler.restamped, len(odd))
        self.assertEqual(self.counts(), (len(odd), 0))

    def test_inside_the_window_is_kept(self) -> None:
        now = time.time()
        for created in (now - 13 * 86400, now + 3600):
            self.handler.handle(logging.makeLogRecord({"msg": "x", "created": created}))
        events = self.daemon.wait_for(2)
        self.assertEqual(
            [e.timestamp for e in events],
            [int((now - 13 * 86400) * 1000), int((now + 3600) * 1000)],
        )
        self.assertEqual(self.handler.restamped, 0)

    def test_the_window_has_margins_for_floats_and_other_numbers(self) -> None:
        # A minute inside or outside 14 days less an hour back and 2 hours
        # less ten minutes ahead; a float takes the handler's own inline
        # test, an int protocol.stamp's.
        now = int(time.time())
        back, ahead = 14 * 86400 - 3600, 2 * 3600 - 600
        edges = [now - back + 60, now - back - 60, now + ahead - 60, now + ahead + 60]
        created: list[float] = [*map(float, edges), *edges]
        for value in created:
            record = logging.makeLogRecord({"msg": "x"})
            record.created = value
            self.handler.handle(record)
        events = self.daemon.wait_for(len(created))
        kept = [(e.timestamp or 0) // 1000 in edges for e in events]
        self.assertEqual(kept, [True, False, True, False] * 2)
        self.assertEqual(self.handler.restamped, 4)

    def test_odd_created_values_do_not_stop_summaries(self) -> None:
        self.daemon.stop()
        with quiet():
            for created in (math.nan, 1e300, -5.0):
                self.handler.handle(logging.makeLogRecord({"msg": "x", "created": created}))
        with LocalDaemon(self.daemon.address) as daemon:
            self.log.info("back")
            self.log.info("again")
            events = daemon.wait_for(3)
        summary = summary_of(events[0].message)
        self.assertEqual(summary["undelivered"], 3)
        self.assertEqual([e.message for e in events[1:]], ["back", "again"])


class FailureTest(DaemonTestCase):
    timeout = 0.3

    def test_no_daemon_then_daemon_returns_with_the_next_record(self) -> None:
        self.daemon.stop()
        with quiet() as stderr:
            for i in range(3):
                self.assertLess(self.timed_log(f"lost {i}"), self.timeout)
        self.assertEqual(self.fallback.messages(), ["lost 0", "lost 1", "lost 2"])
        self.assertIn("ConnectionRefusedError", stderr.getvalue())
        self.assertEqual(stderr.getvalue().count("globus.cwlogger:"), 1)  # one warning a minute
        self.assertIsNone(self.handler.retryTime)  # absent: no backoff
        with LocalDaemon(self.daemon.address) as daemon:
            self.log.info("back")
            events = daemon.wait_for(2)
        summary = summary_of(events[0].message)
        self.assertEqual(summary["undelivered"], 3)
        self.assertEqual(summary["pid"], os.getpid())
        self.assertEqual(events[1].message, "back")
        self.assertEqual(self.counts(), (1, 3))

    def test_the_warning_comes_again_after_a_minute(self) -> None:
        self.daemon.stop()
        with quiet() as stderr:
            self.log.info("one")
            self.handler._warned_at -= 59.5  # not a minute yet
            self.log.info("two")
            self.assertEqual(stderr.getvalue().count("globus.cwlogger:"), 1)
            self.handler._warned_at -= 0.5
            self.log.info("three")
            self.log.info("four")
        self.assertEqual(stderr.getvalue().count("globus.cwlogger:"), 2)

    def test_summary_spans_exactly_the_records_it_reports(self) -> None:
        self.daemon.stop()
        now = round(time.time()) - 100.0
        with quiet():
            for offset in (7.25, 2.5, 9.125):  # out of order, as threads may log them
                self.handler.handle(logging.makeLogRecord({"msg": "x", "created": now + offset}))
        with LocalDaemon(self.daemon.address) as daemon:
            self.log.info("back")
            events = daemon.wait_for(2)
        summary = summary_of(events[0].message)
        self.assertEqual(summary["first"], iso_ms(int((now + 2.5) * 1000)))
        self.assertEqual(summary["last"], iso_ms(int((now + 9.125) * 1000)))

    def test_filesystem_path_left_behind(self) -> None:
        directory = temporary_directory(self)
        path = os.path.join(directory, "cwlogs.sock")
        handler = self.make_handler(host=path)
        with quiet() as stderr:
            handler.handle(logging.makeLogRecord({"msg": "no file"}))
            stale = socket.socket(socket.AF_UNIX)
            stale.bind(path)
            stale.close()  # the file stays: a dead daemon's socket
            handler.handle(logging.makeLogRecord({"msg": "stale file"}))
        self.assertIn("FileNotFoundError", stderr.getvalue())
        self.assertEqual(self.fallback.messages(), ["no file", "stale file"])
        os.unlink(path)
        with LocalDaemon(path) as daemon:
            handler.handle(logging.makeLogRecord({"msg": "back"}))
            events = daemon.wait_for(2)
        self.assertEqual(summary_of(events[0].message)["undelivered"], 2)
        self.assertEqual(events[1].message, "back")

    def test_error_reply_is_undelivered_and_not_backed_off(self) -> None:
        self.daemon.behaviour = "refuse"
        with quiet() as stderr:
            self.log.info("refused")
        self.assertIn("too many events in queue", stderr.getvalue())
        self.assertIsNone(self.handler.retryTime)
        self.daemon.behaviour = "ok"
        self.log.info("accepted")  # at once: it answered, so no backoff
        self.assertEqual(self.fallback.messages(), ["refused"])
        events = self.daemon.wait_for(2)
        self.assertEqual(summary_of(events[0].message)["undelivered"], 1)
        self.assertEqual(events[1].message, "accepted")

    def test_summaries_of_refusals_come_at_most_once_a_second(self) -> None:
        self.daemon.behaviour = "refuse"
        with quiet():
            self.log.info("refused 1")
            self.log.info("refused 2")  # a summary goes first, and is refused too
        self.daemon.behaviour = "ok"
        self.log.info("accepted 1")  # within the second: no summary yet
        messages = [e.message for e in self.daemon.wait_for(1)]
        self.assertEqual(messages, ["accepted 1"])
        self.handler._ledger.due -= 1.0  # the second has passed
        self.log.info("accepted 2")
        messages = [e.message for e in self.daemon.wait_for(3)]
        self.assertEqual(summary_of(messages[1])["undelivered"], 2)
        self.assertEqual(messages[2], "accepted 2")
        self.assertEqual(len(self.daemon.requests), 6)  # 3 refused (one a summary), 3 acked

    def test_close_without_reply(self) -> None:
        self.daemon.behaviour = "close"
        with quiet():
            self.log.info("dropped by daemon")
        self.assertEqual(self.fallback.messages(), ["dropped by daemon"])
        self.assertEqual(self.counts(), (0, 1))
        self.assertIsNone(self.handler.retryTime)

    def test_garbled_reply_is_undelivered(self) -> None:
        handler = self.make_handler(host=answered_once(self, b"not json\n"))
        with quiet() as stderr:
            handler.handle(logging.makeLogRecord({"msg": "to a stranger"}))
        self.assertEqual((handler.delivered, handler.undelivered), (0, 1))
        self.assertIn("ProtocolError", stderr.getvalue())

    def test_threads_sharing_the_handler_each_wait_for_their_own_reply_only(self) -> None:
        self.daemon.delay = 0.2  # serves one at a time: the third reply comes at 0.6 s
        barrier = threading.Barrier(3)
        took: list[float] = []

        def log_once(n: int) -> None:
            barrier.wait()
            took.append(self.timed_log(f"thread {n}"))

        threads = [threading.Thread(target=log_once, args=(n,)) for n in range(3)]
        with quiet():
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.assertEqual(len(took), 3)
        self.assertLess(max(took), self.timeout + 0.1)  # not behind another thread's call
        self.assertEqual(sum(self.counts()), 3)

    def test_fallback_off_still_counts(self) -> None:
        self.daemon.stop()
        for off in (None, False, "off"):
            with self.subTest(off=off), quiet():
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

    def test_a_fallback_that_fails_costs_the_caller_nothing(self) -> None:
        class Failing(logging.Handler):
            def handle(self, record: logging.LogRecord) -> bool:
                msg = "fallback down"
                raise RuntimeError(msg)

        self.daemon.stop()
        handler = self.make_handler(fallback=Failing())
        with quiet():
            handler.handle(logging.makeLogRecord({"msg": "nowhere to go"}))
        self.assertEqual(handler.undelivered, 1)

    def test_no_standard_streams_at_all(self) -> None:
        self.daemon.stop()
        for name in ("stderr", "stdout"):
            with (
                self.subTest(name=name),
                mock.patch.object(sys, "stderr", None),
                mock.patch.object(sys, "stdout", None),
            ):
                handler = self.make_handler(fallback=name)
                handler.handle(logging.makeLogRecord({"msg": "as under pythonw"}))
                self.assertEqual(handler.undelivered, 1)

    def test_a_standard_error_that_fails_costs_the_caller_nothing(self) -> None:
        class Broken(io.StringIO):
            def write(self, text: str) -> int:
                msg = "no room on stderr"
                raise OSError(msg)

        self.daemon.stop()
        handler = self.make_handler(fallback="stderr")
        with contextlib.redirect_stderr(Broken()):
            handler.handle(logging.makeLogRecord({"msg": "and nowhere to say so"}))
        self.assertEqual(handler.undelivered, 1)

    def test_a_broken_formatter_still_reaches_the_stream_fallback(self) -> None:
        class Failing(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                msg = "formatter down"
                raise RuntimeError(msg)

        self.daemon.stop()
        handler = self.make_handler(fallback="stderr")
        handler.setFormatter(Failing())
        with quiet() as stderr:
            handler.handle(logging.makeLogRecord({"msg": "the message at least"}))
        self.assertIn("could not format 'the message at least'", stderr.getvalue())

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
        with quiet():
            handler.handle(logging.makeLogRecord({"msg": "to a named handler"}))
        self.assertEqual(fallback.messages(), ["to a named handler"])

    def test_root_at_debug_no_recursion(self) -> None:
        self.daemon.stop()
        root = logging.getLogger()
        level = root.level
        handler = self.make_handler(fallback="off")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        self.addCleanup(root.setLevel, level)
        self.addCleanup(root.removeHandler, handler)
        with quiet() as stderr:
            logging.getLogger("test.recursion").debug("once")
        self.assertEqual(handler.undelivered, 1)
        self.assertIn("globus.cwlogger:", stderr.getvalue())


class HungDaemonTest(DaemonTestCase):
    """A daemon that takes requests and does not answer."""

    timeout = 0.2

    def setUp(self) -> None:
        super().setUp()
        self.handler.retryStart = 0.05  # backoff periods short enough to wait out
        self.handler.retryMax = 0.2
        self.daemon.behaviour = "hang"

    def expire_backoff(self) -> None:
        assert self.handler.retryTime is not None
        time.sleep(max(0.0, self.handler.retryTime - time.monotonic()) + 0.01)

    def test_blocks_at_most_the_timeout_then_backs_off(self) -> None:
        with quiet():
            first = self.timed_log("hung 1")
            requests = len(self.daemon.requests)
            second = self.timed_log("hung 2")
        self.assertGreaterEqual(first, self.timeout * 0.9)
        self.assertLess(first, self.timeout + 0.15)
        self.assertLess(second, self.timeout / 2)  # backing off: straight to the fallback
        self.assertEqual(len(self.daemon.requests), requests)  # not even tried
        self.assertEqual(self.fallback.messages(), ["hung 1", "hung 2"])

    def test_no_warning_for_records_sent_to_the_fallback_while_backing_off(self) -> None:
        self.handler.retryStart = self.handler.retryMax = 5.0
        with quiet() as stderr:
            self.log.info("hung")  # warns, and starts the backoff
            self.handler._warned_at -= 120
            self.log.info("backing off")
        self.assertIsNotNone(self.handler.retryTime)
        self.assertEqual(stderr.getvalue().count("globus.cwlogger:"), 1)
        self.assertEqual(self.fallback.messages(), ["hung", "backing off"])

    def test_a_refusal_ends_the_backoff_and_the_next_starts_afresh(self) -> None:
        with quiet():
            self.log.info("hung")
            self.expire_backoff()
            self.daemon.behaviour = "refuse"
            self.log.info("refused")  # the daemon answers: no backoff
            self.assertEqual((self.handler.retryTime, self.handler._stall), (None, None))
            self.daemon.behaviour = "hang"
            self.log.info("hung again")
        self.assertEqual(self.handler.retryPeriod, self.handler.retryStart)  # not doubled

    def test_an_exchange_with_no_time_left_still_times_out(self) -> None:
        # The deadline may pass between connecting and sending: what follows
        # must still be a timeout (the request is held), not a non-blocking
        # read's BlockingIOError or settimeout's ValueError.
        for left in (0.0, -1.0):
            with self.subTest(left=left):
                sock = _connect.connect([self.daemon.address], time.monotonic() + 1)
                self.addCleanup(sock.close)
                with self.assertRaises(OSError) as raised:
                    _connect.exchange(sock, protocol.encode_event("x", 0)[0], left)
                self.assertTrue(_connect.is_timeout(raised.exception), raised.exception)

    def test_backoff_doubles_up_to_its_cap(self) -> None:
        periods = []
        with quiet():
            for i in range(4):
                self.log.info("hung %d", i)
                periods.append(self.handler.retryPeriod)
                self.expire_backoff()
        self.assertEqual(periods, [0.05, 0.1, 0.2, 0.2])

    def test_threads_timing_out_together_start_one_backoff(self) -> None:
        barrier = threading.Barrier(8)

        def log_once() -> None:
            barrier.wait()
            self.log.info("hung together")

        threads = [threading.Thread(target=log_once) for _ in range(8)]
        with quiet():
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.assertEqual(self.handler.retryPeriod, 0.05)  # not doubled eight times
        self.assertEqual(self.counts(), (0, 8))

    def test_a_late_reply_ends_the_backoff(self) -> None:
        with quiet():
            self.log.info("hung 1")
            self.log.info("hung 2")
        self.handler.retryStart = 30.0  # far off: only the late reply can end it
        self.daemon.behaviour = "ok"  # answers the request it held
        self.daemon.wait_for(1, strict=True)  # and its reply sent
        self.log.info("resumed")
        messages = [e.message for e in self.daemon.wait_for(3)]
        self.assertEqual(messages[0], "hung 1")  # acknowledged late: also in the fallback
        self.assertEqual(summary_of(messages[1])["undelivered"], 2)
        self.assertEqual(messages[2], "resumed")
        self.assertEqual(self.daemon.hangups, 0)

    def test_only_one_summary_on_its_way(self) -> None:
        self.daemon.behaviour = "ok"
        self.daemon.stop()  # absent first: two records to report
        with quiet():
            self.log.info("absent 1")
            self.log.info("absent 2")
        with LocalDaemon(self.daemon.address, behaviour="hang") as daemon:
            with quiet():
                self.log.info("hung A")  # the summary goes first and gets no reply
                self.expire_backoff()
                self.log.info("hung B")  # no second summary while the first is unsettled
            self.assertEqual(len(daemon.requests), 2)
            self.assertEqual(summary_of(message_of(daemon.requests[0]))["undelivered"], 2)
            self.assertIn(b"hung B", daemon.requests[1])
            daemon.behaviour = "ok"  # answers both
            daemon.wait_for(2, strict=True)
            self.log.info("resumed")
            messages = [e.message for e in daemon.wait_for(4)]
        self.assertEqual(summary_of(messages[2])["undelivered"], 2)  # hung A and hung B only
        self.assertEqual(messages[3], "resumed")

    def test_a_summary_that_gets_no_answer_is_reported_again(self) -> None:
        self.daemon.behaviour = "ok"
        self.daemon.stop()
        with quiet():
            self.log.info("absent")
        with LocalDaemon(self.daemon.address, behaviour="hang") as daemon:
            with quiet():
                self.log.info("hung")  # the summary of "absent" gets no reply
                daemon.behaviour = "close"  # and is then dropped unanswered
                self.assertTrue(wait_until(lambda: not daemon._held))
                daemon.behaviour = "ok"
                self.handler.retryTime = None
                self.log.info("resumed")
            messages = [e.message for e in daemon.wait_for(2)]
        self.assertEqual(summary_of(messages[0])["undelivered"], 2)  # "absent" and "hung"
        self.assertEqual(messages[1], "resumed")

    def test_a_forked_child_leaves_the_parents_held_requests_to_the_parent(self) -> None:
        with quiet():
            self.log.info("held by the parent")
        pid = fork()
        if pid == 0:
            os._exit(0 if self.handler._held == [] and self.counts() == (0, 0) else 1)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.daemon.behaviour = "ok"
        self.daemon.wait_for(1, strict=True)  # and its reply sent
        self.assertEqual(len(self.handler._held), 1)
        self.handler.retryTime = None
        self.log.info("resumed")
        self.assertEqual(self.handler._held, [])  # the parent read the late reply
        self.assertEqual(self.daemon.hangups, 0)

    def test_held_requests_are_capped(self) -> None:
        self.handler.retryStart = self.handler.retryMax = 0.0  # no backoff: each one tries
        with quiet():
            for i in range(66):
                self.log.info("hung %d", i)
        self.assertEqual(len(self.handler._held), 64)
        self.assertTrue(
            wait_until(lambda: self.daemon.hangups == 0 and len(self.daemon._held) == 66)
        )

    def test_requests_left_waiting_are_never_abandoned(self) -> None:
        with quiet():
            self.log.info("hung 1")
            self.expire_backoff()
            self.log.info("hung 2")  # the summary of "hung 1" goes first, and waits too
            self.log.info("backing off")
        self.assertEqual(len(self.handler._held), 2)
        self.daemon.behaviour = "ok"  # answers both, in order
        self.daemon.wait_for(2, strict=True)
        self.log.info("resumed")
        self.assertEqual(self.handler._held, [])
        self.handler.close()
        messages = [e.message for e in self.daemon.wait_for(4, strict=True)]
        self.assertEqual(messages[0], "hung 1")
        self.assertEqual(summary_of(messages[1])["undelivered"], 1)  # its late reply settled it
        self.assertEqual(summary_of(messages[2])["undelivered"], 2)  # hung 2, backing off
        self.assertEqual(messages[3], "resumed")
        self.assertEqual(self.daemon.hangups, 0)


class FullBacklogTest(DaemonTestCase):
    timeout = 0.3

    def fill(self, address: str) -> list[socket.socket]:
        fillers = []
        for _ in range(2):  # a backlog of 0 still queues one connection
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(address)
            fillers.append(s)
            self.addCleanup(s.close)
        return fillers

    def test_waits_for_room_then_backs_off_then_resumes_when_room_appears(self) -> None:
        address = unique_address()
        with LocalDaemon(address, behaviour="stall", backlog=0) as daemon:
            handler = self.make_handler(host=address)
            fillers = self.fill(address)
            start = time.monotonic()
            with quiet():
                handler.handle(logging.makeLogRecord({"msg": "no room"}))
            elapsed = time.monotonic() - start
            self.assertGreaterEqual(elapsed, self.timeout * 0.9)  # it waited for room
            self.assertLess(elapsed, self.timeout + 0.15)
            start = time.monotonic()
            with quiet():
                handler.handle(logging.makeLogRecord({"msg": "still no room"}))
            self.assertLess(time.monotonic() - start, self.timeout / 2)  # backing off
            self.assertIsNotNone(handler.retryTime)
            for s in fillers:
                s.close()
            daemon.behaviour = "ok"  # drains the backlog: there is room again
            self.assertTrue(wait_until(lambda: len(daemon.requests) >= 1))  # the filler's
            handler.handle(logging.makeLogRecord({"msg": "room again"}))
            self.assertIsNone(handler.retryTime)  # within the backoff period: room ended it
            events = daemon.wait_for(2)
        self.assertEqual(self.fallback.messages(), ["no room", "still no room"])
        self.assertEqual(summary_of(events[0].message)["undelivered"], 2)
        self.assertEqual(events[1].message, "room again")


class CloseTest(DaemonTestCase):
    timeout = 0.3

    def test_close_waits_a_timeout_for_late_replies(self) -> None:
        self.daemon.behaviour = "hang"
        with quiet():
            self.log.info("late")
        threading.Timer(0.1, setattr, (self.daemon, "behaviour", "ok")).start()
        self.handler.close()  # the reply comes 0.1 s later: read, not abandoned
        self.assertEqual(self.handler._held, [])
        late, summary = self.daemon.wait_for(2, strict=True)  # it is back: the summary follows
        self.assertEqual(late.message, "late")
        self.assertEqual(summary_of(summary.message)["undelivered"], 1)
        self.assertEqual(self.daemon.hangups, 0)

    def test_close_gives_up_on_a_daemon_that_stays_hung(self) -> None:
        self.daemon.behaviour = "hang"
        with quiet():
            self.log.info("never answered")
        start = time.monotonic()
        self.handler.close()
        took = time.monotonic() - start
        self.assertGreaterEqual(took, self.timeout * 0.9)  # it did wait
        self.assertLess(took, self.timeout + 0.15)
        self.assertEqual(self.handler._held, [])

    def test_close_again_is_instant(self) -> None:
        self.daemon.behaviour = "hang"
        with quiet():
            self.log.info("never answered")
            self.handler.close()
            self.handler.retryTime = None
            self.log.info("after close, held too")
        self.assertEqual(len(self.handler._held), 1)
        start = time.monotonic()
        self.handler.close()
        self.assertLess(time.monotonic() - start, self.timeout / 3)

    def test_close_tells_the_daemon_what_it_missed(self) -> None:
        self.daemon.stop()
        with quiet():
            self.log.info("lost 0")
            self.log.info("lost 1")
        with LocalDaemon(self.daemon.address) as daemon:
            self.handler.close()  # no record follows: the summary goes now
            events = daemon.wait_for(1)
        self.assertEqual(len(events), 1)
        self.assertEqual(summary_of(events[0].message)["undelivered"], 2)
        self.assertFalse(self.handler._ledger.owes())

    def test_close_sends_the_summary_even_within_the_second(self) -> None:
        self.daemon.behaviour = "refuse"
        with quiet():
            self.log.info("refused 1")
            self.log.info("refused 2")  # the summary was refused: the next waits a second
        self.daemon.behaviour = "ok"
        self.handler.close()
        (event,) = self.daemon.wait_for(1)
        self.assertEqual(summary_of(event.message)["undelivered"], 2)

    def test_close_sends_no_summary_to_a_daemon_it_backs_off_from(self) -> None:
        self.daemon.behaviour = "hang"
        with quiet():
            self.log.info("never answered")
        self.handler.close()  # waits for the late reply, in vain
        self.daemon.behaviour = "ok"
        self.assertTrue(wait_until(lambda: not self.daemon._held))
        self.assertEqual(len(self.daemon.requests), 1)  # no summary after it

    def test_close_sends_no_summary_while_a_request_still_waits_for_its_reply(self) -> None:
        self.daemon.behaviour = "hang"
        with quiet():
            self.log.info("never answered")
        self.handler.retryTime = None  # the backoff is over; the request is still held
        self.handler.close()
        self.daemon.behaviour = "ok"
        self.assertTrue(wait_until(lambda: not self.daemon._held))
        self.assertEqual(len(self.daemon.requests), 1)  # no summary after it

    def test_close_on_another_thread_delays_no_logging_call(self) -> None:
        self.daemon.behaviour = "hang"
        with quiet():
            self.log.info("held")
        closing = threading.Thread(target=self.handler.close)
        closing.start()
        time.sleep(0.05)
        with quiet():
            took = self.timed_log("while closing")  # backing off: to the fallback at once
        closing.join()
        self.assertLess(took, self.timeout / 3)
        self.assertEqual(self.fallback.messages(), ["held", "while closing"])


class AddressTest(DaemonTestCase):
    def setUp(self) -> None:
        super().setUp()
        environment = mock.patch.dict(os.environ)  # restored after each test
        environment.start()
        self.addCleanup(environment.stop)

    def test_without_host_the_abstract_name_then_the_newer_daemons_path(self) -> None:
        os.environ.pop(ENV_ADDRESS, None)
        handler = GlobusSocketHandler()
        self.assertEqual(handler.addresses, (protocol.DEFAULT_ADDRESS, NEWER_DAEMON_PATH))
        self.assertEqual(handler.address, protocol.DEFAULT_ADDRESS)

    def test_each_connection_takes_the_first_address_that_listens(self) -> None:
        directory = temporary_directory(self)
        path = os.path.join(directory, "newer.sock")
        absent = unique_address()
        handler = self.make_handler()
        handler.addresses = (absent, path)
        with quiet() as stderr:
            handler.handle(logging.makeLogRecord({"msg": "nowhere"}))
        self.assertIn("ConnectionRefusedError", stderr.getvalue())  # the first's error
        with LocalDaemon(path) as newer:
            handler.handle(logging.makeLogRecord({"msg": "to the path"}))
            self.assertEqual(newer.wait_for(2)[-1].message, "to the path")
        with LocalDaemon(absent) as older:
            handler.handle(logging.makeLogRecord({"msg": "to the name"}))
            self.assertEqual(older.wait_for(1)[-1].message, "to the name")
        self.assertEqual(handler.delivered, 2)

    def test_environment_variable_replaces_both(self) -> None:
        os.environ[ENV_ADDRESS] = "/tmp/elsewhere.sock"
        self.assertEqual(GlobusSocketHandler().addresses, ("/tmp/elsewhere.sock",))
        self.assertEqual(GlobusSocketHandler("@explicit").addresses, ("\0explicit",))
        os.environ[ENV_ADDRESS] = "relative"
        with self.assertRaisesRegex(ValueError, "'relative'"):
            GlobusSocketHandler()


class ConfigurationTest(unittest.TestCase):
    def setUp(self) -> None:
        environment = mock.patch.dict(os.environ)  # restored after each test
        environment.start()
        self.addCleanup(environment.stop)

    def test_defaults(self) -> None:
        os.environ.pop(ENV_ADDRESS, None)
        handler = GlobusSocketHandler()
        self.assertIsNone(handler.port)
        self.assertEqual(handler.timeout, 1.0)
        self.assertEqual(handler.fallback, "stderr")
        self.assertEqual(
            (handler.retryStart, handler.retryFactor, handler.retryMax), (1.0, 2.0, 30.0)
        )
        self.assertIsInstance(handler, logging.handlers.SocketHandler)
        self.assertEqual(
            repr(handler),
            "<GlobusSocketHandler @org.globus.cwlogs or /tmp/org.globus.cwlogs (NOTSET)>",
        )

    def test_keywords_as_dictconfig_passes_them(self) -> None:
        handler = GlobusSocketHandler(host="\\0x", port=None, timeout=2, fallback="off")
        self.assertEqual((handler.address, handler.timeout, handler.fallback), ("\0x", 2.0, None))

    def test_the_longest_timeout_poll_can_wait(self) -> None:
        self.assertEqual(GlobusSocketHandler(timeout=2_147_483.647).timeout, 2_147_483.647)

    def test_bad_configuration_is_a_clear_error(self) -> None:
        cases: list[tuple[dict[str, object], type[Exception], str]] = [
            ({"timeout": -1}, ValueError, "-1"),
            ({"timeout": 0}, ValueError, "0"),
            ({"timeout": 2_147_483.648}, ValueError, "2147483.648"),
            ({"timeout": 1e300}, ValueError, "1e+300"),
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
            ({"fallback": True}, TypeError, "True"),
        ]
        for kwargs, error, text in cases:
            with self.subTest(**kwargs), self.assertRaises(error) as caught:
                GlobusSocketHandler(**kwargs)  # type: ignore[arg-type]
            self.assertIn(text, str(caught.exception))


class ListenerCredentialsTest(DaemonTestCase):
    def test_listener_of_another_uid_gets_nothing(self) -> None:
        handler = self.make_handler(daemon_uid=os.getuid() + 1)
        with quiet() as stderr:
            for i in range(2):
                handler.handle(logging.makeLogRecord({"msg": f"secret {i}"}))
        self.assertEqual(self.daemon.events, [])
        self.assertNotIn(b"secret", b"".join(self.daemon.requests))
        self.assertEqual(handler.undelivered, 2)
        self.assertEqual(self.fallback.messages(), ["secret 0", "secret 1"])
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
        pid = fork()
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
        with quiet() as stderr:
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


if __name__ == "__main__":
    unittest.main()
