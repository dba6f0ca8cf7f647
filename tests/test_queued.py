"""Non-blocking use: GlobusQueueHandler, and the standard library's own keys."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import time
import unittest

from globus.cwlogger import ENV_ADDRESS, GlobusQueueHandler
from globus.cwlogger.testing import LocalDaemon

from .support import unique_address

EXIT_AT_ONCE = """\
import logging
from globus.cwlogger import GlobusQueueHandler

logging.getLogger().addHandler(GlobusQueueHandler())
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
                                "formatter": "plain", "timeout": 2}},
    "root": {"level": "INFO", "handlers": ["cloudwatch"]},
})
for i in range(1000):
    logging.info("record %d", i)
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


def run_and_collect(code: str, expected: int) -> list[str]:
    with LocalDaemon(unique_address()) as daemon:
        env = {**os.environ, ENV_ADDRESS: "@" + daemon.address[1:]}
        subprocess.run([sys.executable, "-c", code], env=env, timeout=120, check=True)
        return [event.message for event in daemon.wait_for(expected, timeout=10)]


class QueuedTest(unittest.TestCase):
    def test_process_that_exits_at_once_loses_nothing(self) -> None:
        messages = run_and_collect(EXIT_AT_ONCE, 10000)
        self.assertEqual(messages, [f"record {i}" for i in range(10000)])

    def test_from_dictconfig_with_a_formatter(self) -> None:
        messages = run_and_collect(DICTCONFIG_AT_ONCE, 1000)
        self.assertEqual(messages, [f"INFO record {i}" for i in range(1000)])

    @unittest.skipIf(sys.version_info < (3, 12), "the handlers key of QueueHandler is 3.12+")
    def test_standard_library_keys(self) -> None:
        messages = run_and_collect(STDLIB_KEYS, 1000)
        self.assertEqual(messages, [f"record {i}" for i in range(1000)])

    def test_timestamps_are_creation_times_when_sending_is_delayed(self) -> None:
        with LocalDaemon(unique_address(), behaviour="stall") as daemon:
            handler = GlobusQueueHandler(host=daemon.address, timeout=5)
            created: list[float] = []

            def note_creation(record: logging.LogRecord) -> bool:
                created.append(record.created)
                return True

            handler.addFilter(note_creation)
            log = logging.getLogger(f"test.queued.{unique_address()[1:]}")
            log.propagate = False
            log.addHandler(handler)
            start = time.monotonic()
            for i in range(5):
                log.warning("delayed %d", i)
            self.assertLess(time.monotonic() - start, 0.2)  # the caller did not wait
            time.sleep(0.3)
            daemon.behaviour = "ok"
            handler.close()  # waits for the queue to drain
            events = daemon.wait_for(5)
        self.assertEqual([e.message for e in events], [f"delayed {i}" for i in range(5)])
        self.assertEqual([e.timestamp for e in events], [int(c * 1000) for c in created])
        self.assertLess(max(created) * 1000, time.time() * 1000 - 250)
        self.assertEqual(handler.target.delivered, 5)

    def test_forked_child_delivers_through_its_own_thread(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            handler = GlobusQueueHandler(host=daemon.address)
            self.addCleanup(handler.close)
            record = logging.makeLogRecord({"msg": "parent"})
            handler.handle(record)
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    for i in range(3):
                        handler.handle(logging.makeLogRecord({"msg": f"child {i}"}))
                    handler.close()
                    status = 0 if handler.target.delivered >= 3 else 2
                finally:
                    os._exit(status)
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0)
            messages = sorted(e.message for e in daemon.wait_for(4))
        self.assertEqual(messages, ["child 0", "child 1", "child 2", "parent"])

    def test_unformattable_record_is_not_lost(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            handler = GlobusQueueHandler(host=daemon.address)
            with contextlib.redirect_stderr(io.StringIO()):
                handler.handle(logging.makeLogRecord({"msg": "%d", "args": ("x",)}))
                handler.close()
            (event,) = daemon.wait_for(1)
        self.assertIn("could not format '%d' % ('x',)", event.message)

    def test_close_twice(self) -> None:
        handler = GlobusQueueHandler(host=unique_address())
        handler.close()
        handler.close()

    def test_bad_keywords_are_configuration_errors(self) -> None:
        with self.assertRaisesRegex(ValueError, "-1"):
            GlobusQueueHandler(timeout=-1)
        with self.assertRaises(TypeError):
            GlobusQueueHandler(no_such_option=1)


if __name__ == "__main__":
    unittest.main()
