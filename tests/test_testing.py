"""LocalDaemon, the stand-in that services' tests (and this suite) rely on.

Its fidelity is checked against the independent daemon in
benchmarks/faultd.py, run in a process of its own and sharing no code with
the package: the same raw requests must get the same raw replies (or the
same silence), and each reply must be the one PROTOCOL.md describes.  Then
the behaviours that only the stand-in has: refuse, hang, close, stall,
delay, queue_percent_full, wait_for.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import unittest
from pathlib import Path
from typing import Any

from globus.cwlogger.testing import Behaviour, Event, LocalDaemon

from .support import temporary_directory, unique_address, wait_until

FAULTD = Path(__file__).resolve().parent.parent / "benchmarks" / "faultd.py"
LIMIT = 262118  # PROTOCOL.md: the most UTF-8 bytes a message may hold

OK = "ok"
NO_REPLY = b""
TOO_LARGE = "InvalidMessage('message too large')"
QUEUE_FULL = "Exception('too many events in queue')"


def request(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode() + b"\n"


def event(message: str, timestamp: object = 1764090000123) -> bytes:
    return request({"message": message, "timestamp": timestamp})


# (what, the raw request, the reply PROTOCOL.md says: "ok", an error's
# message, or NO_REPLY for a connection closed without one).
CASES: list[tuple[str, bytes, str | bytes]] = [
    ("plain", event("hello"), OK),
    ("ASCII at the limit", event("x" * LIMIT), OK),
    ("ASCII one byte over", event("x" * (LIMIT + 1)), TOO_LARGE),
    ("2-byte characters at the limit", event("é" * (LIMIT // 2)), OK),
    ("2-byte characters one byte over", event("é" * (LIMIT // 2) + "x"), TOO_LARGE),
    ("4-byte characters at the limit", event("😀" * (LIMIT // 4) + "xx"), OK),
    ("4-byte characters one byte over", event("😀" * (LIMIT // 4) + "xxx"), TOO_LARGE),
    # The limit is on the message's UTF-8, not on its JSON escapes.
    ("escaped newlines at the limit", event("\n" * LIMIT), OK),
    (
        "ASCII-escaped at the limit",
        b'{"message": "%s", "timestamp": 1}\n' % (b"\\u00e9" * 131059),
        OK,
    ),
    (
        "ASCII-escaped one over",
        b'{"message": "%s", "timestamp": 1}\n' % (b"\\u00e9" * 131060),
        TOO_LARGE,
    ),
    ("no timestamp", request({"message": "x"}), "KeyError('timestamp')"),
    ("timestamp a string", event("x", "1"), "TypeError('timestamp must be an int')"),
    ("timestamp a float", event("x", 1.5), "TypeError('timestamp must be an int')"),
    ("timestamp negative", event("x", -1), "ValueError('Event.timestamp must be non-negative')"),
    ("timestamp null", event("null stamp", None), OK),
    ("timestamp zero", event("epoch", 0), OK),
    ("lone surrogate", event("\udc80"), "UnicodeEncodeError"),
    ("invalid JSON", b'{"message": "x", "timestamp": 1\n', NO_REPLY),
    ("invalid UTF-8", b'{"message": "\xff", "timestamp": 1}\n', NO_REPLY),
    ("an empty line", b"\n", NO_REPLY),
    ("two requests in one write", event("one") + event("two"), NO_REPLY),
    ("trailing garbage", event("x")[:-1] + b" garbage\n", NO_REPLY),
    ("ends before the newline", event("x")[:-1], NO_REPLY),
    ("ends at once", b"", NO_REPLY),
    ("after all that, plain", event("still here"), OK),
]


def raw(address: str, data: bytes) -> bytes:
    """Send ``data`` on a connection of its own, end the sending side (so a
    request without its newline ends), and return every byte of the reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(address)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


def quiet() -> contextlib.AbstractContextManager[io.StringIO]:
    """What the stand-in says on stderr (the daemon would log it)."""
    return contextlib.redirect_stderr(io.StringIO())


class FaultDaemon:
    """benchmarks/faultd.py in a process of its own, on a unique address."""

    def __init__(self, test: unittest.TestCase, *args: str) -> None:
        self.address = unique_address()
        workdir = Path(temporary_directory(test))
        self.events = workdir / "events.jsonl"
        self.journal = workdir / "journal.jsonl"
        self.process = subprocess.Popen(
            [
                *(sys.executable, str(FAULTD), "--address", "@" + self.address[1:]),
                *("--events", str(self.events), "--journal", str(self.journal)),
                *("--parent", str(os.getpid()), *args),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        test.addCleanup(self.stop)
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()
        test.assertTrue(ready.startswith("ready "), f"faultd did not start: {ready!r}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def noted(self, kind: str) -> list[dict[str, Any]]:
        with open(self.journal, encoding="utf-8") as lines:
            entries = [json.loads(line) for line in lines]
        return [entry for entry in entries if entry["kind"] == kind]

    def queued(self) -> list[tuple[str, int | None]]:
        with open(self.events, encoding="utf-8") as lines:
            return [(e["message"], e["timestamp"]) for e in map(json.loads, lines)]


def meaning(reply: bytes) -> str | bytes:
    """A reply as CASES write it: "ok", an error's message, or NO_REPLY."""
    if not reply:
        return NO_REPLY
    body = json.loads(reply)
    if body["status"] == "ok":
        return OK
    message = body["message"]
    assert isinstance(message, str)
    return "UnicodeEncodeError" if message.startswith("UnicodeEncodeError(") else message


@unittest.skipUnless(FAULTD.exists(), "benchmarks/faultd.py is not in this tree")
class FidelityTest(unittest.TestCase):
    """The same raw requests to the stand-in and to faultd.py: byte for byte
    the same replies, each the one PROTOCOL.md describes."""

    def test_same_replies_as_the_independent_daemon(self) -> None:
        independent = FaultDaemon(self)
        with LocalDaemon(unique_address()) as daemon:
            for what, data, expected in CASES:
                with self.subTest(what):
                    ours, theirs = raw(daemon.address, data), raw(independent.address, data)
                    self.assertEqual(ours, theirs)  # health included: the same counts
                    self.assertEqual(meaning(ours), expected)
                    if ours:
                        self.assertTrue(ours.endswith(b"\n") and ours.count(b"\n") == 1)
            acknowledged = daemon.wait_for(sum(want == OK for _, _, want in CASES), strict=True)
            self.assertEqual([(e.message, e.timestamp) for e in acknowledged], independent.queued())
            self.assertEqual(daemon.requests, [data for _, data, _ in CASES])
            self.assertFalse(daemon.wedged)
        self.assertEqual(independent.noted("wedged"), [])

    def test_the_limit_is_exact(self) -> None:
        # Pinned apart from CASES: exactly at the limit is acknowledged, whole.
        with LocalDaemon(unique_address()) as daemon:
            at = raw(daemon.address, event("a" * LIMIT))
            over = raw(daemon.address, event("a" * (LIMIT + 1)))
        self.assertEqual(meaning(at), OK)
        self.assertEqual(json.loads(over), {"status": "error", "message": TOO_LARGE})
        # Stopped: every event it acknowledged is in ``events`` by now.
        self.assertEqual([len(e.message.encode()) for e in daemon.events], [LIMIT])

    def test_ok_reply_and_health(self) -> None:
        independent = FaultDaemon(self)
        with LocalDaemon(unique_address()) as daemon:
            for n in range(1, 4):
                ours = raw(daemon.address, event(f"n{n}"))
                self.assertEqual(ours, raw(independent.address, event(f"n{n}")))
                # PROTOCOL.md: 12 events are 0.012 (percent) of 100000.
                health = {"queue_length": n, "queue_percent_full": 100 * n / 100000}
                self.assertEqual(json.loads(ours), {"status": "ok", "health": health})
            first = daemon.wait_for(3, strict=True)[0]
        self.assertEqual(first, Event("n1", 1764090000123))

    def test_null_timestamp_is_accepted_as_none(self) -> None:
        independent = FaultDaemon(self)
        with LocalDaemon(unique_address()) as daemon:
            self.assertEqual(
                raw(daemon.address, event("x", None)), raw(independent.address, event("x", None))
            )
            self.assertEqual(daemon.wait_for(1, strict=True), [Event("x", None)])
        self.assertEqual(independent.queued(), [("x", None)])

    def test_an_empty_message_is_acknowledged_and_wedges(self) -> None:
        independent = FaultDaemon(self)
        with quiet() as stderr, LocalDaemon(unique_address()) as daemon:
            wedged = []
            for message in ("before", "", "after"):
                ours = raw(daemon.address, event(message))
                self.assertEqual(ours, raw(independent.address, event(message)))
                self.assertEqual(meaning(ours), OK)
                wedged.append(daemon.wedged)
        self.assertEqual(wedged, [False, True, True])  # for good, as the daemon
        self.assertEqual(stderr.getvalue().count("wedges"), 1)
        self.assertEqual(len(independent.noted("wedged")), 1)

    def test_a_client_that_leaves_before_its_reply_is_counted(self) -> None:
        independent = FaultDaemon(self, "--mode", "delay", "--delay", "0.3")
        with quiet() as stderr, LocalDaemon(unique_address()) as daemon:
            daemon.delay = 0.3
            for address in (daemon.address, independent.address):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.connect(address)
                    sock.sendall(event("gone"))  # and close without reading
            self.assertTrue(wait_until(lambda: daemon.hangups == 1))
            self.assertTrue(wait_until(lambda: len(independent.noted("hangup")) == 1))
        self.assertIn("hung up before its reply", stderr.getvalue())
        self.assertEqual(daemon.hangups, 1)

    def test_refuse_is_the_full_queue_reply(self) -> None:
        independent = FaultDaemon(self, "--mode", "error", "--every", "1")
        with LocalDaemon(unique_address(), behaviour="refuse") as daemon:
            ours = raw(daemon.address, event("x"))
            self.assertEqual(ours, raw(independent.address, event("x")))
        self.assertEqual(json.loads(ours), {"status": "error", "message": QUEUE_FULL})
        self.assertEqual(daemon.events, [])
        self.assertEqual(daemon.requests, [event("x")])  # read, not acknowledged

    def test_close_hangs_up_without_a_reply(self) -> None:
        independent = FaultDaemon(self, "--mode", "close")
        with LocalDaemon(unique_address(), behaviour="close") as daemon:
            self.assertEqual(raw(daemon.address, event("x")), NO_REPLY)
            self.assertEqual(raw(independent.address, event("x")), NO_REPLY)
        self.assertEqual(daemon.events, [])
        self.assertEqual(daemon.requests, [event("x")])


class BehaviourTest(unittest.TestCase):
    """What only the stand-in does: fail on purpose, and wait for events."""

    def daemon(self, **options: Any) -> LocalDaemon:
        daemon = LocalDaemon(unique_address(), **options).start()
        self.addCleanup(daemon.stop)
        return daemon

    def connect(self, daemon: LocalDaemon, data: bytes) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.settimeout(10)
        sock.connect(daemon.address)
        sock.sendall(data)
        return sock

    def assert_no_reply_yet(self, sock: socket.socket) -> None:
        sock.settimeout(0.1)
        with self.assertRaises(socket.timeout):
            sock.recv(1)
        sock.settimeout(10)

    def test_hang_then_answer_as_it_then_behaves(self) -> None:
        cases: list[tuple[Behaviour, str | bytes]] = [
            ("ok", OK),
            ("refuse", QUEUE_FULL),
            ("close", NO_REPLY),
        ]
        for then, answer in cases:
            with self.subTest(then=then), quiet():
                self.check_hang(then, answer)

    def check_hang(self, then: Behaviour, answer: str | bytes) -> None:
        daemon = self.daemon(behaviour="hang")
        sock = self.connect(daemon, event("held"))
        self.assertTrue(wait_until(lambda: daemon.requests == [event("held")]))
        self.assert_no_reply_yet(sock)
        self.assertEqual(daemon.events, [])
        daemon.behaviour = then
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        self.assertEqual(meaning(reply), answer)
        self.assertEqual(len(daemon.wait_for(1, timeout=0.1)), then == "ok")

    def test_hang_holds_every_request_and_stop_lets_go(self) -> None:
        daemon = LocalDaemon(unique_address(), behaviour="hang").start()
        socks = [self.connect(daemon, event(f"held {n}")) for n in range(3)]
        self.assertTrue(wait_until(lambda: len(daemon.requests) == 3))
        for sock in socks:
            self.assert_no_reply_yet(sock)
        daemon.stop()
        for sock in socks:
            self.assertEqual(sock.recv(4096), b"")  # closed, never answered
        self.assertEqual(daemon.events, [])

    def test_stall_stops_accepting_until_it_changes(self) -> None:
        daemon = self.daemon(behaviour="stall", backlog=0)
        waiting = 0  # connections left in the backlog (a client's close keeps them there)
        while waiting < 10:  # a backlog of 0 takes one connection, at most a few
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.setblocking(False)
                try:
                    sock.connect(daemon.address)
                except BlockingIOError:
                    break
                waiting += 1
        self.assertLess(waiting, 10, "the backlog never filled")
        self.assertEqual(daemon.requests, [])  # nothing was accepted
        daemon.behaviour = "ok"
        self.assertTrue(wait_until(lambda: daemon.requests == [b""] * waiting))
        self.assertEqual(meaning(raw(daemon.address, event("accepted again"))), OK)
        self.assertEqual([e.message for e in daemon.wait_for(1)], ["accepted again"])

    def test_delay_makes_every_reply_late(self) -> None:
        daemon = self.daemon()
        daemon.delay = 0.5
        sock = self.connect(daemon, event("slow"))
        self.assert_no_reply_yet(sock)
        self.assertEqual(meaning(sock.recv(4096)), OK)
        daemon.delay = 0.0
        self.assertEqual(meaning(raw(daemon.address, event("quick"))), OK)

    def test_queue_percent_full_is_reported_as_set(self) -> None:
        daemon = self.daemon()
        daemon.queue_percent_full = 75.5
        self.assertEqual(
            json.loads(raw(daemon.address, event("x"))),
            {"status": "ok", "health": {"queue_length": 1, "queue_percent_full": 75.5}},
        )
        daemon.queue_percent_full = None  # back to the share of 100000 events
        health = json.loads(raw(daemon.address, event("y")))["health"]
        self.assertEqual(health, {"queue_length": 2, "queue_percent_full": 0.002})

    def test_wait_for(self) -> None:
        daemon = self.daemon()
        self.assertEqual(daemon.wait_for(1, timeout=0.05), [])  # fewer: what came
        with self.assertRaisesRegex(TimeoutError, r"^0 of 1 events arrived within 0\.05 s$"):
            daemon.wait_for(1, timeout=0.05, strict=True)
        raw(daemon.address, event("one"))
        raw(daemon.address, event("two"))
        self.assertEqual(
            daemon.wait_for(2, strict=True),
            [Event("one", 1764090000123), Event("two", 1764090000123)],
        )
        self.assertEqual(len(daemon.wait_for(1, strict=True)), 2)  # all of them, not just 1
        with self.assertRaisesRegex(TimeoutError, r"^2 of 3 events"):
            daemon.wait_for(3, timeout=0.05, strict=True)

    def test_on_event_sees_each_acknowledged_event(self) -> None:
        seen: list[Event] = []
        daemon = self.daemon(on_event=seen.append)
        raw(daemon.address, event("one"))
        raw(daemon.address, event("x", -1))  # refused: not an event
        raw(daemon.address, event("two"))
        daemon.stop()  # every event it acknowledged was seen by then
        self.assertEqual(seen, [Event("one", 1764090000123), Event("two", 1764090000123)])

    def test_addresses(self) -> None:
        first, second = LocalDaemon(), LocalDaemon()
        self.assertTrue(first.address.startswith("\0globus-cwlogger-standin-"))
        self.assertNotEqual(first.address, second.address)
        name = unique_address()[1:]
        self.assertEqual(LocalDaemon("@" + name).address, "\0" + name)
        path = os.path.join(temporary_directory(self), "cwlogs.sock")
        with LocalDaemon(path) as daemon:
            self.assertTrue(os.path.exists(path))
            self.assertEqual(meaning(raw(daemon.address, event("on a path"))), OK)
        self.assertFalse(os.path.exists(path))  # removed on stop

    def test_stop_without_start_is_harmless(self) -> None:
        daemon = LocalDaemon(unique_address())
        daemon.stop()
        with socket.socket(socket.AF_UNIX) as sock, self.assertRaises(ConnectionRefusedError):
            sock.connect(daemon.address)  # it never listened

    def test_an_address_in_use_is_refused_at_start(self) -> None:
        daemon = self.daemon()
        with self.assertRaises(OSError):
            LocalDaemon(daemon.address).start()
        self.assertEqual(meaning(raw(daemon.address, event("the first still answers"))), OK)


if __name__ == "__main__":
    unittest.main()
