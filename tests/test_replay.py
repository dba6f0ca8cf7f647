"""Replaying a spool: what is sent, in which order, paced, counted, and
what is left for later; against a real stand-in and real child processes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest
from collections.abc import Callable
from typing import Any
from unittest import mock

from globus.cwlogger import _replay, protocol
from globus.cwlogger._connect import round_trip
from globus.cwlogger._replay import Replayer, describe, replay
from globus.cwlogger._spool import HEADER, Spool, frame
from globus.cwlogger.testing import LocalDaemon

from .support import fork, run_python, temporary_directory, unique_address, wait_until
from .test_spool import read, request, segments

AUDIT = '{"type": "audit", "subtype": "cwlogger.spool"'
DEAD = 999999  # no such process: its segments are claimable


def sender(address: str, timeout: float = 2.0) -> Callable[[bytes], protocol.Reply]:
    def send(request: bytes) -> protocol.Reply:
        return round_trip([address], request, timeout)

    return send


def dead_segment(
    directory: str, requests: list[bytes], tail: bytes = b"", pid: int = DEAD, seq: int = 1
) -> str:
    """A segment as a process that is gone left it (nobody holds its lock)."""
    name = f"{pid}-dead{pid % 1000:04d}-{seq:06d}.seg"
    with open(os.path.join(directory, name), "wb") as file:
        file.write(b"".join(frame(r) for r in requests) + tail)
    return name


def spool_in_child(directory: str, messages: list[str], then: str, **options: object) -> str:
    """Code for a child that spools ``messages`` and then ``kill``s itself
    with SIGKILL, or ``wait``s for a line on stdin and closes its spool."""
    return f"""
import os, signal, sys, time
from globus.cwlogger import protocol
from globus.cwlogger._spool import Spool
spool = Spool({directory!r}, **{options!r})
for message in {messages!r}:
    spool.append(protocol.encode_event(message, int(time.time() * 1000))[0])
if {then!r} == "kill":
    time.sleep(1.5)  # for its thread to note its drops
    os.kill(os.getpid(), signal.SIGKILL)
print(os.getpid(), flush=True)
sys.stdin.readline()
spool.close()
"""


class ReplayTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = temporary_directory(self)
        self.daemon = LocalDaemon(unique_address()).start()
        self.addCleanup(self.daemon.stop)
        self.spool = Spool(self.directory)
        self.addCleanup(self.spool.close)

    def replayer(self, **options: object) -> Replayer:
        options.setdefault("background", False)
        send = options.pop("send", sender(self.daemon.address))
        replayer = Replayer(self.spool, send, **options)  # type: ignore[arg-type]
        self.addCleanup(replayer.close, time.monotonic() + 10)
        return replayer

    def records(self, events: int) -> list[str]:
        """The records among the first ``events`` events (waited for: the
        stand-in notes an event only once its reply is written)."""
        arrived = self.daemon.wait_for(events, 10, strict=True)
        return [e.message for e in arrived if not e.message.startswith(AUDIT)]

    def audits(self, events: int) -> list[dict[str, Any]]:
        arrived = self.daemon.wait_for(events, 10, strict=True)
        return [json.loads(e.message) for e in arrived if e.message.startswith(AUDIT)]


class ReplayTest(ReplayTestCase):
    def test_sends_the_exact_requests_then_one_audit_event(self) -> None:
        now = int(time.time() * 1000)
        requests = [
            request("one", now - 1),
            request('two\n"lines"\tGrüße 日本', now),
            request("three", 1000),  # outside CloudWatch's window
        ]
        for r in requests:
            self.assertTrue(self.spool.append(r))
        replayer = self.replayer()
        self.assertEqual(replayer.replay_now(), "done")
        self.assertEqual(self.daemon.requests[:2], requests[:2])
        restamped = self.daemon.requests[2]
        self.assertTrue(restamped.startswith(b'{"message": "three", "timestamp": 17'), restamped)
        (audit,) = self.audits(4)
        self.assertEqual(
            {k: audit[k] for k in ("replayed", "restamped", "duplicates", "quarantined", "torn")},
            {"replayed": 3, "restamped": 1, "duplicates": 0, "quarantined": 0, "torn": 0},
        )
        self.assertEqual((audit["first"], audit["pid"]), ("1970-01-01T00:00:01.000Z", os.getpid()))
        self.assertEqual(audit["last"], _iso(now))
        self.assertEqual(
            audit["processes"],
            [
                {
                    "pid": os.getpid(),
                    "replayed": 3,
                    "restamped": 1,
                    "duplicates": 0,
                    "quarantined": 0,
                    "torn": 0,
                    "dropped": 0,
                }
            ],
        )
        self.assertEqual((replayer.replayed, replayer.restamped, replayer.audits), (3, 1, 1))
        self.assertEqual(sorted(os.listdir(self.directory)), ["replay.lock"])
        self.assertEqual(replayer.replay_now(), "done")  # nothing left, nothing more said
        self.assertEqual(len(self.daemon.requests), 4)

    def test_a_record_outside_cloudwatch_window_is_restamped(self) -> None:
        old = int((time.time() - 20 * 86400) * 1000)
        self.spool.append(request("twenty days old", old))
        before = int(time.time() * 1000)
        self.replayer().replay_now()
        (event, _) = self.daemon.wait_for(2, 10, strict=True)
        self.assertEqual(event.message, "twenty days old")
        self.assertGreaterEqual(event.timestamp, before)  # type: ignore[arg-type]

    def test_own_segments_first_then_dead_processes(self) -> None:
        dead_segment(self.directory, [request("dead 0"), request("dead 1")])
        self.spool.append(request("own 0"))
        self.spool.append(request("own 1"))
        replayer = self.replayer()
        self.assertEqual(replayer.replay_now(), "done")
        self.assertEqual(self.records(5), ["own 0", "own 1", "dead 0", "dead 1"])
        pids = [p["pid"] for p in self.audits(5)[0]["processes"]]
        self.assertEqual(pids, [os.getpid(), DEAD])

    def test_a_killed_process_spool_is_replayed_by_another(self) -> None:
        done = run_python(spool_in_child(self.directory, ["a", "b", "c"], "kill"))
        self.assertEqual(done.returncode, -signal.SIGKILL, done.stderr)
        self.assertEqual(self.replayer().replay_now(), "done")
        self.assertEqual(self.records(4), ["a", "b", "c"])
        self.assertEqual(segments(self.directory), [])

    def test_a_live_process_segment_is_left_to_it(self) -> None:
        code = spool_in_child(self.directory, ["live"], "wait")
        with subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as child:
            assert child.stdin is not None and child.stdout is not None
            child.stdout.readline()
            replayer = self.replayer()
            self.assertEqual(replayer.replay_now(), "done")
            self.assertEqual(self.daemon.requests, [])
            self.assertEqual(len(segments(self.directory)), 1)
            child.stdin.write("\n")
            child.stdin.close()
            child.wait(30)
        self.assertEqual(replayer.replay_now(), "done")
        self.assertEqual(self.records(2), ["live"])

    def test_one_replayer_at_a_time(self) -> None:
        self.spool.append(request("waits"))
        fd = os.open(os.path.join(self.directory, "replay.lock"), os.O_RDWR | os.O_CREAT)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.assertEqual(self.replayer().replay_now(), "busy")
        self.assertEqual(self.daemon.requests, [])

    def test_a_torn_tail_is_counted_not_sent(self) -> None:
        torn = frame(request("torn"))[: HEADER.size + 5]
        dead_segment(self.directory, [request("whole 0"), request("whole 1")], torn)
        replayer = self.replayer()
        self.assertEqual(replayer.replay_now(), "done")
        self.assertEqual(self.records(3), ["whole 0", "whole 1"])
        self.assertEqual((replayer.torn, replayer.quarantined), (1, 0))
        self.assertEqual(self.audits(3)[0]["torn"], 1)
        self.assertEqual(segments(self.directory), [])
        self.assertFalse(os.path.exists(os.path.join(self.directory, "quarantine")))

    def test_a_frame_cut_by_a_read_is_read_whole_with_the_next(self) -> None:
        requests = [request(f"record {i} " + "x" * 300) for i in range(10)]
        dead_segment(self.directory, requests)
        with mock.patch.object(_replay, "_CHUNK", 1000):  # each read cuts a frame
            replayer = self.replayer()
            self.assertEqual(replayer.replay_now(), "done")
        self.assertEqual(self.records(11), [f"record {i} " + "x" * 300 for i in range(10)])
        self.assertEqual((replayer.torn, replayer.quarantined), (0, 0))

    def test_a_corrupt_frame_is_quarantined_and_the_rest_replayed(self) -> None:
        good = [request("before"), request("corrupt"), request("after")]
        broken = bytearray(frame(good[1]))
        broken[-5] ^= 0x20
        name = dead_segment(self.directory, [good[0]], bytes(broken) + frame(good[2]))
        replayer = self.replayer()
        self.assertEqual(replayer.replay_now(), "done")
        self.assertEqual(self.records(3), ["before", "after"])
        self.assertEqual((replayer.quarantined, replayer.torn), (1, 0))
        offset = len(frame(good[0]))
        kept = os.path.join(self.directory, "quarantine", f"{name[:-4]}-{offset}.bad")
        self.assertEqual(read(kept), bytes(broken))

    def test_a_request_refused_for_good_is_quarantined(self) -> None:
        too_large = b'{"message": "%s", "timestamp": 1}\n' % (b"x" * 262119)
        dead_segment(self.directory, [request("first"), too_large, request("last")])
        replayer = self.replayer()
        self.assertEqual(replayer.replay_now(), "done")
        self.assertEqual(self.records(3), ["first", "last"])
        self.assertEqual(replayer.quarantined, 1)

    def test_a_refusal_stops_the_pass_and_loses_nothing(self) -> None:
        for i in range(3):
            self.spool.append(request(f"record {i}"))
        self.daemon.behaviour = "refuse"
        replayer = self.replayer()
        self.assertEqual(replayer.replay_now(), "refused")
        self.assertEqual(len(self.daemon.requests), 1)  # nothing done: no audit event
        self.assertEqual(len(segments(self.directory)), 1)
        self.daemon.behaviour = "ok"
        self.assertEqual(replayer.replay_now(), "done")
        self.assertEqual(self.records(4), ["record 0", "record 1", "record 2"])
        self.assertEqual((replayer.refusals, replayer.duplicates), (1, 0))

    def test_no_daemon_is_unanswered_and_no_duplicate(self) -> None:
        self.spool.append(request("waits"))
        address = unique_address()
        replayer = self.replayer(send=sender(address))
        self.assertEqual(replayer.replay_now(), "unanswered")
        with LocalDaemon(address) as daemon:
            self.assertEqual(replayer.replay_now(), "done")
            self.assertEqual(daemon.wait_for(2, 10, strict=True)[0].message, "waits")
        self.assertEqual((replayer.unanswered, replayer.duplicates), (1, 0))

    def test_a_request_without_reply_is_a_duplicate_when_resent(self) -> None:
        for i in range(3):
            self.spool.append(request(f"record {i}"))
        self.daemon.behaviour = "hang"
        replayer = self.replayer(send=sender(self.daemon.address, timeout=0.2))
        self.assertEqual(replayer.replay_now(), "unanswered")
        self.daemon.behaviour = "ok"  # it answers the held request: it has the record
        self.assertEqual(replayer.replay_now(), "done")
        self.assertEqual(sorted(self.records(5)), ["record 0", "record 0", "record 1", "record 2"])
        self.assertEqual(replayer.duplicates, 1)
        self.assertEqual(self.audits(5)[-1]["duplicates"], 1)

    def test_a_dead_replayers_checkpoint_is_resumed(self) -> None:
        requests = [request(f"record {i}") for i in range(4)]
        name = dead_segment(self.directory, requests)
        ends = [sum(len(frame(r)) for r in requests[: i + 1]) for i in range(4)]
        checkpoint = os.path.join(self.directory, name[:-4] + ".ack")
        with open(checkpoint, "wb") as file:  # acked the first, maybe sent up to the third
            file.write(b"0 %d\n%d %d\n%d" % (ends[0], ends[0], ends[2], ends[3]))  # torn last line
        replayer = self.replayer()
        self.assertEqual(replayer.replay_now(), "done")
        self.assertEqual(self.records(4), ["record 1", "record 2", "record 3"])
        self.assertEqual(replayer.duplicates, 2)
        self.assertFalse(os.path.exists(checkpoint))

    def test_checkpoints_before_each_batch_and_at_a_stop(self) -> None:
        requests = [request(f"record {i}") for i in range(5)]
        name = dead_segment(self.directory, requests)
        ends = [sum(len(frame(r)) for r in requests[: i + 1]) for i in range(5)]

        def refuse_after_three(event: object) -> None:
            if len(daemon.events) >= 3:
                daemon.behaviour = "refuse"

        daemon = LocalDaemon(unique_address(), on_event=refuse_after_three).start()
        self.addCleanup(daemon.stop)
        replayer = self.replayer(send=sender(daemon.address), checkpoint_every=2)
        self.assertEqual(replayer.replay_now(), "refused")
        lines = read(os.path.join(self.directory, name[:-4] + ".ack")).decode().splitlines()
        self.assertEqual(lines, [f"0 {ends[1]}", f"{ends[1]} {ends[3]}", f"{ends[2]} {ends[2]}"])

    def test_a_killed_replayer_resends_at_most_one_batch(self) -> None:
        requests = [request(f"record {i}") for i in range(300)]
        dead_segment(self.directory, requests)
        self.daemon.delay = 0.002
        code = f"""
from globus.cwlogger._connect import round_trip
from globus.cwlogger._replay import Replayer
from globus.cwlogger._spool import Spool
spool = Spool({self.directory!r})
replayer = Replayer(spool, lambda q: round_trip([{self.daemon.address!r}], q, 5.0),
                    checkpoint_every=50, rate=1e6, background=False)
replayer.replay_now()
"""
        with subprocess.Popen([sys.executable, "-c", code]) as child:
            self.assertTrue(wait_until(lambda: len(self.daemon.events) >= 125, 60))
            child.kill()
        replayer = self.replayer()
        self.assertEqual(replayer.replay_now(), "done")
        whole = sum(r.endswith(b"\n") for r in self.daemon.requests)  # the killed one's may not be
        seen = self.records(whole)
        counts = {m: seen.count(m) for m in set(seen)}
        self.assertEqual(sorted(counts), sorted(f"record {i}" for i in range(300)))
        twice = sum(1 for n in counts.values() if n == 2)
        self.assertEqual(max(counts.values()), 2)
        self.assertLessEqual(twice, 50)
        self.assertGreaterEqual(replayer.duplicates, twice)
        self.assertLessEqual(replayer.duplicates, 50)

    def test_rate_paces_requests(self) -> None:
        for i in range(6):
            self.spool.append(request(f"record {i}"))
        replayer = self.replayer(rate=20)
        started = time.monotonic()
        replayer.replay_now()
        self.assertGreaterEqual(time.monotonic() - started, 5 / 20)  # a lower bound: never flaky

    def test_pause_while_the_daemon_queue_is_over_half_full(self) -> None:
        for i in range(3):
            self.spool.append(request(f"record {i}"))
        self.daemon.queue_percent_full = 50.0  # not over: no pause
        replayer = self.replayer(pause=3600)
        self.assertEqual(replayer.replay_now(time.monotonic() + 60), "done")
        for i in range(3):
            self.spool.append(request(f"again {i}"))
        self.daemon.queue_percent_full = 50.1
        self.assertEqual(replayer.replay_now(time.monotonic() + 1), "stopped")
        self.assertEqual(replayer.replayed, 4)  # one more, then it waited

    def test_drops_at_the_bound_are_reported_from_every_process(self) -> None:
        done = run_python(spool_in_child(self.directory, ["x"] * 3, "kill", max_bytes=10))
        self.assertEqual(done.returncode, -signal.SIGKILL, done.stderr)
        small = Spool(self.directory, max_bytes=1)
        self.addCleanup(small.close)
        self.spool.close()
        self.spool = small
        self.assertFalse(small.append(request("dropped")))
        replayer = self.replayer()
        self.assertEqual(replayer.replay_now(), "done")
        (audit,) = self.audits(1)
        self.assertEqual(audit["dropped"], 4)
        dropped = sorted((p["pid"] == os.getpid(), p["dropped"]) for p in audit["processes"])
        self.assertEqual(dropped, [(False, 3), (True, 1)])
        self.assertEqual((small.drops(), replayer.dropped), (0, 4))
        small.close()  # all its drops reported: it leaves no note of them
        self.assertEqual([n for n in os.listdir(self.directory) if n.endswith(".drops")], [])

    def test_an_audit_event_the_daemon_refuses_is_sent_with_the_next_pass(self) -> None:
        done = run_python(spool_in_child(self.directory, ["x"] * 3, "kill", max_bytes=10))
        self.assertEqual(done.returncode, -signal.SIGKILL, done.stderr)
        dead_segment(self.directory, [request("replayed")])
        send = sender(self.daemon.address)
        refusals: list[bytes] = []

        def refuse_the_first_audit(data: bytes) -> protocol.Reply:
            if data.startswith(b'{"message": "{\\"type\\": \\"audit\\"') and not refusals:
                refusals.append(data)
                return protocol.Error("Exception('too many events in queue')")
            return send(data)

        replayer = self.replayer(send=refuse_the_first_audit)
        self.assertEqual(replayer.replay_now(), "unanswered")  # not done: its report waits
        self.assertEqual(len(refusals), 1)
        self.assertTrue([n for n in os.listdir(self.directory) if n.endswith(".drops")])
        self.assertEqual(replayer.replay_now(), "done")
        (audit,) = self.audits(2)
        self.assertEqual((audit["replayed"], audit["dropped"]), (1, 3))  # counted once each
        self.assertEqual([n for n in os.listdir(self.directory) if n.endswith(".drops")], [])

    def test_own_drops_are_reported_once_after_close(self) -> None:
        small = Spool(self.directory, max_bytes=1)
        self.assertFalse(small.append(request("dropped")))
        small.close()  # its drops file stays: they were not reported
        self.spool.close()
        self.spool = small
        replayer = self.replayer()
        self.assertEqual(replayer.replay_now(), "done")
        self.assertEqual(self.audits(1)[0]["dropped"], 1)

    def test_own_rolled_segments_are_replayed_at_once(self) -> None:
        self.spool.close()
        self.spool = Spool(self.directory, segment_bytes=1, sync_interval=3600)
        self.addCleanup(self.spool.close)
        for i in range(5):
            self.spool.append(request(f"record {i}"))
        self.assertEqual(len(segments(self.directory)), 5)
        self.assertEqual(self.replayer().replay_now(), "done")
        self.assertEqual(self.records(6), [f"record {i}" for i in range(5)])
        self.assertEqual(segments(self.directory), [])

    def test_debris_is_removed(self) -> None:
        orphan = os.path.join(self.directory, "1-dead-000001.ack")
        stale = os.path.join(self.directory, ".1-dead-000001.tmp")
        fresh = os.path.join(self.directory, ".2-dead-000001.tmp")
        for path in (orphan, stale, fresh):
            with open(path, "wb"):
                pass
        os.utime(stale, (time.time() - 61, time.time() - 61))
        self.replayer().replay_now()
        self.assertEqual(sorted(os.listdir(self.directory)), [".2-dead-000001.tmp", "replay.lock"])

    def test_options_are_checked(self) -> None:
        for options, text in [
            ({"rate": 0}, "rate must be from"),
            ({"pause_above": 101}, "pause_above must be from 0 to 100: 101"),
            ({"pause": -1}, "pause must be from"),
            ({"checkpoint_every": 0}, "checkpoint_every must be from 1"),
            ({"retry_interval": 10, "max_retry_interval": 5}, "max_retry_interval must be from 10"),
        ]:
            with self.subTest(options), self.assertRaisesRegex(ValueError, text):
                Replayer(self.spool, sender(self.daemon.address), **options)  # type: ignore[arg-type]
        with self.assertRaisesRegex(TypeError, "checkpoint_every must be a int, not float"):
            Replayer(self.spool, sender(self.daemon.address), checkpoint_every=1.5)  # type: ignore[arg-type]


class BackgroundTest(ReplayTestCase):
    def test_start_up_replays_what_dead_processes_left(self) -> None:
        dead_segment(self.directory, [request("left")])
        self.replayer(background=True, retry_interval=60, max_retry_interval=60)
        self.assertEqual(self.records(2), ["left"])

    def test_wake_replays_at_once_when_the_daemon_is_back(self) -> None:
        address = unique_address()
        self.spool.append(request("spooled while down"))
        replayer = self.replayer(
            background=True, send=sender(address), retry_interval=60, max_retry_interval=60
        )
        self.assertTrue(wait_until(lambda: replayer.unanswered == 1))  # its start-up pass
        with LocalDaemon(address) as daemon:
            replayer.wake()
            daemon.wait_for(2, 10, strict=True)
            self.assertEqual(daemon.events[0].message, "spooled while down")

    def test_new_records_are_retried_without_a_wake(self) -> None:
        dead_segment(self.directory, [request("first")])
        self.replayer(background=True, retry_interval=0.05)
        self.daemon.wait_for(2, 10, strict=True)  # the start-up pass is over
        self.spool.append(request("later"))
        self.assertEqual(self.records(4), ["first", "later"])

    def test_close_ends_the_thread_within_its_deadline_even_in_a_pause(self) -> None:
        for i in range(3):
            self.spool.append(request(f"record {i}"))
        self.daemon.queue_percent_full = 99.0
        replayer = self.replayer(background=True, pause=3600)
        self.daemon.wait_for(1, 10, strict=True)
        replayer.close(time.monotonic() + 30)
        self.assertFalse(
            any(t.name == "cwlogger-replay" and t.is_alive() for t in threading.enumerate())
        )
        self.assertEqual(len(segments(self.directory)), 1)  # the rest stays for later

    def test_forked_child_replays_with_a_thread_of_its_own(self) -> None:
        replayer = self.replayer(background=True, retry_interval=0.05)
        pid = fork()
        if pid == 0:
            status = 1
            try:
                self.spool.append(request("from the child"))
                replayer.wake()
                ok = wait_until(lambda: replayer.audits == 1, 20)  # the pass is over
                status = 0 if ok and replayer.replayed == 1 else 2
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertEqual(self.records(2), ["from the child"])
        self.assertEqual(replayer.replayed, 0)  # counted in the child, not here


class ForkTest(ReplayTestCase):
    def replay_until(self, replayer: Replayer, stop: threading.Event) -> None:
        while not stop.is_set():
            replayer.replay_now()

    def test_a_child_forked_mid_pass_never_keeps_the_replay_lock(self) -> None:
        replayer = self.replayer()
        lock = os.path.join(self.directory, "replay.lock")
        for _ in range(200):
            stop = threading.Event()
            passes = threading.Thread(target=self.replay_until, args=(replayer, stop))
            passes.start()
            time.sleep(0.0005)
            read_end, write_end = os.pipe()
            pid = fork()
            if pid == 0:
                status = 1
                try:
                    os.close(write_end)
                    os.read(read_end, 1)  # the parent's passes are over
                    fd = os.open(lock, os.O_RDWR)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        status = 0
                    except BlockingIOError:
                        status = 3  # a descriptor it inherited unknowingly holds it
                finally:
                    os._exit(status)
            os.close(read_end)
            stop.set()
            passes.join()
            os.write(write_end, b"x")
            os.close(write_end)
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0)


class CommandLineTest(ReplayTestCase):
    def test_describe_says_what_is_held_and_by_whom(self) -> None:
        self.spool.append(request("own", 5000))
        torn = frame(request("torn"))[:20]
        dead_segment(self.directory, [request("dead 0", 2000), request("dead 1", 3000)], torn)
        os.mkdir(os.path.join(self.directory, "quarantine"))
        with open(os.path.join(self.directory, "quarantine", "x.bad"), "wb") as file:
            file.write(b"junk")
        with open(os.path.join(self.directory, f"{DEAD}-dead0999.drops"), "wb") as file:
            file.write(b"7 2\n")
        status = describe(self.directory)
        status["owners"].sort(key=lambda owner: owner["pid"])
        own = len(request("own", 5000))
        dead = len(request("dead 0", 2000)) + len(request("dead 1", 3000))
        self.assertEqual(
            status,
            {
                "directory": self.directory,
                "bytes": sum(
                    os.path.getsize(os.path.join(root, name))
                    for root, _, names in os.walk(self.directory)
                    for name in names
                ),
                "records": 3,
                "oldest": 2000,
                "owners": [
                    {
                        "pid": os.getpid(),
                        "alive": True,
                        "segments": 1,
                        "records": 1,
                        "bytes": own,
                        "oldest": 5000,
                        "damaged": 0,
                    },
                    {
                        "pid": DEAD,
                        "alive": False,
                        "segments": 1,
                        "records": 2,
                        "bytes": dead,
                        "oldest": 2000,
                        "damaged": 1,
                    },
                ],
                "quarantined": 1,
                "dropped": 5,
            },
        )

    def test_replay_now_from_the_command_line(self) -> None:
        dead_segment(self.directory, [request("a"), request("b")])
        outcome, replayer = replay(self.directory, sender(self.daemon.address))
        self.assertEqual((outcome, replayer.replayed, replayer.audits), ("done", 2, 1))
        self.assertEqual(self.records(3), ["a", "b"])
        self.assertEqual(replay(self.directory + "/", sender(self.daemon.address))[0], "done")
        with self.assertRaisesRegex(ValueError, "not a spool directory: '/nonexistent/spool'"):
            describe("/nonexistent/spool")


def _iso(timestamp: int) -> str:
    seconds, ms = divmod(timestamp, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


if __name__ == "__main__":
    unittest.main()
