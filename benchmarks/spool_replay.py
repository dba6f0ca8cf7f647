"""Replay beside live records: the spool's replayer and a service's own
logging share the daemon, and the live records must not suffer.

One process plays the service: a thread sends a live record every
``PACE`` seconds (a round trip, as the handler makes one, timed) and wakes
the replayer on each acknowledgement, as the handler does.  First without
anything to replay (the baseline), then while the replayer sends
``count`` records that a process now gone spooled, then without again; the
two baseline windows are pooled.  The daemon (``spool_daemon.py``) runs in
a process of its own and drains its queue every second, as the real one.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from spool_daemon import Running
from spool_kill import record_id, spool_records

from globus.cwlogger import protocol
from globus.cwlogger._connect import round_trip
from globus.cwlogger._replay import Replayer
from globus.cwlogger._spool import Spool

PACE = 0.002  # seconds between two live records
BASELINE = 8.0  # seconds of live records without replay, before and after
TIMEOUT = 1.0  # the handler's default timeout
LIVE = "live " + "l" * 195


class Live(threading.Thread):
    """Sends live records until stopped; times each round trip."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.replayer: Replayer | None = None
        self.stopping = threading.Event()
        self.phase = "before"
        self.times: dict[str, list[float]] = {"before": [], "during": [], "after": []}
        self.refused: dict[str, int] = {"before": 0, "during": 0, "after": 0}

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            request, _ = protocol.encode_event(LIVE, int(time.time() * 1000))
            phase, started = self.phase, time.perf_counter()
            try:
                reply = round_trip([self.address], request, TIMEOUT)
            except OSError:
                reply = protocol.Error("no reply")
            self.times[phase].append(time.perf_counter() - started)
            if isinstance(reply, protocol.Ok):
                if self.replayer is not None:
                    self.replayer.wake()
            else:
                self.refused[phase] += 1
            next_at += PACE
            self.stopping.wait(max(0.0, next_at - time.monotonic()))


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else 0.0


def replay_beside_live(count: int = 100_000) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="spool-replay-"))
    directory = str(work / "spool")
    spool_records(directory, count)
    daemon = Running("\0spool-bench-" + uuid.uuid4().hex, work / "events.jsonl", "--head", "40")
    daemon.start()
    live = Live(daemon.address)
    spool = Spool(directory)
    try:
        live.start()
        time.sleep(BASELINE)
        live.phase = "during"
        started = time.monotonic()
        replayer = Replayer(spool, lambda r: round_trip([daemon.address], r, TIMEOUT))
        live.replayer = replayer
        while replayer.replayed < count and time.monotonic() - started < 120:
            time.sleep(0.05)
        took = time.monotonic() - started
        live.phase = "after"
        time.sleep(BASELINE)
        live.stopping.set()
        live.join()
        replayer.close(time.monotonic() + 5)
        time.sleep(0.1)
        delivered = {record_id(m) for _, m in daemon.messages() if m.startswith("[")}
    finally:
        live.stopping.set()
        spool.close()
        daemon.stop()
        shutil.rmtree(work)
    baseline = live.times["before"] + live.times["after"]
    during = live.times["during"]
    return {
        "records": count,
        "replayed": replayer.replayed,
        "lost": sum(f"[{i}]" not in delivered for i in range(count)),
        "seconds": took,
        "live": len(baseline) + len(during),
        "p50 base": quantile(baseline, 0.5),
        "p50 replay": quantile(during, 0.5),
        "p99 base": quantile(baseline, 0.99),
        "p99 replay": quantile(during, 0.99),
        "refused base": live.refused["before"] + live.refused["after"],
        "refused replay": live.refused["during"],
        "pauses": replayer.refusals,
    }
