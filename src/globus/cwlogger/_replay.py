"""Reading a spool: replaying it to the daemon, and describing it.

How replay works, and why:

- A pass holds the directory's ``replay.lock`` (one replayer at a time sends
  to the daemon), sends this process's segments first, then claims those of
  processes that are gone (their lock can be taken), and ends with one
  ``cwlogger.spool`` audit event.  A finished segment is deleted; this
  process's own segment is first released by its writer.
- Paced so that live records are not delayed: one request in flight, at most
  ``rate`` a second, a ``pause`` after each reply that reports the daemon's
  queue more than ``pause_above`` percent full, and the pass stops at the
  first refusal or unanswered request.  It is tried again later (sooner when
  :meth:`Replayer.wake` says that the daemon acknowledged a live record).
- Before each batch of ``checkpoint_every`` records, a line ``acked until``
  is appended to the segment's ``.ack`` file: every record before offset
  ``acked`` was acknowledged, those before ``until`` may have been sent.  A
  replayer killed mid-batch thus makes the next one resend at most one
  batch, and that one counts them as ``duplicates``: never a loss.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import math
import os
import threading
import time
import weakref

from . import protocol
from ._records import iso_ms
from ._spool import (
    CHECKPOINT,
    DROPS,
    FORK_LOCK,
    LOCK,
    MAX_REQUEST,
    QUARANTINE,
    SEGMENT,
    Spool,
    check_number,
    claim,
    directory_bytes,
    frames,
    parse_name,
    read_checkpoint,
    write_checkpoint,
)

TYPE_CHECKING = False  # without importing typing: see _typing.py
if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import TypedDict

    class Owner(TypedDict):
        """What one process left in a spool directory."""

        pid: int
        alive: bool  # it, or a replayer, holds one of its segments
        segments: int
        records: int  # not replayed yet
        bytes: int  # of those records
        oldest: int | None  # the oldest record's timestamp, ms
        damaged: int  # corrupt frames and torn tails, set aside when replayed

    class Status(TypedDict):
        """What a spool directory holds."""

        directory: str
        bytes: int  # of all its files: what the bound counts
        records: int
        oldest: int | None
        owners: list[Owner]
        quarantined: int  # files in quarantine/
        dropped: int  # at the bound by processes that are gone, not reported yet


__all__ = ["Replayer", "describe", "replay"]

DONE, REFUSED, UNANSWERED, BUSY, STOPPED = "done", "refused", "unanswered", "busy", "stopped"
QUEUE_FULL = "too many events in queue"  # the one refusal that passes
DEAD_SCAN_INTERVAL = 2.0  # seconds: how often wakes look for dead processes' segments
STALE = 60.0  # seconds after which a hidden segment that nobody locks is debris
_CHUNK = 2 * MAX_REQUEST  # bytes read at once: more than any frame (frame() refuses more)
_CATCH_UP = 0.05  # seconds of requests the pace may make up for at most
# Raised before the request left: the daemon cannot have it.
_NOT_SENT = (ConnectionRefusedError, FileNotFoundError, BlockingIOError, PermissionError)
# What the audit event counts, per process.
_FIELDS = ("replayed", "restamped", "duplicates", "quarantined", "torn", "dropped")
_REPLAYED, _RESTAMPED, _DUPLICATES, _QUARANTINED, _TORN, _DROPPED = range(6)


class Replayer:
    """Sends what ``spool``'s directory holds with ``send`` (one round trip:
    it returns the daemon's reply, or raises OSError or ProtocolError), in a
    background thread unless ``background`` is false.

    Counters (this process): ``replayed`` (acknowledged), ``restamped``,
    ``duplicates`` (resent after a replayer died or a request went
    unanswered), ``quarantined`` (corrupt, or refused for good), ``torn`` (a
    writer killed mid-record), ``dropped`` (at the bound, reported),
    ``refusals`` and ``unanswered`` (passes stopped), ``audits`` (sent).
    """

    def __init__(
        self,
        spool: Spool,
        send: Callable[[bytes], protocol.Reply],
        *,
        rate: float = 2000.0,
        pause_above: float = 50.0,
        pause: float = 1.0,
        checkpoint_every: int = 100,
        retry_interval: float = 1.0,
        max_retry_interval: float = 30.0,
        background: bool = True,
    ) -> None:
        check_number("rate", rate, 0.001, 1e9)
        check_number("pause_above", pause_above, 0, 100)
        check_number("pause", pause, 0, 3600)
        check_number("retry_interval", retry_interval, 0.001, 3600)
        check_number("max_retry_interval", max_retry_interval, retry_interval, 3600)
        check_number("checkpoint_every", checkpoint_every, 1, 2**31, (int,))
        self.spool, self._send = spool, send
        self.rate, self.pause_above, self.pause = float(rate), float(pause_above), float(pause)
        self.checkpoint_every = checkpoint_every
        self.retry_interval, self.max_retry_interval = retry_interval, max_retry_interval
        self.background = background
        self._reset()
        _LIVE.add(self)
        if background:
            self._start()

    def _reset(self) -> None:
        """The state of a process that has not replayed yet."""
        self.replayed = self.restamped = self.duplicates = self.quarantined = 0
        self.torn = self.dropped = self.refusals = self.unanswered = self.audits = 0
        self._pid = os.getpid()
        self._held: set[int] = set()  # descriptors: the replay lock, claimed segments
        self._report: dict[tuple[int, str], list[int]] = {}  # not in an audit event yet
        self._span: tuple[int, int] | None = None  # first and last timestamp replayed
        self._next = 0.0  # time.monotonic() of the next request
        self._stop, self._signal = threading.Event(), threading.Event()
        self._woken = False
        self._outcome, self._seen, self._last_pass = DONE, -1, -math.inf
        self._backoff, self._retry_at = self.retry_interval, 0.0
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cwlogger-replay", daemon=True)
        with contextlib.suppress(RuntimeError):  # at interpreter exit
            self._thread.start()

    # -- when ------------------------------------------------------------------

    def wake(self) -> None:
        """The daemon acknowledged a live record: replay now if there is
        anything to replay (cheap: call it on every acknowledgement)."""
        if not self._woken:
            self._woken = True
            self._signal.set()

    def _run(self) -> None:
        self._attempt()  # at start-up: what earlier processes left
        while not self._stop.is_set():
            self._signal.wait(self.retry_interval)
            self._signal.clear()
            if self._stop.is_set():
                return
            woken, self._woken = self._woken, False
            now = time.monotonic()
            pending = self._outcome != DONE or self.spool.spooled != self._seen
            if woken:
                self._backoff = self.retry_interval
                if pending or now - self._last_pass >= DEAD_SCAN_INTERVAL:
                    self._attempt()
            elif pending and now >= self._retry_at:
                self._attempt()

    def _attempt(self) -> None:
        self._seen = self.spool.spooled  # what is spooled during the pass is pending
        try:
            self._outcome = self.replay_now()
        except Exception:  # a full disk, a bug: try again later
            self._outcome = UNANSWERED
        self._last_pass = now = time.monotonic()
        if self._outcome == DONE:
            self._backoff = self.retry_interval
        else:
            self._retry_at = now + self._backoff
            self._backoff = min(2 * self._backoff, self.max_retry_interval)

    def close(self, deadline: float) -> None:
        """Stop, waiting for the thread until ``deadline`` (``time.monotonic()``)
        at most; what is left stays for the next replayer."""
        self._stop.set()
        self._signal.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        _LIVE.discard(self)

    def after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's locks and thread, start afresh."""
        if self._pid == os.getpid():
            return
        self.spool.after_fork_in_child()  # first: its token says which segments are ours
        stopped = self._stop.is_set()
        for fd in self._held:
            with contextlib.suppress(OSError):
                os.close(fd)  # never unlock: the lock is the parent's too
        self._reset()
        if stopped:
            self._stop.set()
        elif self.background:
            self._start()

    # -- one pass --------------------------------------------------------------

    def replay_now(self, deadline: float | None = None) -> str:
        """One pass in the caller's thread, until everything was sent or
        ``deadline`` (``time.monotonic()``): ``"done"``, ``"refused"``,
        ``"unanswered"``, ``"busy"`` (another replayer holds the directory,
        or a segment of this process could not be claimed) or ``"stopped"``."""
        directory = self.spool.directory
        with FORK_LOCK:
            lock = os.open(
                os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            self._held.add(lock)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return BUSY
            outcome = DONE
            for name, own in self._segments():
                result = self._replay_segment(name, deadline)
                if result == BUSY and not own:
                    continue  # a live process's: its own replayer sends it
                if result != DONE:
                    outcome = result
                    break
            gone = self._collect_drops()
            self._clean()
            if any(any(counts) for counts in self._report.values()) and not self._audit(gone):
                return outcome if outcome != DONE else UNANSWERED  # its counts: the next pass
            return outcome
        finally:
            with FORK_LOCK:
                self._held.discard(lock)
                os.close(lock)
            with contextlib.suppress(OSError):
                self.spool.measure()

    def _segments(self) -> list[tuple[str, bool]]:
        """Segments, and whether ours: ours in order, then the oldest first."""
        own: list[tuple[float, str]] = []
        others: list[tuple[float, str]] = []
        with os.scandir(self.spool.directory) as entries:
            for entry in entries:
                parsed = parse_name(entry.name)
                if parsed is not None and parsed[1] == self.spool.token:
                    own.append((parsed[2], entry.name))
                elif parsed is not None:
                    with contextlib.suppress(FileNotFoundError):
                        others.append((entry.stat().st_mtime, entry.name))
        return [(name, True) for _, name in sorted(own)] + [(n, False) for _, n in sorted(others)]

    def _replay_segment(self, name: str, deadline: float | None) -> str:
        path = os.path.join(self.spool.directory, name)
        checkpoint = path[: -len(SEGMENT)] + CHECKPOINT
        ours = self.spool.holds(name)  # before FORK_LOCK, which comes after the spool's
        with FORK_LOCK:
            if ours:  # under our writer's lock
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return DONE
            else:
                claimed = claim(path)
                if claimed is None:
                    return BUSY
                fd = claimed
            self._held.add(fd)
        parsed = parse_name(name)
        assert parsed is not None
        counts = self._report.setdefault(parsed[:2], [0] * len(_FIELDS))
        acked, until = read_checkpoint(checkpoint)
        try:
            while True:
                active, committed = self.spool.active()
                end = committed if active == name else os.fstat(fd).st_size
                if acked >= end:
                    break
                data = os.pread(fd, min(end - acked, _CHUNK), acked)
                result, acked = self._replay_chunk(
                    data,
                    acked,
                    until=until,
                    end=end,
                    checkpoint=checkpoint,
                    counts=counts,
                    deadline=deadline,
                )
                if result != DONE:
                    return result
            if active == name and not self.spool.release(name, acked):
                return DONE  # more came meanwhile: the next pass sends it
            for done in (path, checkpoint):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(done)
            return DONE
        finally:
            with FORK_LOCK:
                self._held.discard(fd)
                os.close(fd)

    def _replay_chunk(
        self,
        data: bytes,
        base: int,
        *,
        until: int,
        end: int,
        checkpoint: str,
        counts: list[int],
        deadline: float | None,
    ) -> tuple[str, int]:
        """Send the frames of ``data``, read at offset ``base`` of a segment of
        ``end`` bytes; return the outcome and the offset acknowledged."""
        acked = base
        items = frames(data)  # parsed a batch at a time: a segment at once holds the GIL
        while batch := list(itertools.islice(items, self.checkpoint_every)):
            write_checkpoint(checkpoint, acked, base + batch[-1][1])
            for start, stop, request in batch:
                if request is None and stop == len(data) and start and base + stop < end:
                    break  # the last frame, cut by the chunk: read it whole next
                if request is None and base + stop == end:
                    counts[_TORN] += 1  # its writer was killed while writing it
                    self.torn += 1
                elif request is None:
                    self._quarantine(checkpoint, base + start, data[start:stop], counts)
                elif self._stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                    write_checkpoint(checkpoint, acked, acked)
                    return STOPPED, acked
                else:
                    result = self._send_one(request, base + start < until, counts, deadline)
                    if result == "rejected":
                        self._quarantine(checkpoint, base + start, data[start:stop], counts)
                    elif result != DONE:
                        maybe_sent = stop - start if result == "ambiguous" else 0
                        write_checkpoint(checkpoint, acked, acked + maybe_sent)
                        return (REFUSED if result == REFUSED else UNANSWERED), acked
                acked = base + stop
        write_checkpoint(checkpoint, acked, acked)
        return DONE, acked

    def _send_one(
        self, request: bytes, resent: bool, counts: list[int], deadline: float | None
    ) -> str:
        """Send one record, paced: DONE, REFUSED, "rejected" (for good),
        UNANSWERED (not sent) or "ambiguous" (the daemon may have it)."""
        try:
            timestamp = protocol.timestamp_of(request)
            request, restamped = protocol.restamp(request, time.time())
        except ValueError:
            return "rejected"
        now = time.monotonic()
        if self._next < now - _CATCH_UP:  # after a pause: no burst to make up for it
            self._next = now
        self._wait(self._next - now, deadline)
        self._next += 1 / self.rate  # on a grid: a late wake-up is made up for
        try:
            reply = self._send(request)
        except _NOT_SENT:
            self.unanswered += 1
            return UNANSWERED
        except Exception:  # a timeout, a hang-up, a reply that is none
            self.unanswered += 1
            return "ambiguous"
        if isinstance(reply, protocol.Error):
            if QUEUE_FULL not in reply.message:
                return "rejected"
            self.refusals += 1
            return REFUSED
        for index, add in ((_REPLAYED, 1), (_RESTAMPED, restamped), (_DUPLICATES, resent)):
            counts[index] += add
        self.replayed += 1
        self.restamped += restamped
        self.duplicates += resent
        first, last = self._span or (timestamp, timestamp)
        self._span = (min(first, timestamp), max(last, timestamp))
        if reply.queue_percent_full > self.pause_above:
            self._wait(self.pause, deadline)  # the daemon uploads about once a second
        return DONE

    def _wait(self, seconds: float, deadline: float | None) -> None:
        if deadline is not None:
            seconds = min(seconds, deadline - time.monotonic())
        if seconds > 0:
            self._stop.wait(seconds)

    def _quarantine(self, checkpoint: str, offset: int, data: bytes, counts: list[int]) -> None:
        """Set corrupt bytes (or a request refused for good) aside, counted."""
        folder = os.path.join(self.spool.directory, QUARANTINE)
        os.makedirs(folder, 0o700, exist_ok=True)
        name = os.path.basename(checkpoint)[: -len(CHECKPOINT)]
        path = os.path.join(folder, f"{name}-{offset}.bad")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        counts[_QUARANTINED] += 1
        self.quarantined += 1

    def _collect_drops(self) -> dict[str, tuple[tuple[int, str], int]]:
        """Records dropped at the bound: this process's, and dead ones' (their
        files, read but left until the audit event that reports them is
        acknowledged: the path, whose they were, how many)."""
        gone: dict[str, tuple[tuple[int, str], int]] = {}
        own = self.spool.drops()
        if own:
            key = (os.getpid(), self.spool.token)
            self._report.setdefault(key, [0] * len(_FIELDS))[_DROPPED] = own
        for name in os.listdir(self.spool.directory):
            pid, _, token = name.rpartition(DROPS)[0].partition("-")
            if not pid.isdigit() or token == self.spool.token:
                continue  # not a drops file, or ours
            path = os.path.join(self.spool.directory, name)
            with FORK_LOCK:  # until it is closed: no child may inherit its lock
                fd = claim(path)
                if fd is None:
                    continue  # alive: its own replayer reports them
                try:
                    dropped, reported = _drops(os.pread(fd, 64, 0))
                finally:
                    os.close(fd)
            key = (int(pid), token)
            self._report.setdefault(key, [0] * len(_FIELDS))[_DROPPED] += dropped - reported
            gone[path] = (key, dropped - reported)
        return gone

    def _clean(self) -> None:
        """Remove debris: a segment that a killed writer had not named yet,
        and checkpoints of segments that are gone."""
        directory = self.spool.directory
        names = set(os.listdir(directory))
        for name in names:
            path = os.path.join(directory, name)
            if name.endswith(CHECKPOINT) and name[: -len(CHECKPOINT)] + SEGMENT not in names:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            elif name.startswith(".") and name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError), FORK_LOCK:
                    if time.time() - os.stat(path).st_mtime > STALE:
                        fd = claim(path)
                        if fd is not None:
                            os.unlink(path)
                            os.close(fd)

    def _audit(self, gone: dict[str, tuple[tuple[int, str], int]]) -> bool:
        """One event saying what was replayed, and whether the daemon
        acknowledged it; if not, its counts wait for the next pass (the dead
        processes' drops are read again from their files then)."""
        processes = [
            {"pid": pid, **dict(zip(_FIELDS, counts))}
            for (pid, _), counts in sorted(self._report.items())
            if any(counts)
        ]
        total = {field: sum(int(p[field]) for p in processes) for field in _FIELDS}
        first, last = (iso_ms(t) for t in self._span) if self._span else (None, None)
        event = {
            "type": "audit",
            "subtype": "cwlogger.spool",
            **total,
            "first": first,
            "last": last,
            "processes": processes,
            "directory": self.spool.directory,
            "pid": os.getpid(),
        }
        request, _ = protocol.encode_event(json.dumps(event), int(time.time() * 1000))
        try:
            reply = self._send(request)
        except Exception:
            reply = None
        if not isinstance(reply, protocol.Ok):
            for key, dropped in gone.values():  # still in their files
                self._report[key][_DROPPED] -= dropped
            return False
        for path in gone:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        own = self._report.get((os.getpid(), self.spool.token))
        if own is not None:
            self.spool.reported(own[_DROPPED])
        self.dropped += total["dropped"]
        self.audits += 1
        self._report, self._span = {}, None
        return True


def _drops(line: bytes) -> tuple[int, int]:
    fields = line.split()
    if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
        return int(fields[0]), int(fields[1])
    return 0, 0


# Every live replayer, told when the process forked.
_LIVE: weakref.WeakSet[Replayer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for replayer in list(_LIVE):
        replayer.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- for the command line ------------------------------------------------------


def replay(
    directory: str | os.PathLike[str],
    send: Callable[[bytes], protocol.Reply],
    *,
    deadline: float | None = None,
    rate: float = 2000.0,
    pause_above: float = 50.0,
) -> tuple[str, Replayer]:
    """Replay ``directory`` now, in this thread, paced and counted as a
    handler's replayer is (one pass, then its audit event); the outcome (see
    :meth:`Replayer.replay_now`) and the replayer, whose counters say what
    was done."""
    spool = Spool(directory)
    try:
        replayer = Replayer(spool, send, rate=rate, pause_above=pause_above, background=False)
        return replayer.replay_now(deadline), replayer
    finally:
        spool.close()


def describe(directory: str | os.PathLike[str]) -> Status:
    """What the spool ``directory`` holds: records not replayed yet, their
    owners (alive or gone), what is damaged, quarantined, dropped."""
    path = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(path):
        msg = f"not a spool directory: {path!r}"
        raise ValueError(msg)
    owners: dict[tuple[int, str], Owner] = {}
    dropped = 0
    for name in sorted(os.listdir(path)):
        parsed = parse_name(name)
        if name.endswith(DROPS):
            with contextlib.suppress(OSError), open(os.path.join(path, name), "rb") as file:
                counts = _drops(file.read(64))
                dropped += counts[0] - counts[1]
        if parsed is None:
            continue
        fd = claim(os.path.join(path, name))  # taken: nobody writes it any more
        if fd is not None:
            os.close(fd)
        acked, _ = read_checkpoint(os.path.join(path, name[: -len(SEGMENT)] + CHECKPOINT))
        try:
            with open(os.path.join(path, name), "rb") as file:
                file.seek(acked)
                data = file.read()
        except FileNotFoundError:  # replayed meanwhile
            continue
        owner = owners.setdefault(
            parsed[:2],
            {
                "pid": parsed[0],
                "alive": False,
                "segments": 0,
                "records": 0,
                "bytes": 0,
                "oldest": None,
                "damaged": 0,
            },
        )
        owner["alive"] = owner["alive"] or fd is None
        owner["segments"] += 1
        for _, end, request in frames(data):
            if request is None:
                owner["damaged"] += fd is not None or end < len(data)  # else: being written
                continue
            owner["records"] += 1
            owner["bytes"] += len(request)
            stamp, oldest = protocol.timestamp_of(request), owner["oldest"]
            owner["oldest"] = stamp if oldest is None else min(oldest, stamp)
    quarantine = os.path.join(path, QUARANTINE)
    stamps = [owner["oldest"] for owner in owners.values() if owner["oldest"] is not None]
    return {
        "directory": path,
        "bytes": directory_bytes(path),
        "records": sum(owner["records"] for owner in owners.values()),
        "oldest": min(stamps) if stamps else None,
        "owners": list(owners.values()),
        "quarantined": len(os.listdir(quarantine)) if os.path.isdir(quarantine) else 0,
        "dropped": dropped,
    }
