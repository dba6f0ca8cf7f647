"""The handlers with a spool: what the daemon does not acknowledge is kept
on disk instead of the fallback, and replayed once the daemon answers."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import math
import os
import pathlib
import time
import unittest
from contextlib import redirect_stderr
from unittest import mock

from globus.cwlogger import GlobusQueueHandler, GlobusSocketHandler
from globus.cwlogger._options import ENV_SPOOL
from globus.cwlogger._spool import claim
from globus.cwlogger.testing import LocalDaemon

from .support import ListHandler, run_python, temporary_directory, unique_address, wait_until


def audit_of(message: str) -> dict[str, object] | None:
    try:
        body = json.loads(message)
    except ValueError:
        return None
    return body if isinstance(body, dict) and body.get("subtype") == "cwlogger.spool" else None


class SpoolingTest(unittest.TestCase):
    def setUp(self) -> None:
        environment = mock.patch.dict(os.environ)  # restored after each test
        environment.start()
        self.addCleanup(environment.stop)
        os.environ.pop(ENV_SPOOL, None)
        self.directory = os.path.join(temporary_directory(self), "spool")
        self.address = unique_address()
        self.fallback = ListHandler()

    def make(self, **kwargs: object) -> GlobusSocketHandler:
        options: dict[str, object] = {
            "timeout": 0.5,
            "fallback": self.fallback,
            "spool": self.directory,
            **kwargs,
        }
        handler = GlobusSocketHandler(self.address, **options)  # type: ignore[arg-type]
        self.addCleanup(handler.close)
        return handler

    def test_what_the_daemon_misses_is_spooled_then_replayed(self) -> None:
        handler = self.make()
        replayer = handler._replayer
        assert replayer is not None
        # Once its start-up pass is over, no retry of its own: the live
        # record's acknowledgement must be what wakes the replay.
        self.assertTrue(wait_until(lambda: replayer._last_pass > -math.inf))
        replayer._retry_at = math.inf
        with redirect_stderr(io.StringIO()) as stderr:
            for i in range(5):
                handler.handle(logging.makeLogRecord({"msg": f"while it is down {i}"}))
        self.assertEqual((handler.spooled, handler.undelivered), (5, 0))
        self.assertEqual(self.fallback.records, [])
        self.assertIn(f"they go to the spool {self.directory}", stderr.getvalue())
        with LocalDaemon(self.address) as daemon:
            handler.handle(logging.makeLogRecord({"msg": "back"}))  # wakes the replay
            self.assertTrue(wait_until(lambda: handler.replayed == 5, timeout=10))
            self.assertTrue(wait_until(lambda: any(audit_of(e.message) for e in daemon.events)))
            messages = [e.message for e in daemon.events]
        self.assertEqual(messages[0], "back", messages)
        replayed = [m for m in messages if m.startswith("while it is down")]
        self.assertEqual(sorted(replayed), [f"while it is down {i}" for i in range(5)])
        audit = next(a for a in map(audit_of, messages) if a)
        self.assertEqual(audit["replayed"], 5)
        self.assertEqual(handler.delivered, 1)

    def test_the_spool_keeps_the_exact_request(self) -> None:
        handler = self.make()
        created = logging.makeLogRecord({}).created - 5.0
        with redirect_stderr(io.StringIO()):
            handler.handle(logging.makeLogRecord({"msg": "x" * 300_000, "created": created}))
        with LocalDaemon(self.address) as daemon:
            handler.handle(logging.makeLogRecord({"msg": "back"}))
            self.assertTrue(wait_until(lambda: handler.replayed == 1, timeout=10))
            (kept,) = [e for e in daemon.events if e.message.startswith("xxx")]
        self.assertTrue(kept.message.endswith("bytes cut]"))  # cut once, when first sent
        self.assertEqual(kept.timestamp, int(created * 1000))
        self.assertEqual(handler.truncated, 1)

    def test_a_record_after_close_is_spooled_too_and_the_next_close_lets_it_go(self) -> None:
        for kind in (GlobusSocketHandler, GlobusQueueHandler):
            with self.subTest(kind.__name__):
                directory = os.path.join(temporary_directory(self), "spool")
                handler = kind(self.address, timeout=0.5, fallback=self.fallback, spool=directory)
                target = handler.target if isinstance(handler, GlobusQueueHandler) else handler
                handler.close()
                with redirect_stderr(io.StringIO()):
                    handler.handle(logging.makeLogRecord({"msg": "from an exit hook"}))
                self.assertEqual((target.spooled, target.undelivered), (1, 0))
                self.assertEqual(self.fallback.records, [])
                (name,) = [n for n in os.listdir(directory) if n.endswith(".seg")]
                self.assertIsNone(claim(os.path.join(directory, name)))  # held: it writes
                handler.close()  # as logging.shutdown does at exit: the segment is let go
                fd = claim(os.path.join(directory, name))
                self.assertIsNotNone(fd)
                os.close(fd)  # type: ignore[arg-type]

    def test_a_replay_that_gets_no_reply_in_time_is_held_not_hung_up_on(self) -> None:
        handler = self.make(timeout=0.3)
        with redirect_stderr(io.StringIO()):
            handler.handle(logging.makeLogRecord({"msg": "spooled"}))
        with LocalDaemon(self.address) as daemon:
            daemon.delay = 0.5  # each reply after the timeout
            with redirect_stderr(io.StringIO()):
                handler.handle(logging.makeLogRecord({"msg": "late"}))  # wakes the replay
                self.assertTrue(wait_until(lambda: len(daemon.events) >= 2))
                time.sleep(0.6)  # the replayed record's late reply
                daemon.delay = 0.0
                handler.retryTime = None
                handler.handle(logging.makeLogRecord({"msg": "reads the late replies"}))
            self.assertEqual(daemon.hangups, 0)

    def test_a_full_spool_sends_to_the_fallback_and_counts(self) -> None:
        handler = GlobusSocketHandler(
            self.address, timeout=0.5, fallback=self.fallback, spool=self.directory
        )
        self.addCleanup(handler.close)
        assert handler._replayer is not None
        handler._replayer.spool.max_bytes = 1  # the bound is reached at once
        with redirect_stderr(io.StringIO()):
            handler.handle(logging.makeLogRecord({"msg": "no room"}))
        self.assertEqual((handler.spooled, handler.undelivered), (0, 1))
        self.assertEqual(self.fallback.messages(), ["no room"])

    def test_from_the_environment_and_off(self) -> None:
        os.environ[ENV_SPOOL] = self.directory
        handler = GlobusSocketHandler(self.address)
        self.addCleanup(handler.close)
        self.assertEqual(handler.spool, self.directory)
        self.assertTrue(os.path.isdir(self.directory))
        off = GlobusSocketHandler(self.address, spool="off")
        self.addCleanup(off.close)
        self.assertIsNone(off.spool)
        del os.environ[ENV_SPOOL]
        self.assertIsNone(GlobusSocketHandler(self.address).spool)

    def test_a_path_object(self) -> None:
        handler = self.make(spool=pathlib.Path(self.directory))
        self.assertEqual(handler.spool, self.directory)

    def test_from_dictconfig(self) -> None:
        name = f"spooled-{unique_address()[1:]}"
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {
                    name: {
                        "class": "globus.cwlogger.GlobusQueueHandler",
                        "host": self.address,
                        "spool": self.directory,
                    }
                },
            }
        )
        handler = logging._handlers[name]  # type: ignore[attr-defined]
        self.addCleanup(handler.close)
        self.assertEqual(handler.target.spool, self.directory)

    def test_bad_directories_are_configuration_errors(self) -> None:
        cases: list[tuple[object, type[Exception], str]] = [
            ("relative/spool", ValueError, "'relative/spool'"),
            ("/proc/no-such-place/spool", ValueError, "/proc/no-such-place/spool"),
            (42, TypeError, "42"),
        ]
        for spool, error, text in cases:
            with self.subTest(spool=spool), self.assertRaises(error) as caught:
                GlobusSocketHandler(self.address, spool=spool)  # type: ignore[arg-type]
            self.assertIn(text, str(caught.exception))

    def test_a_queue_that_is_full_spools_too(self) -> None:
        with LocalDaemon(self.address, behaviour="hang") as daemon:
            handler = GlobusQueueHandler(
                self.address,
                timeout=0.5,
                fallback=self.fallback,
                spool=self.directory,
                max_queue=1,
                senders=1,
            )
            self.addCleanup(handler.close)
            with redirect_stderr(io.StringIO()):
                for i in range(5):
                    handler.handle(logging.makeLogRecord({"msg": f"record {i}"}))
                self.assertTrue(wait_until(lambda: handler.target.spooled >= 3))
            daemon.behaviour = "ok"
        self.assertEqual(self.fallback.records, [])

    def test_the_next_process_replays_what_a_dead_one_left(self) -> None:
        code = (
            "import logging, os\n"
            "from globus.cwlogger import GlobusSocketHandler\n"
            f"h = GlobusSocketHandler({self.address!r}, timeout=0.5, spool={self.directory!r})\n"
            "for i in range(3): h.handle(logging.makeLogRecord({'msg': f'left {i}'}))\n"
            "os._exit(0 if h.spooled == 3 else 1)\n"  # gone, and no close()
        )
        result = run_python(code)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(list(pathlib.Path(self.directory).glob("*.seg")))
        with LocalDaemon(self.address) as daemon:
            handler = self.make()  # at start-up its replayer claims the dead one's
            self.assertTrue(wait_until(lambda: handler.replayed == 3, timeout=10))
            messages = sorted(e.message for e in daemon.events if e.message.startswith("left"))
        self.assertEqual(messages, ["left 0", "left 1", "left 2"])


if __name__ == "__main__":
    unittest.main()
