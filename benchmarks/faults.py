"""The fault matrix: does any record get lost, does any call block too long,
and how soon does delivery resume once the daemon is back?

    PYTHONPATH=src python benchmarks/faults.py [--json OUT] [--only FAULT,...]

Each row runs an independent daemon (``faultd.py``) in its own process, so
it can really be killed, stopped and restarted, and logs a steady stream of
records (one every 5 ms per thread or process) before, during and after one
fault.  Every record carries an id; the daemon writes each event it queued to
a file, and the fallback is a counting handler, so each record is matched:

- ``ack``: records the daemon queued (from its file, not from the handler);
- ``fallback``: records the handler handed to its fallback;
- ``dup``: both (the daemon answered after the timeout, or died after
  queuing and before replying): not lost, but CloudWatch and the fallback
  both have it;
- ``lost``: emitted, but neither acknowledged nor in the fallback;
- ``twice``: records the daemon queued more than once;
- ``slowest``: the slowest single ``logger.info`` call;
- ``resume``: seconds from the daemon's return until every thread or process
  had a record acknowledged again (a record it did not also put in the
  fallback);
- ``hangups``: clients that hung up before the daemon's reply (the real
  daemon logs a traceback for each).

Exit status 1 when a record is lost or queued twice, a call took longer than
the timeout plus 10%, delivery resumed more than a second after the daemon
came back, or the daemon was handed an empty message.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from globus.cwlogger import GlobusSocketHandler

HERE = Path(__file__).resolve().parent
FAULTD = HERE / "faultd.py"
DEFAULT_JSON = HERE / "results" / "faults.json"

TIMEOUT = 0.25  # the handler's timeout: the most one logging call may block
CALL_LIMIT = 1.10  # ... times this, or the row fails
RESUME_LIMIT = 1.0  # seconds after the daemon is back
PACE = 0.005  # seconds between two records of one thread or process

MAX_MESSAGE_BYTES = 262118
RID_SPAN = 1_000_000  # record id = worker * RID_SPAN + sequence number
RID = re.compile(r"\[(\d+)\] ")
# An empty message has no room for the record id, so the id travels in the
# record's creation time: timestamp = STAMP_BASE_MS + id.
STAMP_BASE_MS = 1_700_000_000_000
SUMMARY = re.compile(r'^\{"type": "audit", "subtype": "cwlogger\.undelivered"')
SENTINEL = "[sentinel]"
HEAD = 300  # characters of each event the daemon keeps in its file

BIG = "x" * 300_000


# -- records ---------------------------------------------------------------


def log_record(logger: logging.Logger, kind: str, rid: int) -> None:
    """Log one record of ``kind``; its id is in its message and ``extra``."""
    extra = {"rid": rid}
    if kind == "oversized":
        logger.info("[%d] oversized %s", rid, BIG, extra=extra)
    elif kind == "surrogate":
        logger.info("[%d] lone surrogate \udc80 here", rid, extra=extra)
    elif kind == "empty":
        logger.info("", extra={"rid": rid, "stamp": True})
    elif kind == "multiline":
        logger.info('[%d] line one\nline two\t"quoted" Grüße 日本', rid, extra=extra)
    elif kind == "badformat":  # the format string does not fit its arguments
        logger.info("[%d] %d", rid, "not a number", extra=extra)
    else:
        logger.info("[%d] record", rid, extra=extra)


def expected_message(kind: str, rid: int) -> str | None:
    """The event the daemon should hold for a record (None: not checked here)."""
    if kind == "surrogate":
        return f"[{rid}] lone surrogate \ufffd here"
    if kind == "multiline":
        return f'[{rid}] line one\nline two\t"quoted" Grüße 日本'
    if kind == "normal":
        return f"[{rid}] record"
    return None


MESSAGE_KINDS = ("oversized", "surrogate", "empty", "multiline")


class CountingFallback(logging.Handler):
    """The fallback: remembers the id of every record it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.rids: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.rids.append(int(getattr(record, "rid", -1)))


class StampEmpty(logging.Filter):
    """Put the id of an empty record in its creation time (see STAMP_BASE_MS)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "stamp", False):
            rid = int(getattr(record, "rid", 0))
            record.created = (STAMP_BASE_MS + rid + 0.5) / 1000
        return True


# -- the daemon ------------------------------------------------------------


class Daemon:
    """faultd.py in a process of its own, restartable on the same address."""

    def __init__(self, address: str, workdir: Path, args: Sequence[str]) -> None:
        self.address = address
        self.events = workdir / "events.jsonl"
        self.journal = workdir / "journal.jsonl"
        self.log = workdir / "faultd.log"
        self.args = list(args)
        self.process: subprocess.Popen[str] | None = None
        self.started: list[subprocess.Popen[str]] = []

    def start(self) -> float:
        """Start it; return the (monotonic) time it began listening."""
        shown = "@" + self.address[1:] if self.address.startswith("\0") else self.address
        with open(self.log, "a", encoding="utf-8") as log:
            process = subprocess.Popen(
                [
                    *(sys.executable, str(FAULTD), "--address", shown, "--head", str(HEAD)),
                    *("--events", str(self.events), "--journal", str(self.journal)),
                    *("--parent", str(os.getpid())),
                    *self.args,
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.started.append(process)
        self.process = process
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if len(line) != 3 or line[0] != "ready":
            msg = f"faultd did not start: {line!r}; see {self.log}"
            raise RuntimeError(msg)
        return float(line[2])

    def signal(self, signum: int) -> float:
        """Send ``signum``; return the time just before it was sent."""
        assert self.process is not None
        now = time.monotonic()
        self.process.send_signal(signum)
        return now

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        """Stop every process it started: politely first, if still running."""
        for process in self.started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                    process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()


def request(address: str, message: str, timeout: float = 5.0) -> bytes:
    """One request of our own, e.g. a sentinel: once the daemon answered it,
    it has served every connection queued before it."""
    body = json.dumps({"message": message, "timestamp": int(time.time() * 1000)})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(body.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply


def fill_backlog(address: str) -> int:
    """Connect (and hang up) until the listen backlog is full.  A connection
    the daemon has not accepted keeps its place even after the client closes."""
    for count in range(100_000):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(address)
        except BlockingIOError:
            return count
        finally:
            sock.close()
    msg = "the backlog never filled"
    raise RuntimeError(msg)


# -- faults ----------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One fault: what the daemon does before, during and after it."""

    name: str
    #: What a README reader calls this state of the daemon.
    state: str
    #: Extra faultd arguments (e.g. the mode SIGUSR2 turns on); "{2t}"
    #: stands for twice the handler's timeout.
    faultd: tuple[str, ...] = ()
    before: float = 0.5
    during: float = 1.5
    after: float = 1.0
    #: The daemon runs from the start (not for "no daemon at all").
    running: bool = True
    #: Listen on a filesystem path instead of an abstract name.
    path: bool = False
    #: Kinds of record to log during the fault, in turn (default: plain ones).
    messages: tuple[str, ...] = ()

    def begin(self, daemon: Daemon, notes: list[str]) -> None:
        """Make the fault happen."""

    def end(self, daemon: Daemon, notes: list[str]) -> float | None:
        """End it; return the time the daemon was back (None: it never left)."""
        return None


@dataclass(frozen=True)
class Absent(Fault):
    def end(self, daemon: Daemon, notes: list[str]) -> float | None:
        return daemon.start()


@dataclass(frozen=True)
class KillRestart(Fault):
    def begin(self, daemon: Daemon, notes: list[str]) -> None:
        daemon.kill()
        if self.path:
            left = os.path.exists(daemon.address)
            notes.append("socket file left behind" if left else "socket file NOT left behind")

    def end(self, daemon: Daemon, notes: list[str]) -> float | None:
        return daemon.start()


@dataclass(frozen=True)
class StopResume(Fault):
    def begin(self, daemon: Daemon, notes: list[str]) -> None:
        daemon.signal(signal.SIGSTOP)

    def end(self, daemon: Daemon, notes: list[str]) -> float | None:
        return daemon.signal(signal.SIGCONT)


@dataclass(frozen=True)
class ModeSwitch(Fault):
    """faultd's ``--fault`` mode between SIGUSR2 and SIGUSR1."""

    def begin(self, daemon: Daemon, notes: list[str]) -> None:
        daemon.signal(signal.SIGUSR2)

    def end(self, daemon: Daemon, notes: list[str]) -> float | None:
        return daemon.signal(signal.SIGUSR1)


@dataclass(frozen=True)
class BacklogFull(ModeSwitch):
    def begin(self, daemon: Daemon, notes: list[str]) -> None:
        super().begin(daemon, notes)
        time.sleep(0.02)  # let it finish the connection it is serving
        notes.append(f"backlog filled with {fill_backlog(daemon.address)} connections")


FAULTS: tuple[Fault, ...] = (
    Absent("no daemon", "not running at all", before=0.0, running=False),
    KillRestart("killed+restarted", "killed (SIGKILL), then restarted"),
    StopResume("stopped+resumed", "stopped (SIGSTOP), then resumed", during=2.5),
    ModeSwitch(
        "error replies", "refusing 1 in 3 ('too many events')", ("--fault", "error", "--every", "3")
    ),
    ModeSwitch(
        "slow replies",
        "answering after 2x the timeout",
        ("--fault", "delay", "--delay", "{2t}"),
        during=2.0,
    ),
    ModeSwitch("closes", "closing without a reply", ("--fault", "close")),
    BacklogFull(
        "never accepts", "not accepting (backlog full)", ("--fault", "noaccept"), during=2.5
    ),
    Fault("bad messages", "sent oversized/surrogate/empty records", messages=MESSAGE_KINDS),
    KillRestart("stale socket file", "dead, its socket file left behind", path=True),
)


#: Not part of the matrix; run with --extra.  Each shows a weakness found
#: while building the matrix.
EXTRA_FAULTS: tuple[Fault, ...] = (
    ModeSwitch(
        "refusing 1 in 2",
        "refusing 1 in 2 ('too many events')",
        ("--fault", "error", "--every", "2"),
    ),
    StopResume("stopped 8 s", "stopped (SIGSTOP) for 8 s, then resumed", during=8.0),
    Fault("format errors", "sent records whose format fails", messages=("badformat", "normal")),
)


# -- the load --------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When the stream starts, the fault begins and ends, the stream stops."""

    start: float
    fault: float
    back: float
    stop: float

    @classmethod
    def for_fault(cls, fault: Fault, lead: float = 0.2) -> Schedule:
        start = time.monotonic() + lead
        return cls(
            start,
            start + fault.before,
            start + fault.before + fault.during,
            start + fault.before + fault.during + fault.after,
        )


@dataclass
class WorkerReport:
    """What one thread or process logged, and how long its calls took."""

    worker: int
    emitted: int = 0
    #: (record id, kind) for every record that is not a plain one.
    special: list[tuple[int, str]] = field(default_factory=list)
    slowest: float = 0.0
    #: Calls that blocked for more than half the timeout.
    blocked: int = 0
    #: The slowest of the other calls.
    quick: float = 0.0
    #: Sequence numbers of the records logged during the fault: [first, end).
    during: tuple[int, int] = (0, 0)
    #: (seconds after the fault began, seconds it took) of calls over the limit.
    over_limit: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class HandlerReport:
    """One handler's own counters and what reached its fallback."""

    delivered: int = 0
    undelivered: int = 0
    truncated: int = 0
    fallback: list[int] = field(default_factory=list)
    stderr: str = ""


@dataclass(frozen=True)
class Load:
    name: str
    threads: int = 0
    processes: int = 0


LOADS = (Load("1 thread", threads=1), Load("8 threads", threads=8), Load("4 procs", processes=4))


@dataclass
class Run:
    """Everything one row needs: the fault, the load, the handler and where
    its output goes, the daemon, and the timetable."""

    fault: Fault
    load: Load
    timeout: float
    daemon: Daemon
    handler: GlobusSocketHandler
    fallback: CountingFallback
    logger: logging.Logger
    stderr: io.StringIO
    schedule: Schedule
    notes: list[str] = field(default_factory=list)
    children: list[int] = field(default_factory=list)

    @property
    def limit(self) -> float:
        return self.timeout * CALL_LIMIT

    def drive(self) -> float | None:
        """Make the fault happen on time; return when the daemon was back."""
        sleep_until(self.schedule.fault)
        self.fault.begin(self.daemon, self.notes)
        sleep_until(self.schedule.back)
        return self.fault.end(self.daemon, self.notes)

    def handler_report(self) -> HandlerReport:
        handler = self.handler
        return HandlerReport(
            handler.delivered,
            handler.undelivered,
            handler.truncated,
            list(self.fallback.rids),
            self.stderr.getvalue(),
        )


def sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def work(run: Run, worker: int) -> WorkerReport:
    """Log one record every PACE seconds from start to stop; time each call."""
    report = WorkerReport(worker)
    schedule = run.schedule
    due = schedule.start
    while True:
        sleep_until(due)
        now = time.monotonic()
        if now >= schedule.stop:
            return report
        rid = worker * RID_SPAN + report.emitted
        kind = "normal"
        if schedule.fault <= now < schedule.back:
            first = report.during[0] if report.during[1] else report.emitted
            report.during = (first, report.emitted + 1)
            if run.fault.messages:
                kind = run.fault.messages[report.emitted % len(run.fault.messages)]
                report.special.append((rid, kind))
        began = time.perf_counter()
        log_record(run.logger, kind, rid)
        took = time.perf_counter() - began
        report.emitted += 1
        report.slowest = max(report.slowest, took)
        if took > run.timeout / 2:
            report.blocked += 1
        else:
            report.quick = max(report.quick, took)
        if took > run.limit:
            report.over_limit.append((round(now - schedule.fault, 3), round(took, 3)))
        # A steady pace: after a slow call, carry on rather than catch up.
        due = max(due + PACE, time.monotonic())


def run_threads(run: Run) -> tuple[list[WorkerReport], list[HandlerReport], float | None]:
    """Threads share the handler; this thread drives the fault."""
    reports: list[WorkerReport] = []
    errors: list[BaseException] = []

    def target(worker: int) -> None:
        try:
            reports.append(work(run, worker))
        except BaseException as error:
            errors.append(error)

    pool = [threading.Thread(target=target, args=(n,)) for n in range(1, run.load.threads + 1)]
    for thread in pool:
        thread.start()
    try:
        back = run.drive()
    finally:
        for thread in pool:
            thread.join()
    if errors:
        raise errors[0]
    return reports, [], back


def run_forked(run: Run) -> tuple[list[WorkerReport], list[HandlerReport], float | None]:
    """Fork children that log through the handler this process built (after
    one record of its own, so they inherit a handler that was used); each
    reports to this one through a pipe."""
    log_record(run.logger, "normal", 0)  # worker 0 is this process
    workers = [WorkerReport(0, emitted=1)]
    handlers: list[HandlerReport] = []
    pipes: list[int] = []
    for worker in range(1, run.load.processes + 1):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _child(run, worker, write_end)
        os.close(write_end)
        run.children.append(pid)
        pipes.append(read_end)
    back = run.drive()
    for pid, read_end in list(zip(run.children, pipes)):
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        run.children.remove(pid)  # reaped: never signal its pid again
        if not data or os.waitstatus_to_exitcode(status) != 0:
            msg = f"child {pid} failed (status {status}): {data.decode(errors='replace')}"
            raise RuntimeError(msg)
        payload = json.loads(data)
        report = WorkerReport(**payload["worker"])
        report.special = [(rid, kind) for rid, kind in report.special]
        report.over_limit = [(at, took) for at, took in report.over_limit]
        report.during = (report.during[0], report.during[1])
        workers.append(report)
        handlers.append(HandlerReport(**payload["handler"]))
    return workers, handlers, back


def _child(run: Run, worker: int, write_end: int) -> None:
    """In a forked child: log, close the handler, report, and leave."""
    code = 1
    try:
        # Count only what this process does with its copy of the handler.
        handler = run.handler
        before = (handler.delivered, handler.undelivered, handler.truncated)
        run.fallback.rids.clear()
        run.stderr.seek(0)
        run.stderr.truncate()
        report = work(run, worker)
        handler.close()
        own = run.handler_report()
        own.delivered -= before[0]
        own.undelivered -= before[1]
        own.truncated -= before[2]
        payload = {"worker": asdict(report), "handler": asdict(own)}
        with os.fdopen(write_end, "w") as pipe:
            json.dump(payload, pipe)
        code = 0
    except BaseException:
        with contextlib.suppress(Exception), os.fdopen(write_end, "w", closefd=False) as pipe:
            pipe.write(traceback.format_exc())
    finally:
        os._exit(code)


# -- one row ---------------------------------------------------------------


@dataclass
class Row:
    """One fault under one load, measured."""

    fault: str
    load: str
    emitted: int = 0
    acknowledged: int = 0
    fallback: int = 0
    dup: int = 0
    lost: int = 0
    twice: int = 0
    slowest: float = 0.0
    blocked: int = 0
    quick: float = 0.0
    #: The daemon left and came back, so ``resume`` was measured.
    returned: bool = False
    resume: float | None = None
    #: Records logged during the fault, and where they ended up.
    during: int = 0
    during_daemon: int = 0
    during_fallback: int = 0
    during_both: int = 0
    hangups: int = 0
    handler_delivered: int = 0
    handler_undelivered: int = 0
    truncated: int = 0
    summaries: int = 0
    summarised: int = 0
    refused: int = 0
    noreply: int = 0
    wedged: int = 0
    altered: int = 0
    warnings: int = 0
    logging_errors: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@contextlib.contextmanager
def captured_stderr() -> Iterator[io.StringIO]:
    """The handler's own warnings (and logging's error reports) go to
    sys.stderr: keep them out of the table, and count them."""
    saved, buffer = sys.stderr, io.StringIO()
    sys.stderr = buffer
    try:
        yield buffer
    finally:
        sys.stderr = saved


def run_row(fault: Fault, load: Load, timeout: float, keep: Path | None = None) -> Row:
    """Run one fault under one load, clean up every process, measure.

    The daemon's files go to a temporary directory, or under ``keep``."""
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        if keep is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cwl-faults-")))
        else:
            workdir = keep / f"{fault.name}-{load.name}".replace(" ", "_").replace("+", "_")
            workdir.mkdir(parents=True, exist_ok=True)
        if fault.path:
            address = f"/tmp/globus-cwlogger-faults-{uuid.uuid4().hex}.sock"
            stack.callback(_unlink, address)
        else:
            address = "\0globus-cwlogger-faults-" + uuid.uuid4().hex
        args = [arg.replace("{2t}", str(2 * timeout)) for arg in fault.faultd]
        daemon = Daemon(address, workdir, args)
        stack.callback(daemon.stop)
        if fault.running:
            daemon.start()

        fallback = CountingFallback()
        handler = GlobusSocketHandler(address, timeout=timeout, fallback=fallback)
        handler.setFormatter(logging.Formatter("%(message)s"))
        stack.callback(handler.close)
        logger = logging.getLogger(f"faults.{uuid.uuid4().hex}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addFilter(StampEmpty())
        logger.addHandler(handler)
        stderr = stack.enter_context(captured_stderr())
        run = Run(
            fault,
            load,
            timeout,
            daemon,
            handler,
            fallback,
            logger,
            stderr,
            Schedule.for_fault(fault),
        )
        stack.callback(_reap, run.children)

        go = run_forked if load.processes else run_threads
        workers, handlers, back = go(run)
        handler.close()
        handlers.append(run.handler_report())
        try:
            request(address, SENTINEL)  # once answered, all queued before it are served
        except OSError as error:
            run.notes.append(f"sentinel failed: {error!r}")
        daemon.stop()
        row = analyse(run, back, workers, handlers)
    row.seconds = round(time.monotonic() - began, 2)
    return row


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _reap(children: list[int]) -> None:
    for pid in children:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.endswith("\n")]


@dataclass
class Tally:
    """The daemon's events file, matched to record ids."""

    acked: Counter[int] = field(default_factory=Counter)
    #: worker -> seconds from the daemon's return to its first record that
    #: was acknowledged and not also handed to the fallback.
    resumed: dict[int, float] = field(default_factory=dict)
    summaries: int = 0
    summarised: int = 0
    altered: int = 0


def tally(run: Run, back: float | None, kinds: dict[int, str], fallback: set[int]) -> Tally:
    result = Tally()
    for event in read_jsonl(run.daemon.events):
        message, stamp = event["message"], event["timestamp"]
        match = RID.match(message)
        if match:
            rid = int(match.group(1))
        elif message == SENTINEL:
            continue
        elif SUMMARY.match(message):
            result.summaries += 1
            result.summarised += int(json.loads(message)["undelivered"])
            continue
        elif isinstance(stamp, int) and 0 <= stamp - STAMP_BASE_MS < 100 * RID_SPAN:
            rid = stamp - STAMP_BASE_MS  # an empty record, sent as a placeholder
        else:
            run.notes.append(f"unknown event: {message[:60]!r}")
            continue
        result.acked[rid] += 1
        kind = kinds.get(rid, "normal")
        want = expected_message(kind, rid)
        if (want is not None and message != want) or event["bytes"] > MAX_MESSAGE_BYTES:
            result.altered += 1
            if result.altered == 1:
                run.notes.append(f"{kind} record arrived as {message[:60]!r}")
        if back is not None and event["t"] >= back and rid not in fallback:
            result.resumed.setdefault(rid // RID_SPAN, event["t"] - back)
    return result


def analyse(
    run: Run, back: float | None, workers: list[WorkerReport], handlers: list[HandlerReport]
) -> Row:
    kinds = {rid: kind for w in workers for rid, kind in w.special}
    emitted = {w.worker * RID_SPAN + n for w in workers for n in range(w.emitted)}
    fallback_list = [rid for h in handlers for rid in h.fallback]
    fallback = set(fallback_list)
    events = tally(run, back, kinds, fallback)
    acked = set(events.acked)
    journal = Counter(entry["kind"] for entry in read_jsonl(run.daemon.journal))
    stderr = "".join(h.stderr for h in handlers)
    row = Row(
        fault=run.fault.name,
        load=run.load.name,
        emitted=len(emitted),
        acknowledged=len(acked),
        fallback=len(fallback),
        dup=len(acked & fallback),
        lost=len(emitted - acked - fallback),
        twice=sum(count - 1 for count in events.acked.values() if count > 1),
        slowest=max(w.slowest for w in workers),
        blocked=sum(w.blocked for w in workers),
        quick=max(w.quick for w in workers),
        returned=back is not None,
        hangups=journal["hangup"],
        handler_delivered=sum(h.delivered for h in handlers),
        handler_undelivered=sum(h.undelivered for h in handlers),
        truncated=sum(h.truncated for h in handlers),
        summaries=events.summaries,
        summarised=events.summarised,
        refused=journal["refused"],
        noreply=journal["noreply"],
        wedged=journal["wedged"],
        altered=events.altered,
        warnings=stderr.count("globus.cwlogger:"),
        logging_errors=stderr.count("--- Logging error ---"),
        notes=run.notes,
    )
    during = {w.worker * RID_SPAN + n for w in workers for n in range(*w.during)}
    row.during = len(during)
    row.during_both = len(during & acked & fallback)
    row.during_daemon = len(during & acked) - row.during_both
    row.during_fallback = len(during & fallback) - row.during_both
    if back is not None:
        producers = [w.worker for w in workers if w.worker != 0]
        if all(w in events.resumed for w in producers):
            row.resume = max(events.resumed[w] for w in producers)

    if acked - emitted:
        row.notes.append(f"{len(acked - emitted)} acknowledged records were never emitted")
    if len(fallback_list) != len(fallback):
        row.notes.append(f"{len(fallback_list) - len(fallback)} records in the fallback twice")
    genuine = len(acked - fallback)
    if row.handler_delivered != genuine:
        row.notes.append(
            f"handler counted delivered={row.handler_delivered}; the daemon has {genuine} "
            f"records that are not also in the fallback"
        )
    if row.handler_undelivered != len(fallback_list):
        row.notes.append(
            f"handler counted undelivered={row.handler_undelivered}; "
            f"the fallback got {len(fallback_list)}"
        )
    if row.summarised != len(fallback_list):
        row.notes.append(
            f"summary events report {row.summarised} undelivered records in {row.summaries} "
            f"events; the fallback got {len(fallback_list)}"
        )
    if row.logging_errors:
        row.notes.append(f"logging errors on stderr: {stderr[-300:]!r}")
    over = sorted((call for w in workers for call in w.over_limit), key=lambda c: -c[1])
    if over:
        shown = ", ".join(f"{took:.3f} s at {at:+.2f} s" for at, took in over[:4])
        row.notes.append(
            f"{len(over)} calls over the limit; slowest (start, from the fault's start): {shown}"
        )
    judge(row, back, len(over), run.limit)
    return row


def judge(row: Row, back: float | None, over_limit: int, limit: float) -> None:
    """Record why the row fails, if it does."""
    if row.lost:
        row.failures.append(f"{row.lost} records lost")
    if row.twice:
        row.failures.append(f"{row.twice} records queued twice")
    if row.slowest > limit:
        row.failures.append(f"{over_limit} calls over {limit:.3f} s (slowest {row.slowest:.3f} s)")
    if back is not None and row.resume is None:
        row.failures.append("delivery did not resume in every worker")
    elif row.resume is not None and row.resume > RESUME_LIMIT:
        row.failures.append(f"delivery resumed {row.resume:.3f} s after the daemon came back")
    if row.wedged:
        row.failures.append(f"{row.wedged} empty messages acknowledged (the daemon wedges)")
    if row.altered:
        row.failures.append(f"{row.altered} events differ from the record's documented form")


# -- output ----------------------------------------------------------------

COLUMNS = (
    ("fault", 18),
    ("load", 9),
    ("emitted", 7),
    ("ack", 6),
    ("fallback", 8),
    ("dup", 4),
    ("lost", 4),
    ("twice", 5),
    ("slowest", 8),
    ("blocked", 7),
    ("resume", 7),
    ("hangups", 7),
    ("result", 6),
)


def format_row(row: Row) -> str:
    resume = "-" if row.resume is None else f"{row.resume:.3f}s"
    if row.resume is None and any("did not resume" in f for f in row.failures):
        resume = "never"
    cells = (
        row.fault,
        row.load,
        row.emitted,
        row.acknowledged,
        row.fallback,
        row.dup,
        row.lost,
        row.twice,
        f"{row.slowest:.3f}s",
        row.blocked,
        resume,
        row.hangups,
        "FAIL" if row.failures else "ok",
    )
    return "  ".join(
        str(cell).ljust(width) if n < 2 else str(cell).rjust(width)
        for n, (cell, (_, width)) in enumerate(zip(cells, COLUMNS))
    )


def header() -> str:
    names = (name.ljust(w) if n < 2 else name.rjust(w) for n, (name, w) in enumerate(COLUMNS))
    text = "  ".join(names)
    return f"{text}\n{'-' * len(text)}"


def readme_table(rows: list[Row], faults: Sequence[Fault], timeout: float) -> str:
    """The README's "What happens when the daemon is ..." table, from the rows
    (worst case over the loads; counts summed over the loads)."""
    lines = [
        "| The daemon is ... | A logging call | The record ends up | Delivery resumes |",
        "|---|---|---|---|",
    ]
    for fault in faults:
        mine = [row for row in rows if row.fault == fault.name]
        if not mine:
            continue
        slowest, quick = max(r.slowest for r in mine), max(r.quick for r in mine)
        blocked = max(r.blocked for r in mine if r.load == mine[0].load)
        if blocked:
            call = (
                f"{blocked} calls in {fault.during:g} s ({mine[0].load}) blocked for at most "
                f"{slowest:.3f} s (timeout {timeout:g} s); the rest took at most "
                f"{quick * 1000:.0f} ms"
            )
        else:
            call = f"returns at once (slowest {slowest * 1000:.0f} ms)"
        during = sum(r.during for r in mine) or 1
        shares = [
            (name, sum(getattr(r, f"during_{name}") for r in mine) / during)
            for name in ("daemon", "fallback", "both")
        ]
        where = ", ".join(f"{name} {share:.1%}" for name, share in shares if share)
        where += f"; lost {sum(r.lost for r in mine)}"
        resumes = [r.resume for r in mine if r.returned]
        if not resumes:
            back = "it never stopped"
        elif None in resumes:
            back = "did not resume"
        else:
            back = f"within {max(v for v in resumes if v is not None):.3f} s"
        lines.append(f"| {fault.state} | {call} | {where} | {back} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the fault matrix.")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default: {DEFAULT_JSON}")
    parser.add_argument("--only", help="comma-separated fault names (default: all)")
    parser.add_argument("--loads", help="comma-separated loads: 1,8,4p (default: all)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="the handler's timeout")
    parser.add_argument("--extra", action="store_true", help="also run the extra faults")
    parser.add_argument("--keep", type=Path, help="keep each daemon's files under this directory")
    args = parser.parse_args(argv)
    # On SIGTERM, unwind (and so stop every daemon and child) as on Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    every = FAULTS + EXTRA_FAULTS if args.extra else FAULTS
    faults = [f for f in every if not args.only or f.name in args.only.split(",")]
    loads = list(LOADS)
    if args.loads:
        wanted = args.loads.split(",")
        loads = [ld for ld in LOADS if ld.name.split()[0] + ("p" * bool(ld.processes)) in wanted]

    began = time.monotonic()
    print(f"handler timeout {args.timeout} s, one record every {PACE * 1000:.0f} ms per worker")
    print(header(), flush=True)
    rows: list[Row] = []
    for fault in faults:
        for load in loads:
            row = run_row(fault, load, args.timeout, args.keep)
            rows.append(row)
            print(format_row(row), flush=True)
    elapsed = time.monotonic() - began

    print(f"\n{len(rows)} rows in {elapsed:.0f} s")
    for row in rows:
        for note in row.notes:
            print(f"  note  {row.fault} / {row.load}: {note}")
        for failure in row.failures:
            print(f"  FAIL  {row.fault} / {row.load}: {failure}")
    print(f"\n{readme_table(rows, faults, args.timeout)}\n")
    result = {
        "timeout": args.timeout,
        "call_limit": args.timeout * CALL_LIMIT,
        "resume_limit": RESUME_LIMIT,
        "pace": PACE,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "seconds": round(elapsed, 1),
        "states": {f.name: f.state for f in faults},
        "rows": [asdict(row) for row in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.json}")
    return 1 if any(row.failures for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
