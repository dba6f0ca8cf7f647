"""kill -9 against the spool: of writers at random instants, and of the replayer.

Writers are forked children of this process, appending records of 200 B or
60 to 262 KB, at random, to one spool directory; after each append that
returned True a writer notes its sequence number in a shared page (``mmap``:
it survives the kill).  Each is killed at a random instant.  Then a reader
written from the frame format (not the package's) checks that every record
whose append had returned is there, whole, and that what is torn is at most
one frame per writer, at the tail of its own last segment; the package's
``describe`` must count exactly those, and (every tenth trial) its replayer
must deliver every whole record and count the torn ones.

The replayer is a forked child sending a spool of 200 B records to the
draining daemon (``spool_daemon.py``, a process of its own), killed at a
random instant, again and again; at the end every record is in the daemon's
event file, and each kill caused at most one checkpoint of duplicates.
"""

from __future__ import annotations

import mmap
import os
import random
import shutil
import signal
import struct
import tempfile
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path

from spool_daemon import Running

from globus.cwlogger import protocol
from globus.cwlogger._connect import round_trip
from globus.cwlogger._replay import Replayer, describe
from globus.cwlogger._spool import Spool

HEADER = struct.Struct(">4sII")
MAGIC = b"\x00CWs"
CHECKPOINT_EVERY = 100
PREFIX = len('{"message": "')


def parse(data: bytes) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Whole frames' requests, and (start, end) of the bytes that are not."""
    whole: list[bytes] = []
    bad: list[tuple[int, int]] = []
    at = 0
    while at < len(data):
        if len(data) - at >= HEADER.size:
            magic, length, crc = HEADER.unpack_from(data, at)
            end = at + HEADER.size + length
            body = data[at + HEADER.size : end]
            if magic == MAGIC and end <= len(data) and body and zlib.crc32(body) == crc:
                whole.append(body)
                at = end
                continue
        following = data.find(MAGIC, at + 1)
        end = len(data) if following == -1 else following
        bad.append((at, end))
        at = end
    return whole, bad


def record_id(text: str) -> str:
    """``"[writer:sequence]"`` at the head of a message."""
    return text[: text.index("]") + 1]


def replay_all(
    directory: str, address: str, rate: float = 1e6, checkpoint_every: int = CHECKPOINT_EVERY
) -> Replayer:
    spool = Spool(directory)
    try:
        send = lambda r: round_trip([address], r, 5.0)  # noqa: E731
        replayer = Replayer(
            spool, send, rate=rate, checkpoint_every=checkpoint_every, background=False
        )
        replayer.replay_now()
        return replayer
    finally:
        spool.close()


def fork(work: object, *args: object) -> int:
    """A child running ``work(*args)``, then gone."""
    pid = os.fork()
    if pid == 0:
        try:
            work(*args)  # type: ignore[operator]
        finally:
            os._exit(0)
    return pid


def writer(directory: str, number: int, page: mmap.mmap) -> None:
    """Append records until killed."""
    spool = Spool(directory)
    rng = random.Random(os.getpid())
    filler = b"x" * 262_000
    for sequence in range(1, 10**9):
        size = 200 if rng.random() < 0.5 else rng.randint(60_000, 262_000)
        head = b"[%d:%d] " % (number, sequence)
        # The bytes encode_event makes, built faster so that more kills land
        # inside the write rather than in the encoding.
        request = b'{"message": "%s%s", "timestamp": %d}\n' % (
            head,
            filler[: size - len(head)],
            time.time_ns() // 1_000_000,
        )
        if spool.append(request):
            struct.pack_into("q", page, number * 8, sequence)


def kill_writers(trials: int, writers: int = 2) -> dict[str, object]:
    lost = torn = elsewhere = miscounted = replay_lost = records = replayed_trials = 0
    page = mmap.mmap(-1, 8 * writers)
    work = Path(tempfile.mkdtemp(prefix="spool-kill-"))
    daemon = Running("\0spool-bench-" + uuid.uuid4().hex, work / "events.jsonl", "--head", "40")
    daemon.start()
    try:
        for trial in range(trials):
            directory = str(work / f"spool-{trial}")
            struct.pack_into(f"{writers}q", page, 0, *([0] * writers))
            children = [fork(writer, directory, n, page) for n in range(writers)]
            time.sleep(0.01)
            for pid in children:  # each at an instant of its own
                time.sleep(random.uniform(0, 0.03))
                os.kill(pid, signal.SIGKILL)
            for pid in children:
                os.waitpid(pid, 0)
            returned = struct.unpack_from(f"{writers}q", page, 0)
            found: set[str] = set()
            names = sorted(n for n in os.listdir(directory) if n.endswith(".seg"))
            last = {n.split("-")[0]: n for n in names}  # each writer's last segment
            torn_here = elsewhere_here = 0
            for name in names:
                data = Path(directory, name).read_bytes()
                whole, bad = parse(data)
                found.update(record_id(r[PREFIX : PREFIX + 40].decode()) for r in whole)
                tail = bad == [(bad[0][0], len(data))] if bad else False
                torn_here += tail and name == last[name.split("-")[0]]
                elsewhere_here += len(bad) - (tail and name == last[name.split("-")[0]])
            torn, elsewhere = torn + torn_here, elsewhere + elsewhere_here
            records += len(found)
            lost += sum(
                f"[{n}:{s}]" not in found for n in range(writers) for s in range(1, returned[n] + 1)
            )
            damaged = sum(owner["damaged"] for owner in describe(directory)["owners"])
            miscounted += damaged != torn_here + elsewhere_here
            if trial % 10 == 0:
                replayed_trials += 1
                daemon.messages()
                replayer = replay_all(directory, daemon.address)
                time.sleep(0.05)
                delivered = {record_id(m) for _, m in daemon.messages() if m.startswith("[")}
                replay_lost += len(found - delivered)
                miscounted += replayer.torn != torn_here
            shutil.rmtree(directory)
    finally:
        daemon.stop()
        shutil.rmtree(work)
    return {
        "trials": trials,
        "writers": writers,
        "records": records,
        "lost": lost,
        "torn": torn,
        "torn elsewhere": elsewhere,
        "miscounted": miscounted,
        "replayed trials": replayed_trials,
        "lost in replay": replay_lost,
    }


def spool_records(directory: str, count: int) -> None:
    """``count`` records of 200 B, left by a process that is gone."""

    def write() -> None:
        spool = Spool(directory)
        for i in range(count):
            request, _ = protocol.encode_event(f"[{i}] " + "r" * 190, int(time.time() * 1000))
            spool.append(request)
        spool.close()

    os.waitpid(fork(write), 0)


def kill_replayer(trials: int, count: int = 120_000) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="spool-replayer-"))
    directory = str(work / "spool")
    spool_records(directory, count)
    daemon = Running("\0spool-bench-" + uuid.uuid4().hex, work / "events.jsonl", "--head", "40")
    daemon.start()
    seen: Counter[str] = Counter()
    worst = 0
    try:
        for _ in range(trials):
            pid = fork(replay_all, directory, daemon.address, 10_000.0, CHECKPOINT_EVERY)
            time.sleep(random.uniform(0.01, 0.12))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            time.sleep(0.01)  # for the daemon to write the event it was given last
            added = Counter(record_id(m) for _, m in daemon.messages() if m.startswith("["))
            # Resent after the previous kill: records the daemon had already.
            worst = max(worst, sum(n if seen[m] else n - 1 for m, n in added.items()))
            seen += added
        replay_all(directory, daemon.address)
        time.sleep(0.05)
        seen += Counter(record_id(m) for _, m in daemon.messages() if m.startswith("["))
    finally:
        daemon.stop()
        shutil.rmtree(work)
    return {
        "trials": trials,
        "records": count,
        "lost": sum(not seen[f"[{i}]"] for i in range(count)),
        "duplicates": sum(seen.values()) - len(seen),
        "worst kill": worst,
        "checkpoint": CHECKPOINT_EVERY,
    }
