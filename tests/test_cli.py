"""python -m globus.cwlogger: send, listen, demo."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import unittest

from globus.cwlogger import GlobusSocketHandler
from globus.cwlogger.testing import LocalDaemon

from .support import unique_address


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "globus.cwlogger", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class SendTest(unittest.TestCase):
    def test_acknowledged(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            result = cli("send", "deploy finished", "--address", "@" + daemon.address[1:])
            self.assertEqual([e.message for e in daemon.wait_for(1)], ["deploy finished"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("acknowledged by @", result.stdout)
        self.assertIn("queue_length=1", result.stdout)

    def test_refused(self) -> None:
        with LocalDaemon(unique_address(), behaviour="refuse") as daemon:
            result = cli("send", "x", "--address", "@" + daemon.address[1:])
        self.assertEqual(result.returncode, 1)
        self.assertIn("too many events in queue", result.stderr)

    def test_no_daemon(self) -> None:
        result = cli("send", "x", "--address", "@" + unique_address()[1:])
        self.assertEqual(result.returncode, 1)
        self.assertIn("ConnectionRefusedError", result.stderr)

    def test_bad_address(self) -> None:
        result = cli("send", "x", "--address", "relative")
        self.assertEqual(result.returncode, 2)
        self.assertIn("'relative'", result.stderr)


class ListenTest(unittest.TestCase):
    def test_prints_each_event_as_a_json_line(self) -> None:
        address = unique_address()
        listener = subprocess.Popen(
            [sys.executable, "-m", "globus.cwlogger", "listen", "--address", "@" + address[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(listener.kill)
        assert listener.stderr is not None and listener.stdout is not None
        self.assertIn("listening on @", listener.stderr.readline())
        handler = GlobusSocketHandler(address, fallback="off")
        record = logging.makeLogRecord({"msg": 'two\nlines "quoted"', "created": 1764090000.5})
        handler.handle(record)
        self.assertEqual(handler.delivered, 1)
        line = json.loads(listener.stdout.readline())
        self.assertEqual(line, {"timestamp": 1764090000500, "message": 'two\nlines "quoted"'})
        listener.send_signal(signal.SIGTERM)
        self.assertEqual(listener.wait(timeout=10), 0)
        listener.stdout.close()
        listener.stderr.close()


class DemoTest(unittest.TestCase):
    def test_demo(self) -> None:
        result = cli("demo")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("host: '\\0globus-cwlogger-standin-", result.stdout)
        self.assertEqual(result.stdout.count("- timestamp="), 4)
        self.assertIn("Traceback (most recent call last)", result.stdout)
        self.assertIn("bytes cut]", result.stdout)
        self.assertIn("delivered=4 undelivered=0 truncated=1", result.stdout)


if __name__ == "__main__":
    unittest.main()
