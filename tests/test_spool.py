"""The spool's store: frames, the directory, appending, the bound, fork."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
import unittest
import zlib
from unittest import mock

from globus.cwlogger import protocol
from globus.cwlogger._spool import HEADER, MAGIC, MAX_REQUEST, Spool, claim, frame, frames

from .support import fork, run_python, temporary_directory, wait_until


def request(message: str, timestamp: int | None = None) -> bytes:
    stamp = int(time.time() * 1000) if timestamp is None else timestamp
    return protocol.encode_event(message, stamp)[0]


def segments(directory: str) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".seg"))


def contents(directory: str) -> list[bytes | None]:
    """Every frame's request (None: damaged) in the directory's segments."""
    found: list[bytes | None] = []
    for name in segments(directory):
        with open(os.path.join(directory, name), "rb") as file:
            found.extend(item for _, _, item in frames(file.read()))
    return found


def read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


REQUESTS = [request("one"), request("two\nlines"), request("Grüße"), request("x" * 70000)]


class FrameTest(unittest.TestCase):
    requests = REQUESTS

    def test_frames_give_each_request_with_its_offsets(self) -> None:
        data = b"".join(frame(r) for r in self.requests)
        found = list(frames(data))
        self.assertEqual([item for _, _, item in found], self.requests)
        ends = [sum(HEADER.size + len(r) for r in self.requests[: i + 1]) for i in range(4)]
        self.assertEqual([(s, e) for s, e, _ in found], list(zip([0, *ends[:-1]], ends)))
        self.assertEqual(list(frames(data, ends[1])), found[2:])

    def test_a_torn_tail_is_one_bad_region_at_the_end_at_any_cut(self) -> None:
        whole = frame(self.requests[0]) + frame(self.requests[1])
        last = frame(self.requests[2])
        for cut in range(1, len(last)):
            with self.subTest(cut=cut):
                data = whole + last[:cut]
                found = list(frames(data))
                self.assertEqual([item for _, _, item in found[:2]], self.requests[:2])
                self.assertEqual(found[2:], [(len(whole), len(data), None)])

    def test_a_corrupt_frame_is_skipped_up_to_the_next_one(self) -> None:
        first, middle, last = (frame(r) for r in self.requests[:3])
        for position in (0, 4, 8, HEADER.size, len(middle) - 1):  # magic, length, crc, body
            with self.subTest(position=position):
                broken = bytearray(middle)
                broken[position] ^= 0x01
                data = first + bytes(broken) + last
                found = list(frames(data))
                self.assertEqual(
                    found,
                    [
                        (0, len(first), self.requests[0]),
                        (len(first), len(first) + len(middle), None),
                        (len(first) + len(middle), len(data), self.requests[2]),
                    ],
                )

    def test_what_is_not_a_frame(self) -> None:
        good = frame(self.requests[0])
        body = b'{"message": "no newline"}'
        not_frames = {
            "zeros": bytes(64),
            "empty frame": HEADER.pack(MAGIC, 0, zlib.crc32(b"")),
            "one byte": HEADER.pack(MAGIC, 1, zlib.crc32(b"\n")) + b"\n",
            "no newline": HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body,
            "too long": HEADER.pack(MAGIC, MAX_REQUEST + 1, 0) + b"x" * 16,
        }
        for name, junk in not_frames.items():
            with self.subTest(name):
                found = list(frames(junk + good))
                self.assertEqual(
                    found,
                    [(0, len(junk), None), (len(junk), len(junk) + len(good), self.requests[0])],
                )
        smallest = b"{\n"
        self.assertEqual(list(frames(frame(smallest))), [(0, HEADER.size + 2, smallest)])

    def test_frame_refuses_what_is_not_a_request(self) -> None:
        for bad in (b"", b"\n", b'{"message": "x"}', b"x" * MAX_REQUEST + b"\n"):
            with self.subTest(bad=bad[:20]), self.assertRaisesRegex(ValueError, "not a request"):
                frame(bad)


class DirectoryTest(unittest.TestCase):
    def setUp(self) -> None:
        self.base = temporary_directory(self)

    def test_relative_path_is_refused(self) -> None:
        with self.assertRaisesRegex(ValueError, r"absolute path: 'var/spool/x'"):
            Spool("var/spool/x")

    def test_path_that_cannot_be_created_is_refused(self) -> None:
        blocker = os.path.join(self.base, "file")
        with open(blocker, "w"):
            pass
        for path in (os.path.join(blocker, "spool"), blocker):
            with (
                self.subTest(path=path),
                self.assertRaisesRegex(ValueError, "cannot be created: '" + path),
            ):
                Spool(path)

    def test_wrong_types_are_refused(self) -> None:
        with self.assertRaisesRegex(TypeError, "spool must be a str or path, not bytes"):
            Spool(b"/tmp/x")  # type: ignore[arg-type]

    @unittest.skipUnless(os.geteuid() == 0, "needs root to give the directory away")
    def test_another_users_directory_is_refused(self) -> None:
        path = os.path.join(self.base, "theirs")
        os.mkdir(path, 0o700)
        os.chown(path, 65534, 65534)
        with self.assertRaisesRegex(PermissionError, f"'{path}' belongs to uid 65534, not 0"):
            Spool(path)

    def test_directory_is_created_private_or_made_private(self) -> None:
        new = os.path.join(self.base, "a", "new")
        Spool(new).close()
        self.assertEqual(stat.S_IMODE(os.stat(new).st_mode), 0o700)
        existing = os.path.join(self.base, "existing")
        os.mkdir(existing)
        os.chmod(existing, 0o755)  # what systemd's StateDirectory= makes
        Spool(existing + "/").close()
        self.assertEqual(stat.S_IMODE(os.stat(existing).st_mode), 0o700)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to mount a read-only filesystem")
    def test_read_only_directory_is_refused(self) -> None:
        path = os.path.join(self.base, "ro")
        os.mkdir(path, 0o700)
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=0700", "tmpfs", path], check=False
        )
        if mounted.returncode:
            self.skipTest("cannot mount a tmpfs here")
        self.addCleanup(subprocess.run, ["umount", path], check=True)
        with self.assertRaisesRegex(PermissionError, f"'{path}': not writable"):
            Spool(path)

    def test_options_are_checked(self) -> None:
        path = os.path.join(self.base, "spool")
        bad: list[tuple[dict[str, object], type[Exception], str]] = [
            ({"max_bytes": 0}, ValueError, "max_bytes must be from 1 .*: 0"),
            ({"max_bytes": "1"}, TypeError, "max_bytes must be a int, not str: '1'"),
            ({"max_bytes": True}, TypeError, "max_bytes must be a int, not bool"),
            ({"segment_bytes": 0}, ValueError, "segment_bytes must be from 1 .*: 0"),
            ({"sync_interval": -0.1}, ValueError, r"sync_interval must be from 0 to 3600: -0.1"),
            ({"sync_interval": float("nan")}, ValueError, "sync_interval must be .*: nan"),
            ({"sync_interval": float("inf")}, ValueError, "sync_interval must be .*: inf"),
            ({"sync_interval": "0.1"}, TypeError, "sync_interval must be a float, not str"),
        ]
        for options, error, text in bad:
            with self.subTest(options), self.assertRaisesRegex(error, text):
                Spool(path, **options)  # type: ignore[arg-type]


class AppendTest(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = temporary_directory(self)

    def spool(self, **options: object) -> Spool:
        spool = Spool(self.directory, **options)  # type: ignore[arg-type]
        self.addCleanup(spool.close)
        return spool

    def test_each_record_is_one_frame_in_this_process_segment(self) -> None:
        spool = self.spool()
        requests = [request(f"record {i}") for i in range(3)]
        self.assertEqual([spool.append(r) for r in requests], [True] * 3)
        self.assertEqual(segments(self.directory), [f"{os.getpid()}-{spool.token}-000001.seg"])
        with open(os.path.join(self.directory, segments(self.directory)[0]), "rb") as file:
            self.assertEqual(file.read(), b"".join(frame(r) for r in requests))
        self.assertEqual((spool.spooled, spool.dropped, spool.failed), (3, 0, 0))
        self.assertEqual(
            stat.S_IMODE(
                os.stat(os.path.join(self.directory, segments(self.directory)[0])).st_mode
            ),
            0o600,
        )

    def test_segment_is_locked_while_written_and_kept_after_close(self) -> None:
        spool = self.spool()
        kept = request("kept")
        spool.append(kept)
        path = os.path.join(self.directory, segments(self.directory)[0])
        self.assertIsNone(claim(path))
        spool.close()
        fd = claim(path)
        self.assertIsNotNone(fd)
        os.close(fd)  # type: ignore[arg-type]
        self.assertEqual(contents(self.directory), [kept])

    def test_claim_refuses_a_segment_deleted_by_the_holder_it_waited_for(self) -> None:
        path = os.path.join(self.directory, "1-dead-000001.seg")
        with open(path, "wb"):
            pass
        real = fcntl.flock

        def flock(fd: int, operation: int) -> None:
            os.unlink(path)  # its last holder finished it meanwhile
            real(fd, operation)

        with mock.patch("fcntl.flock", flock):
            self.assertIsNone(claim(path))
        self.assertIsNone(claim(path))  # gone before it could be opened

    def test_release_only_what_was_all_replayed(self) -> None:
        spool = self.spool()
        spool.append(request("one"))
        name, size = spool.active()
        self.assertEqual(size, len(frame(request("one"))))
        self.assertFalse(spool.release(name, size - 1))  # more was written than replayed
        self.assertFalse(spool.release("other.seg", size))
        self.assertEqual(spool.active(), (name, size))
        self.assertTrue(spool.release(name, size))
        self.assertEqual(spool.active(), ("", 0))
        self.assertTrue(spool.holds(name))  # until its thread closes it
        spool.append(request("two"))
        self.assertEqual(spool.active()[0].rsplit("-", 1)[1], "000002.seg")

    def test_close_removes_an_empty_segment_and_a_record_after_it_opens_a_new_one(self) -> None:
        spool = self.spool()
        spool.append(request("one"))
        name = segments(self.directory)[0]
        self.assertTrue(spool.release(name, os.path.getsize(os.path.join(self.directory, name))))
        os.unlink(os.path.join(self.directory, name))  # as the replayer does
        spool.close()
        spool.close()
        self.assertEqual(segments(self.directory), [])
        late = request("after close")
        self.assertTrue(spool.append(late))  # from an exit hook, say
        self.assertEqual((spool.spooled, spool.failed), (2, 0))
        thread = spool._thread  # the new segment is synced as the first was
        self.assertTrue(thread is not None and thread.is_alive())
        (again,) = segments(self.directory)
        self.assertNotEqual(again, name)
        spool.close()
        with open(os.path.join(self.directory, again), "rb") as file:
            self.assertIn(late, file.read())

    def test_segments_roll_at_segment_bytes(self) -> None:
        requests = [request(f"record {i}") for i in range(4)]
        size = len(frame(requests[0]))
        spool = self.spool(segment_bytes=3 * size)
        for r in requests:
            spool.append(r)
        big = request("y" * (4 * size))
        spool.append(big)
        spool.append(requests[0])
        names = segments(self.directory)
        self.assertEqual(
            [n.rsplit("-", 1)[1] for n in names],
            ["000001.seg", "000002.seg", "000003.seg", "000004.seg"],
        )
        sizes = [os.path.getsize(os.path.join(self.directory, n)) for n in names]
        self.assertEqual(sizes, [3 * size, size, len(frame(big)), size])
        self.assertEqual(contents(self.directory), [*requests, big, requests[0]])

    def test_the_bound_refuses_at_once_and_counts(self) -> None:
        requests = [request(f"record {i}") for i in range(4)]
        size = len(frame(requests[0]))
        spool = self.spool(max_bytes=3 * size)
        self.assertEqual([spool.append(r) for r in requests], [True, True, True, False])
        self.assertEqual((spool.spooled, spool.dropped, spool.failed), (3, 1, 0))
        self.assertEqual(contents(self.directory), requests[:3])

    def test_the_bound_counts_every_file_of_the_directory(self) -> None:
        size = len(frame(request("record")))
        with open(os.path.join(self.directory, "other.seg"), "wb") as file:
            file.write(b"x" * (2 * size))
        spool = self.spool(max_bytes=3 * size)
        self.assertEqual([spool.append(request("record")) for _ in range(2)], [True, False])
        os.unlink(os.path.join(self.directory, "other.seg"))
        self.assertFalse(spool.append(request("record")))  # not measured again yet
        spool.measure()
        self.assertEqual([spool.append(request("record")) for _ in range(3)], [True, True, False])

    def test_the_thread_measures_again_even_if_nothing_was_ever_stored(self) -> None:
        with open(os.path.join(self.directory, "other.seg"), "wb") as file:
            file.write(b"x" * 1000)
        spool = self.spool(max_bytes=1000)
        stored = request("stored")
        self.assertFalse(spool.append(stored))
        os.unlink(os.path.join(self.directory, "other.seg"))  # a replayer sent it
        self.assertTrue(wait_until(lambda: spool.append(stored)))
        self.assertEqual(contents(self.directory), [stored])
        self.assertEqual(spool.spooled, 1)

    def test_what_is_not_a_request_is_refused_and_counted(self) -> None:
        spool = self.spool()
        self.assertFalse(spool.append(b'{"message": "no newline"}'))
        self.assertFalse(spool.append("text\n"))  # type: ignore[arg-type]
        self.assertEqual((spool.spooled, spool.failed), (0, 2))
        self.assertEqual(segments(self.directory), [])

    def test_an_error_is_counted_never_raised(self) -> None:
        spool = self.spool()
        shutil.rmtree(self.directory)
        self.assertFalse(spool.append(request("nowhere")))
        self.assertEqual((spool.spooled, spool.failed), (0, 1))

    def test_concurrent_threads_never_tear_a_frame(self) -> None:
        spool = self.spool(segment_bytes=64 * 1024)

        def work(n: int) -> None:
            for i in range(200):
                spool.append(request(f"thread {n} record {i} " + "z" * (i * 7)))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        found = contents(self.directory)
        self.assertNotIn(None, found)
        self.assertEqual(len(found), 1600)
        self.assertEqual(spool.spooled, 1600)

    def test_a_signal_handler_that_logs_mid_write_never_tears_a_frame(self) -> None:
        spool = self.spool(segment_bytes=2**30)
        nested: list[bool] = []

        def on_alarm(signum: int, frame: object) -> None:
            nested.append(spool.append(request("from the signal handler")))

        previous = signal.signal(signal.SIGALRM, on_alarm)
        self.addCleanup(signal.signal, signal.SIGALRM, previous)
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
        try:
            outer = [spool.append(request(f"outer {i} " + "o" * 20000)) for i in range(3000)]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        found = contents(self.directory)
        self.assertNotIn(None, found)
        self.assertEqual(len(found), outer.count(True) + nested.count(True))
        self.assertEqual(outer.count(False) + nested.count(False), spool.failed)
        self.assertGreater(
            nested.count(False), 0, "no signal arrived mid-write: the test proves nothing"
        )

    def test_sync_interval_zero_syncs_every_record_in_the_caller(self) -> None:
        callers = self.sync_callers()
        spool = self.spool(sync_interval=0)
        for i in range(3):
            spool.append(request(f"record {i}"))
            self.assertEqual(callers.count(threading.get_ident()), i + 1)

    def test_by_default_a_thread_syncs_never_the_caller(self) -> None:
        callers = self.sync_callers()
        spool = self.spool()
        spool.append(request("record"))
        self.assertTrue(wait_until(lambda: callers))
        self.assertNotIn(threading.get_ident(), callers)

    def sync_callers(self) -> list[int]:
        callers: list[int] = []
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            callers.append(threading.get_ident())
            real(fd)

        patcher = mock.patch("os.fdatasync", fdatasync)
        patcher.start()
        self.addCleanup(patcher.stop)
        return callers

    def test_drops_are_kept_for_a_replayer_until_reported(self) -> None:
        size = len(frame(request("record")))
        spool = self.spool(max_bytes=size)
        for _ in range(3):
            spool.append(request("record"))
        drops = os.path.join(self.directory, f"{os.getpid()}-{spool.token}.drops")
        self.assertTrue(
            wait_until(lambda: os.path.exists(drops) and read(drops).split() == [b"2", b"0"])
        )
        self.assertIsNone(claim(drops))  # locked: its owner reports them
        self.assertEqual(spool.drops(), 2)
        spool.reported(2)
        self.assertEqual(spool.drops(), 0)
        self.assertTrue(wait_until(lambda: read(drops).split() == [b"2", b"2"]))
        spool.close()
        self.assertFalse(os.path.exists(drops))

    def test_drops_not_reported_stay_after_close(self) -> None:
        spool = self.spool(max_bytes=10)
        spool.append(request("record"))
        spool.close()
        drops = os.path.join(self.directory, f"{os.getpid()}-{spool.token}.drops")
        with open(drops, "rb") as file:
            self.assertEqual(file.read().split(), [b"1", b"0"])

    def test_forked_child_writes_its_own_segment(self) -> None:
        spool = self.spool()
        before, after = request("parent before"), request("parent after")
        spool.append(before)
        pid = fork()
        if pid == 0:
            status = 1
            try:
                stored = [spool.append(request(f"child {i}")) for i in range(2)]
                ours = segments(self.directory)
                mine = [n for n in ours if n.startswith(f"{os.getpid()}-")]
                status = (
                    0 if stored == [True, True] and len(mine) == 1 and spool.spooled == 2 else 2
                )
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        spool.append(after)
        names = segments(self.directory)
        self.assertEqual(len(names), 2)
        parent_name = next(n for n in names if n.startswith(f"{os.getpid()}-"))
        child_name = next(n for n in names if n.startswith(f"{pid}-"))
        with open(os.path.join(self.directory, parent_name), "rb") as file:
            self.assertEqual([r for _, _, r in frames(file.read())], [before, after])
        with open(os.path.join(self.directory, child_name), "rb") as file:
            self.assertEqual(len(list(frames(file.read()))), 2)
        self.assertIsNone(
            claim(os.path.join(self.directory, parent_name))
        )  # the child did not unlock it
        fd = claim(os.path.join(self.directory, child_name))  # the child is gone
        self.assertIsNotNone(fd)
        os.close(fd)  # type: ignore[arg-type]

    def test_forked_child_is_not_blocked_by_a_lock_held_at_fork(self) -> None:
        spool = self.spool()
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with spool._lock:
                held.set()
                release.wait(30)

        thread = threading.Thread(target=hold)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(release.set)
        held.wait(10)
        pid = fork()
        if pid == 0:
            os._exit(0 if spool.append(request("child")) else 2)
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.fail("the child waited for a lock that no thread of it holds")
        self.assertEqual(os.waitstatus_to_exitcode(done[1]), 0)

    def test_a_large_record_goes_into_an_empty_segment_rather_than_a_new_one(self) -> None:
        code = f"""
import os, resource
from globus.cwlogger import protocol
from globus.cwlogger._spool import Spool
spool = Spool({self.directory!r}, segment_bytes=100, sync_interval=0)
record = protocol.encode_event("r" * 1000, 1)[0]
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (10, hard))
assert not spool.append(record)  # its segment is made, the write fails
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
assert spool.append(record)
spool.close()
"""
        done = run_python(code)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual([n.rsplit("-", 1)[1] for n in segments(self.directory)], ["000001.seg"])
        self.assertEqual(contents(self.directory), [request("r" * 1000, 1)])

    def test_a_short_write_is_truncated_back_and_spooling_resumes(self) -> None:
        # RLIMIT_FSIZE makes a write cross the limit short, as a full disk
        # does; in a child, as it limits every file of the process.
        code = f"""
import json, os, resource
from globus.cwlogger import protocol
from globus.cwlogger._spool import Spool, frames
path = {self.directory!r}
spool = Spool(path, sync_interval=0)
record = protocol.encode_event("r" * 1000, 1)[0]
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (2500, hard))
results = [spool.append(record) for _ in range(4)]
name = [n for n in os.listdir(path) if n.endswith(".seg")][0]
size_at_limit = os.path.getsize(os.path.join(path, name))
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
results.append(spool.append(record))
spool.close()
with open(os.path.join(path, name), "rb") as file:
    found = [r is not None for _, _, r in frames(file.read())]
print(json.dumps([results, size_at_limit, found, spool.short_writes, spool.failed]))
"""
        done = run_python(code)
        self.assertEqual(done.returncode, 0, done.stderr)
        results, size_at_limit, found, short_writes, failed = json.loads(done.stdout)
        size = len(frame(request("r" * 1000, 1)))
        self.assertEqual(results, [True, True, False, False, True])
        self.assertEqual(size_at_limit, 2 * size)  # each partial frame was cut away
        self.assertEqual(found, [True, True, True])
        self.assertEqual((short_writes, failed), (2, 2))


if __name__ == "__main__":
    unittest.main()
