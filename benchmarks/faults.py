"""The fault matrix: does any record get lost, does any call block too long,
and how soon does delivery resume once the daemon is back?

    PYTHONPATH=src python benchmarks/faults.py [--json OUT] [--only FAULT,...]
        [--loads 1,8,4p,fork,forkserver,pool] [--spool first|all|none|only] [--extra]
        [--keep DIR]

Each row runs an independent daemon (``faultd.py``) in its own process, so
it can really be killed, stopped and restarted, and logs a steady stream of
records (one every 5 ms per thread or process) before, during and after one
fault.  Some rows also change how the logging process runs: a SIGALRM
handler that logs through the same handler 1000 times a second, gevent's
monkey-patching, a slow fallback, ``SIGPIPE`` at its default, the queue
handler in children that end through ``os._exit``, ``close()`` on another
thread.  Every record carries an id; the daemon writes each event it queued
to a file, and the fallback is a counting handler, so each record is matched:

- ``ack``: records the daemon queued (from its file, not from the handler);
- ``fallback``: records the handler handed to its fallback;
- ``dup``: both (the daemon answered after the timeout, or died after
  queuing and before replying): not lost, but CloudWatch and the fallback
  both have it;
- ``lost``: emitted, but neither acknowledged nor in the fallback;
- ``twice``: records the daemon queued more than once;
- ``slowest``: the slowest single ``logger.info`` call, less the time it
  spent inside the fallback handler itself (a slow fallback's own cost,
  which no handler can bound; it is shown apart);
- ``resume``: seconds from the daemon's return until every thread or process
  still logging had a record acknowledged again (a record it did not also
  put in the fallback);
- ``hangups``: clients that hung up before the daemon's reply (the real
  daemon logs a traceback for each).

The spool column runs a row again with ``spool=DIR`` (a fresh directory per
row), under each fault's first load (``--spool all``: every load).  Once the
stream stops, each logging process that is still open waits (at most
DRAIN_LIMIT) until its replayer has sent what it spooled, then closes; what is
still in the spool after that (a child that ended, a handler closed during
the fault) is sent by ``python -m globus.cwlogger spool DIR --replay``, as
the next process with that spool would, and counted as ``left``.  Then every
record emitted must be in the daemon's events file: ``missing`` counts those
that are not (in the fallback, or lost), ``twice`` the duplicates, which a
spool allows (a record whose request went unanswered is spooled and sent
again).

Exit status 1 when a record is lost or queued twice (without a spool), or
with a spool not in the daemon's events file at the end, a call took longer than
the timeout plus 10%, delivery resumed more than a second after the daemon
came back, the daemon was handed an empty message, a logging process died,
or ``close()`` took longer than it promises.  ``--markdown`` prints only the
README's table of a previous run's JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import itertools
import json
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.pool
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Union

from globus.cwlogger import GlobusQueueHandler, GlobusSocketHandler, _replay

HERE = Path(__file__).resolve().parent
FAULTD = HERE / "faultd.py"
DEFAULT_JSON = HERE / "results" / "faults.json"

TIMEOUT = 0.25  # the handler's timeout: the most one logging call may block
CALL_LIMIT = 1.10  # ... times this, or the row fails
RESUME_LIMIT = 1.0  # seconds after the daemon is back
PACE = 0.005  # seconds between two records of one thread or process
#: Seconds a logging process waits, once its stream stopped, for its replayer
#: to send what it spooled (at most 2,000 a second: 2.5 s of 8 threads' faults
#: are about 4,000 records).
DRAIN_LIMIT = 10.0

MAX_MESSAGE_BYTES = 262118
RID_SPAN = 1_000_000  # record id = worker * RID_SPAN + sequence number
RID = re.compile(r"\[(\d+)\] ")
# An empty message has no room for the record id, so the id travels in the
# record's creation time: timestamp = STAMP_BASE_MS + id.  The handler
# restamps a creation time CloudWatch would discard (over 14 days old, over
# 2 hours ahead), so the base is 12 hours ago: ids up to 10 * RID_SPAN ms
# (2.8 hours) stay inside the window, and no record stamped now falls in
# [STAMP_BASE_MS, STAMP_BASE_MS + 10 * RID_SPAN).
STAMP_BASE_MS = (int(time.time()) - 12 * 3600) * 1000
STAMP_SPAN = 10 * RID_SPAN
EMPTY_PLACEHOLDER = "(empty log message)"  # what README.md says an empty one becomes
SUMMARY = re.compile(r'^\{"type": "audit", "subtype": "cwlogger\.undelivered"')
SPOOL_AUDIT = re.compile(r'^\{"type": "audit", "subtype": "cwlogger\.spool", "replayed": (\d+)')
SENTINEL = "[sentinel]"
HEAD = 300  # characters of each event the daemon keeps in its file

BIG = "x" * 300_000
SIGNAL_WORKER = 9  # the id of the records a SIGALRM handler logs
BURST = 50  # records a multiprocessing child logs at once, right before it ends
TASK_RECORDS = 40  # records one Pool task logs (at the steady pace) before its burst
CLOSE_AFTER = 0.4  # seconds into a "close" row's fault before close() is called
# Under gevent, a sleeping greenlet may wake late by at most this share of the
# limit: a wait that blocks the hub (one not done through gevent) lasts the
# whole timeout.
HUB_LIMIT = 0.7

if sys.version_info >= (3, 12):  # fork() with the harness's threads running
    warnings.filterwarnings(
        "ignore", message=r".*use of fork\(\) may lead", category=DeprecationWarning
    )

Handler = Union[GlobusSocketHandler, GlobusQueueHandler]


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
    if kind == "empty":
        return EMPTY_PLACEHOLDER
    if kind == "normal":
        return f"[{rid}] record"
    return None


MESSAGE_KINDS = ("oversized", "surrogate", "empty", "multiline")


class CountingFallback(logging.Handler):
    """The fallback: remembers the id of every record it is handed (in a list,
    or as a line appended to ``path``, for processes that cannot report back
    after they end), and how long each thread spent in it.  ``delay`` makes
    it slow, for each caller on its own: it takes no lock, so any delay one
    thread sees through it is the handler's doing, not the fallback's."""

    def __init__(self, delay: float = 0.0, path: str | None = None) -> None:
        super().__init__()
        self.delay = delay
        self.path = path
        self.rids: list[int] = []
        self._spent = threading.local()
        self._fd: tuple[int, int] | None = None  # (pid, fd)

    def handle(self, record: logging.LogRecord) -> bool:
        began = time.perf_counter()
        if self.delay:
            time.sleep(self.delay)
        rid = int(getattr(record, "rid", -1))
        if self.path is None:
            self.rids.append(rid)
        else:
            os.write(self._file(), b"%d\n" % rid)  # O_APPEND: one write, whole
        self._spent.seconds = self.spent() + time.perf_counter() - began
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def spent(self) -> float:
        """Seconds this thread spent in the fallback so far."""
        seconds: float = getattr(self._spent, "seconds", 0.0)
        return seconds

    def _file(self) -> int:
        assert self.path is not None
        if self._fd is None or self._fd[0] != os.getpid():
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = (os.getpid(), os.open(self.path, flags, 0o600))
        return self._fd[1]

    def recorded(self) -> list[int]:
        """Every id handed to it, in this process and (with ``path``) any other."""
        if self.path is None:
            return list(self.rids)
        with contextlib.suppress(FileNotFoundError), open(self.path, encoding="ascii") as lines:
            return [int(line) for line in lines if line.endswith("\n")]
        return []


class StampEmpty(logging.Filter):
    """Put the id of an empty record in its creation time (see STAMP_BASE_MS)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "stamp", False):
            rid = int(getattr(record, "rid", 0))
            record.created = (STAMP_BASE_MS + rid + 0.5) / 1000
        return True


def make_handler(
    kind: str, address: str, timeout: float, fallback: logging.Handler, spool: str | None = None
) -> Handler:
    """The row's handler; ``spool``: its directory (None: none, whatever the
    environment says)."""
    handler: Handler
    directory = spool or "off"
    if kind == "queue":
        handler = GlobusQueueHandler(address, timeout=timeout, fallback=fallback, spool=directory)
    else:
        handler = GlobusSocketHandler(address, timeout=timeout, fallback=fallback, spool=directory)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def make_logger(handler: Handler) -> logging.Logger:
    logger = logging.getLogger(f"faults.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addFilter(StampEmpty())
    logger.addHandler(handler)
    return logger


def sending(handler: Handler) -> GlobusSocketHandler:
    """The handler that does the sending (and keeps the counts)."""
    return handler.target if isinstance(handler, GlobusQueueHandler) else handler


def drain(handler: Handler) -> float | None:
    """Wait until the replayer of ``handler`` has sent what this process
    spooled; the seconds that took, or None when DRAIN_LIMIT passed first."""
    if isinstance(handler, GlobusQueueHandler):
        handler.flush()
    counts = sending(handler)
    began = time.monotonic()
    while counts.replayed < counts.spooled:
        if time.monotonic() - began > DRAIN_LIMIT:
            return None
        time.sleep(0.01)
    return round(time.monotonic() - began, 3)


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

ALL_LOADS = ("1", "8", "4p")


@dataclass(frozen=True)
class Fault:
    """One fault: what the daemon does before, during and after it, and how
    the logging process runs meanwhile."""

    name: str
    #: What a README reader calls this state of the daemon (and process).
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
    # -- the logging process
    #: The loads it runs under (Load.key).
    loads: tuple[str, ...] = ALL_LOADS
    #: "socket": GlobusSocketHandler; "queue": GlobusQueueHandler.
    handler: str = "socket"
    #: SIGALRM this many times a second in the main thread (which logs too),
    #: whose handler logs one record through the same handler.
    alarm_hz: float = 0.0
    #: Seconds the fallback takes for each record.
    fallback_delay: float = 0.0
    #: Run the row in a process of its own, set up first by PRELUDES[prelude].
    prelude: str = ""
    # -- the README's words; {...} are filled from the measurements (see cells)
    call: str = ""
    ends: str = ""
    resumes: str = ""

    def begin(self, run: Run) -> None:
        """Make the fault happen."""

    def end(self, run: Run) -> float | None:
        """End it; return the time the daemon was back (None: it never left)."""
        return None


@dataclass(frozen=True)
class Absent(Fault):
    def end(self, run: Run) -> float | None:
        return run.daemon.start()


@dataclass(frozen=True)
class KillRestart(Fault):
    def begin(self, run: Run) -> None:
        run.daemon.kill()
        if self.path:
            left = os.path.exists(run.daemon.address)
            run.notes.append("socket file left behind" if left else "socket file NOT left behind")

    def end(self, run: Run) -> float | None:
        return run.daemon.start()


@dataclass(frozen=True)
class StopResume(Fault):
    def begin(self, run: Run) -> None:
        run.daemon.signal(signal.SIGSTOP)

    def end(self, run: Run) -> float | None:
        return run.daemon.signal(signal.SIGCONT)


@dataclass(frozen=True)
class ModeSwitch(Fault):
    """faultd's ``--fault`` mode between SIGUSR2 and SIGUSR1."""

    def begin(self, run: Run) -> None:
        run.daemon.signal(signal.SIGUSR2)

    def end(self, run: Run) -> float | None:
        return run.daemon.signal(signal.SIGUSR1)


@dataclass(frozen=True)
class BacklogFull(ModeSwitch):
    def begin(self, run: Run) -> None:
        super().begin(run)
        time.sleep(0.02)  # let it finish the connection it is serving
        run.notes.append(f"backlog filled with {fill_backlog(run.daemon.address)} connections")


@dataclass(frozen=True)
class CloseDuring(StopResume):
    """Stopped; while the workers log, the handler is closed twice by
    another thread (this one); then resumed.  The handler stays usable."""

    def begin(self, run: Run) -> None:
        super().begin(run)
        time.sleep(CLOSE_AFTER)  # a request is held for its late reply by then
        for _ in range(2):
            began = time.perf_counter()
            run.handler.close()
            run.closes.append(time.perf_counter() - began)


STOPPED = "stopped (SIGSTOP), then resumed"
AS_STOPPED = "as when stopped ({blocked} calls in {during} s blocked, for at most {slowest})"

FAULTS: tuple[Fault, ...] = (
    Absent(
        "no daemon", "not running at all", before=0.0, running=False,
        resumes="within {resume} of its start",
    ),
    KillRestart(
        "killed+restarted", "killed (SIGKILL), then restarted",
        ends="{shares} while it is down; lost {lost}",
    ),
    KillRestart(
        "stale socket file", "dead, its socket file left behind", path=True,
        resumes="within {resume} of its restart",
    ),
    StopResume(
        "stopped+resumed", STOPPED, during=2.5,
        call="the first call blocks for the timeout, then one call per backoff period (1 s, "
        "2 s, 4 s ... 30 s): {blocked} calls in {during} s, for at most {slowest}; the rest "
        "return at once (slowest {quick_ms} ms)",
        resumes="within {resume} of SIGCONT",
    ),
    ModeSwitch(
        "slow replies", "answering after twice the timeout",
        ("--fault", "delay", "--delay", "{2t}"), during=2.0,
        call="a call blocks for the timeout, then the others go to the fallback at once until "
        "its late reply ends the backoff ({blocked} calls in {during} s blocked, for at most "
        "{slowest}; the rest at most {quick_ms} ms)",
    ),
    BacklogFull(
        "never accepts", "not accepting (listen backlog full)", ("--fault", "noaccept"),
        during=2.5, call=AS_STOPPED,
        resumes="within {resume} (it first drains 1024 waiting connections)",
    ),
    ModeSwitch(
        "error replies", "refusing 1 in 3 (`too many events in queue`)",
        ("--fault", "error", "--every", "3"),
    ),
    ModeSwitch("closes", "closing without a reply", ("--fault", "close")),
    Fault(
        "bad messages", "sent oversized, lone-surrogate, empty or multi-line records",
        messages=MESSAGE_KINDS,
        ends="{shares}: cut with a marker, U+FFFD, `(empty log message)`, one event; lost {lost}",
    ),
    # How the logging process runs, each with a daemon that fails meanwhile.
    StopResume(
        "signals 1 kHz", f"{STOPPED}, while a SIGALRM handler logs through the same handler "
        "1000 times a second (in the main thread, which logs too)",
        during=2.5, alarm_hz=1000.0, loads=("1", "8"),
        call=AS_STOPPED + "; {signals} records from the signal handler ({nested} while "
        "another logging call was under way), each call at most {signal_slowest}",
        resumes="within {resume} of SIGCONT",
    ),
    StopResume(
        "gevent", f"{STOPPED}, in a process under `gevent.monkey.patch_all()` (the threads "
        "are greenlets)",
        during=2.5, prelude="gevent", loads=("1", "8"),
        call=AS_STOPPED + "; the hub kept running (a greenlet that only sleeps woke at most "
        "{stalled_ms} ms late)",
        resumes="within {resume} of SIGCONT",
    ),
    StopResume(
        "slow fallback", f"{STOPPED}, with a fallback that takes 50 ms per record",
        during=2.5, fallback_delay=0.05, loads=("1", "8"),
        call=AS_STOPPED + ", plus the call's own record in the fallback (at most {raw} in all)",
        resumes="within {resume} of SIGCONT",
    ),
    ModeSwitch(
        "SIGPIPE default", "hanging up in the middle of large requests, in a process with "
        "`SIGPIPE` at its default, `SIG_DFL`",
        ("--fault", "cutoff"), messages=("oversized", "normal"), prelude="sigpipe",
        loads=("1", "8"),
        ends="{shares} (the large records), the process never killed; lost {lost}",
    ),
    StopResume(
        "queue os._exit", f"{STOPPED}, for `GlobusQueueHandler` in multiprocessing "
        "children, which end through `os._exit`: fork and forkserver `Process`es, a fork "
        "`Pool(maxtasksperchild=1)`",
        during=2.5, handler="queue", loads=("fork", "forkserver", "pool"),
        call="returns at once (a queue put; slowest {slowest_ms} ms)",
        ends="{shares}, counted at the daemon; lost {lost}; a child ended at most {exit} "
        "after its last record (a burst of 50)",
        resumes="within {resume} of SIGCONT",
    ),
    CloseDuring(
        "close() socket", f"{STOPPED}; `close()` called twice on another thread while 8 "
        "threads log",
        during=2.5, loads=("8",),
        call="the first `close()` takes {close} (a held request's timeout), the second "
        "{close2}; logging calls as when stopped ({blocked} blocked, for at most {slowest})",
        resumes="within {resume} of SIGCONT (the handler stays usable)",
    ),
    CloseDuring(
        "close() queue", "the same, with `GlobusQueueHandler`", handler="queue",
        during=2.5, loads=("8",),
        call="the first `close()` takes {close} (at most seven timeouts), the second "
        "{close2}; then records are sent in the logging call ({blocked} blocked, for at "
        "most {slowest})",
        resumes="within {resume} of SIGCONT",
    ),
)  # fmt: skip


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

#: What a row with a prelude runs first, in a fresh interpreter, before this
#: script (as a service would: gevent patches before anything else imports).
PRELUDES = {
    "gevent": "from gevent import monkey; monkey.patch_all()",
    "sigpipe": "import signal; signal.signal(signal.SIGPIPE, signal.SIG_DFL)",
}


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
    #: Records logged: sequence numbers 0 to emitted - 1.
    emitted: int = 0
    #: (record id, kind) for every record that is not a plain one.
    special: list[tuple[int, str]] = field(default_factory=list)
    #: The slowest call, less its time in the fallback (see the module's doc).
    slowest: float = 0.0
    #: The slowest call, its time in the fallback included.
    slowest_raw: float = 0.0
    #: Calls that blocked for more than half the timeout.
    blocked: int = 0
    #: The slowest of the other calls.
    quick: float = 0.0
    #: Sequence numbers of the records logged during the fault: [first, end).
    during: tuple[int, int] = (0, 0)
    #: Records logged once the daemon was back.
    after: int = 0
    #: When it logged its first record, and its last (time.monotonic()).
    first: float = 0.0
    #: (seconds after the fault began, seconds it took) of calls over the limit.
    over_limit: list[tuple[float, float]] = field(default_factory=list)
    last: float = 0.0
    #: Records it logged inside another logging call (a signal handler's).
    nested: int = 0
    #: It is the SIGALRM handler, not a thread or process.
    alarm: bool = False

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> WorkerReport:
        report = cls(**payload)
        report.special = [(rid, kind) for rid, kind in report.special]
        report.over_limit = [(at, took) for at, took in report.over_limit]
        report.during = (report.during[0], report.during[1])
        return report


@dataclass
class HandlerReport:
    """One handler's own counters and what reached its fallback."""

    delivered: int = 0
    undelivered: int = 0
    truncated: int = 0
    fallback: list[int] = field(default_factory=list)
    stderr: str = ""
    spooled: int = 0
    replayed: int = 0
    #: Seconds its replayer took to send what it spooled, once the stream
    #: stopped (None: not within DRAIN_LIMIT; 0.0 without a spool).
    drained: float | None = 0.0


@dataclass(frozen=True)
class Load:
    name: str
    #: For --loads and Fault.loads.
    key: str
    threads: int = 0
    processes: int = 0
    #: Processes started by multiprocessing: "fork", "forkserver", or a
    #: "pool" of fork workers replaced after each task.
    mp: str = ""


LOADS = (
    Load("1 thread", "1", threads=1),
    Load("8 threads", "8", threads=8),
    Load("4 procs", "4p", processes=4),
    Load("mp fork", "fork", processes=4, mp="fork"),
    Load("forkserver", "forkserver", processes=4, mp="forkserver"),
    Load("mp pool", "pool", processes=2, mp="pool"),
)


@dataclass
class Stream:
    """The steady stream of records one worker logs, and how each is timed."""

    logger: logging.Logger
    schedule: Schedule
    messages: tuple[str, ...]
    timeout: float
    fallback: CountingFallback
    #: Logging calls under way in this process, one inside another at most.
    busy: int = 0

    @property
    def limit(self) -> float:
        return self.timeout * CALL_LIMIT

    def log_one(self, report: WorkerReport, seq: Iterator[int]) -> None:
        """Log the worker's next record and time the call.  A signal handler
        may call this inside another call of its own worker: the sequence
        number comes from ``next(seq)``, which a signal cannot split."""
        n = next(seq)
        now = time.monotonic()
        schedule = self.schedule
        rid = report.worker * RID_SPAN + n
        kind = "normal"
        if schedule.fault <= now < schedule.back:
            first, end = report.during
            report.during = (min(first, n) if end else n, max(end, n + 1))
            if self.messages:
                kind = self.messages[n % len(self.messages)]
                report.special.append((rid, kind))
        elif now >= schedule.back:
            report.after += 1
        report.first = report.first or now
        report.nested += bool(self.busy)
        spent = self.fallback.spent()
        self.busy += 1
        began = time.perf_counter()
        try:
            log_record(self.logger, kind, rid)
        finally:
            took = time.perf_counter() - began
            self.busy -= 1
        own = took - (self.fallback.spent() - spent)
        report.slowest = max(report.slowest, own)
        report.slowest_raw = max(report.slowest_raw, took)
        if own > self.timeout / 2:
            report.blocked += 1
        else:
            report.quick = max(report.quick, own)
        if own > self.limit:
            report.over_limit.append((round(now - schedule.fault, 3), round(own, 3)))
        report.last = time.monotonic()

    def work(self, worker: int, records: int | None = None, burst: int = 0) -> WorkerReport:
        """Log one record every PACE seconds from start to stop (or until
        ``records`` were logged), then ``burst`` more at once."""
        report = WorkerReport(worker)
        seq = itertools.count()
        due = self.schedule.start
        logged = 0
        while records is None or logged < records:
            sleep_until(due)
            if time.monotonic() >= self.schedule.stop:
                break
            self.log_one(report, seq)
            logged += 1
            # A steady pace: after a slow call, carry on rather than catch up.
            due = max(due + PACE, time.monotonic())
        for _ in range(burst):
            self.log_one(report, seq)
        report.emitted = next(seq)  # the next it would have used
        return report


@contextlib.contextmanager
def alarms(stream: Stream, hz: float, report: WorkerReport) -> Iterator[None]:
    """SIGALRM ``hz`` times a second; its handler logs one record (worker
    SIGNAL_WORKER) through the same logger, whatever the main thread is
    doing: sleeping, or inside a logging call of its own."""
    seq = itertools.count()

    def on_alarm(signum: int, frame: object) -> None:
        if time.monotonic() < stream.schedule.stop:
            stream.log_one(report, seq)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 1 / hz, 1 / hz)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        report.emitted = next(seq)


@dataclass
class Run:
    """Everything one row needs: the fault, the load, the handler and where
    its output goes, the daemon, and the timetable."""

    fault: Fault
    load: Load
    timeout: float
    daemon: Daemon
    handler: Handler
    fallback: CountingFallback
    logger: logging.Logger
    stderr: io.StringIO
    schedule: Schedule
    notes: list[str] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    #: How long each close() took that the fault made (CloseDuring).
    closes: list[float] = field(default_factory=list)
    #: Seconds from a child's last record to its exit (multiprocessing).
    exits: list[float] = field(default_factory=list)
    #: The latest a thread that only sleeps woke up (threads: under gevent,
    #: a wait that does not yield to the hub stops every greenlet).
    stalled: float = 0.0
    #: The spool's directory, or None.
    spool: str | None = None
    #: How long this process's replayer took to send what it spooled.
    drained: float | None = 0.0

    @property
    def limit(self) -> float:
        return self.timeout * CALL_LIMIT

    @property
    def stream(self) -> Stream:
        return Stream(self.logger, self.schedule, self.fault.messages, self.timeout, self.fallback)

    def drive(self) -> float | None:
        """Make the fault happen on time; return when the daemon was back."""
        sleep_until(self.schedule.fault)
        self.fault.begin(self)
        sleep_until(self.schedule.back)
        return self.fault.end(self)

    def handler_report(self) -> HandlerReport:
        handler = sending(self.handler)
        return HandlerReport(
            handler.delivered,
            handler.undelivered,
            handler.truncated,
            self.fallback.recorded(),
            self.stderr.getvalue(),
            handler.spooled,
            handler.replayed,
            self.drained,
        )

    def drain(self) -> None:
        """With a spool, wait for the replayer before closing (unless the
        fault closed the handler already: its replayer is gone)."""
        if self.spool is not None and not self.closes:
            self.drained = drain(self.handler)


def sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


Outcome = tuple[list[WorkerReport], list[HandlerReport], Union[float, None]]


def run_threads(run: Run) -> Outcome:
    """Threads share the handler; the main thread is worker 1 (signals are
    handled there), another thread drives the fault."""
    reports: list[WorkerReport] = []
    errors: list[BaseException] = []
    back: list[float | None] = []
    stream = run.stream

    def target(worker: int) -> None:
        try:
            reports.append(stream.work(worker))
        except BaseException as error:
            errors.append(error)

    def drive() -> None:
        try:
            back.append(run.drive())
        except BaseException as error:
            errors.append(error)

    def tick() -> None:  # a thread that only sleeps: how late does it wake?
        while time.monotonic() < run.schedule.stop:
            began = time.monotonic()
            time.sleep(PACE)
            run.stalled = max(run.stalled, time.monotonic() - began - PACE)

    pool = [threading.Thread(target=target, args=(n,)) for n in range(2, run.load.threads + 1)]
    pool.append(threading.Thread(target=drive, name="driver"))
    pool.append(threading.Thread(target=tick, name="ticker"))
    for thread in pool:
        thread.start()
    try:
        if run.fault.alarm_hz:
            signals = WorkerReport(SIGNAL_WORKER, alarm=True)
            with alarms(stream, run.fault.alarm_hz, signals):
                reports.append(stream.work(1))
            reports.append(signals)
        else:
            reports.append(stream.work(1))
    finally:
        for thread in pool:
            thread.join()
    if errors:
        raise errors[0]
    return reports, [], back[0]


def run_forked(run: Run) -> Outcome:
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
        workers.append(WorkerReport.from_dict(payload["worker"]))
        handlers.append(HandlerReport(**payload["handler"]))
    return workers, handlers, back


def _child(run: Run, worker: int, write_end: int) -> None:
    """In a forked child: log, close the handler, report, and leave."""
    code = 1
    try:
        # Count only what this process does with its copy of the handler.
        handler = sending(run.handler)
        before = (handler.delivered, handler.undelivered, handler.truncated)
        spooled, replayed = handler.spooled, handler.replayed
        run.fallback.rids.clear()
        run.stderr.seek(0)
        run.stderr.truncate()
        report = run.stream.work(worker)
        run.drain()
        run.handler.close()
        own = run.handler_report()
        own.delivered -= before[0]
        own.undelivered -= before[1]
        own.truncated -= before[2]
        own.spooled -= spooled
        own.replayed -= replayed
        payload = {"worker": asdict(report), "handler": asdict(own)}
        with os.fdopen(write_end, "w") as pipe:
            json.dump(payload, pipe)
        code = 0
    except BaseException:
        with contextlib.suppress(Exception), os.fdopen(write_end, "w", closefd=False) as pipe:
            pipe.write(traceback.format_exc())
    finally:
        os._exit(code)


# -- multiprocessing children (GlobusQueueHandler, ending through os._exit)


@dataclass(frozen=True)
class ChildSpec:
    """What a multiprocessing child needs to log (picklable, for forkserver)."""

    address: str
    timeout: float
    schedule: Schedule
    fallback: str  # the file a CountingFallback appends ids to
    records: int | None  # None: until the schedule stops
    burst: int
    spool: str | None


#: The parent's handler and logger, which fork children inherit.
_INHERITED: dict[str, Any] = {}


def mp_child(spec: ChildSpec, worker: int) -> dict[str, Any]:
    """In a multiprocessing child: log through the inherited queue handler
    (fork) or one of its own (forkserver), and return without closing it:
    the process then ends through ``os._exit``, and only the handler's own
    exit hooks can deliver what it still holds."""
    logger = _INHERITED.get("logger")
    if logger is None:  # forkserver: a process of its own, and its own stderr
        sys.stderr = io.StringIO()  # the handler's warnings, as captured_stderr() keeps them
        fallback = CountingFallback(path=spec.fallback)
        handler = make_handler("queue", spec.address, spec.timeout, fallback, spec.spool)
        logger = make_logger(handler)
        _INHERITED.update(logger=logger, fallback=fallback)
    fallback = _INHERITED["fallback"]
    stream = Stream(logger, spec.schedule, (), spec.timeout, fallback)
    return asdict(stream.work(worker, spec.records, spec.burst))


def mp_process(spec: ChildSpec, worker: int, conn: multiprocessing.connection.Connection) -> None:
    conn.send(mp_child(spec, worker))
    conn.close()


def run_multiprocessing(run: Run) -> Outcome:
    """multiprocessing children log through GlobusQueueHandler; what they
    logged is counted at the daemon and in the fallback's file."""
    log_record(run.logger, "normal", 0)  # worker 0 is this process
    run.handler.flush()
    assert run.fallback.path is not None
    _INHERITED.update(logger=run.logger, fallback=run.fallback)
    back: list[float | None] = []
    driver = threading.Thread(target=lambda: back.append(run.drive()), name="driver")
    try:
        if run.load.mp == "pool":
            spec = ChildSpec(
                run.daemon.address, run.timeout, run.schedule, run.fallback.path,
                TASK_RECORDS, BURST, run.spool,
            )  # fmt: skip
            driver.start()
            workers = _pool(run, spec)
        else:
            spec = ChildSpec(
                run.daemon.address, run.timeout, run.schedule, run.fallback.path, None, BURST,
                run.spool,
            )  # fmt: skip
            workers = _processes(run, spec, driver)
    finally:
        _INHERITED.clear()
        if driver.ident is not None:  # started
            driver.join()
    if not back:
        msg = "the fault's driver failed"
        raise RuntimeError(msg)
    return [WorkerReport(0, emitted=1), *workers], [], back[0]


def _processes(run: Run, spec: ChildSpec, driver: threading.Thread) -> list[WorkerReport]:
    """Processes that log from start to stop, then a burst, and return; each
    sends its report first.  How long each took to end after its last
    record is measured from the moment it was gone."""
    context: Any = multiprocessing.get_context(run.load.mp)  # typeshed: fork's, forkserver's
    started: list[tuple[Any, multiprocessing.connection.Connection]] = []
    reports: dict[int, WorkerReport] = {}
    try:
        for worker in range(1, run.load.processes + 1):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=mp_process, args=(spec, worker, sender))
            process.start()
            sender.close()
            started.append((process, receiver))
        driver.start()
        pending: dict[Any, tuple[Any, multiprocessing.connection.Connection]] = {}
        for process, receiver in started:
            pending[receiver] = pending[process.sentinel] = (process, receiver)
        deadline = run.schedule.stop + 60
        while pending:
            ready = multiprocessing.connection.wait(list(pending), deadline - time.monotonic())
            if not ready:
                msg = f"{len(pending) // 2} children did not end"
                raise RuntimeError(msg)
            now = time.monotonic()
            for waitable in ready:
                process, receiver = pending.pop(waitable)
                if process.pid not in reports and receiver.poll():
                    with contextlib.suppress(EOFError):
                        reports[process.pid] = WorkerReport.from_dict(receiver.recv())
                if waitable is receiver:
                    continue
                process.join()  # it ended: its report came before
                report = reports.get(process.pid)
                if report is None or process.exitcode != 0:
                    msg = f"child {process.pid} exited with {process.exitcode}, reported {report}"
                    raise RuntimeError(msg)
                run.exits.append(now - report.last)
        return list(reports.values())
    finally:
        for process, receiver in started:
            receiver.close()
            if process.is_alive():
                process.kill()
                process.join()


def _pool(run: Run, spec: ChildSpec) -> list[WorkerReport]:
    """Tasks of TASK_RECORDS records and a burst, each in a worker process
    of its own (maxtasksperchild=1), from start to stop."""
    pool = multiprocessing.get_context("fork").Pool(run.load.processes, maxtasksperchild=1)
    results: list[multiprocessing.pool.AsyncResult[dict[str, Any]]] = []
    try:
        worker = 1
        task = TASK_RECORDS * PACE
        while time.monotonic() < run.schedule.stop - task:
            if sum(not r.ready() for r in results) < run.load.processes:
                results.append(pool.apply_async(mp_child, (spec, worker)))
                worker += 1
            else:
                time.sleep(0.005)
        pool.close()
        pool.join()
    except BaseException:
        pool.terminate()
        raise
    return [WorkerReport.from_dict(r.get(0)) for r in results]


# -- one row ---------------------------------------------------------------


@dataclass
class Row:
    """One fault under one load, measured."""

    fault: str
    load: str
    handler: str = "socket"
    emitted: int = 0
    acknowledged: int = 0
    fallback: int = 0
    dup: int = 0
    lost: int = 0
    twice: int = 0
    slowest: float = 0.0
    #: The slowest call with its time in the fallback.
    slowest_raw: float = 0.0
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
    #: Records a SIGALRM handler logged (inside a logging call of the main
    #: thread's: nested), and its slowest call.
    signals: int = 0
    nested: int = 0
    signal_slowest: float = 0.0
    #: How long each close() the fault made took.
    closes: list[float] = field(default_factory=list)
    #: The longest a multiprocessing child took to end after its last record.
    exit: float | None = None
    #: The latest a thread (greenlet) that only sleeps 5 ms woke up.
    stalled: float = 0.0
    #: The process runs under gevent: nothing may keep the hub from running.
    green: bool = False
    #: With a spool (see the module's doc): records spooled and replayed by
    #: the logging processes (their counters), left in the spool after them
    #: (sent by ``spool --replay``), and emitted but not in the daemon's
    #: events file at the end; audit events of replays and what they count.
    spool: bool = False
    spooled: int = 0
    replayed: int = 0
    left: int = 0
    missing: int = 0
    audits: int = 0
    audit_replayed: int = 0
    #: The longest a logging process waited for its replayer (None: longer
    #: than DRAIN_LIMIT).
    drained: float | None = 0.0
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


def run_row(
    fault: Fault, load: Load, timeout: float, keep: Path | None = None, spool: bool = False
) -> Row:
    """Run one fault under one load (with a spool, if ``spool``), clean up
    every process, measure (in a process of its own, set up first, if the
    fault has a prelude)."""
    if fault.prelude:
        return run_isolated(fault, load, timeout, keep, spool)
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        # A row that hangs (a deadlock in the handler) ends the matrix, with
        # every thread's traceback, rather than hang it.
        faulthandler.dump_traceback_later(budget(fault, spool), exit=True)
        stack.callback(faulthandler.cancel_dump_traceback_later)
        workdir = row_directory(stack, f"{fault.name}-{load.name}", keep, spool)
        directory = str(workdir / "spool") if spool else None
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

        # Children of multiprocessing cannot report after they end: their
        # fallback appends to a file.
        path = str(workdir / "fallback.txt") if load.mp else None
        if path is not None:
            _unlink(path)
        fallback = CountingFallback(fault.fallback_delay, path)
        handler = make_handler(fault.handler, address, timeout, fallback, directory)
        stack.callback(handler.close)
        logger = make_logger(handler)
        stderr = stack.enter_context(captured_stderr())
        lead = 1.0 if load.mp else 0.2  # a forkserver takes its time to start
        run = Run(
            fault,
            load,
            timeout,
            daemon,
            handler,
            fallback,
            logger,
            stderr,
            Schedule.for_fault(fault, lead),
            spool=directory,
        )
        stack.callback(_reap, run.children)

        if load.mp:
            go = run_multiprocessing
        elif load.processes:
            go = run_forked
        else:
            go = run_threads
        workers, handlers, back = go(run)
        run.drain()
        handler.close()
        handlers.append(run.handler_report())
        left = replay_left(run) if directory is not None else (0, 0)
        try:
            request(address, SENTINEL)  # once answered, all queued before it are served
        except OSError as error:
            run.notes.append(f"sentinel failed: {error!r}")
        daemon.stop()
        row = analyse(run, back, workers, handlers, left)
    row.seconds = round(time.monotonic() - began, 2)
    return row


def row_directory(
    stack: contextlib.ExitStack[bool | None], name: str, keep: Path | None, spool: bool
) -> Path:
    """Where a row's daemon keeps its files (and its spool is): a temporary
    directory, or one under ``keep``, with no spool left from an earlier run."""
    if keep is None:
        return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cwl-faults-")))
    name += "-spool" if spool else ""
    workdir = keep / name.replace(" ", "_").replace("+", "_")
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(workdir / "spool")
    return workdir


def replay_left(run: Run) -> tuple[int, int]:
    """What the logging processes left in the spool, sent as the next
    process with that spool would (by the command line, here); how many
    records were left, and how many of them it replayed."""
    assert run.spool is not None
    left = _replay.describe(run.spool)["records"]
    if not left:
        return 0, 0
    address = run.daemon.address
    shown = "@" + address[1:] if address.startswith("\0") else address
    done = subprocess.run(
        [
            *(sys.executable, "-m", "globus.cwlogger", "spool", run.spool, "--replay"),
            *("--address", shown, "--timeout", str(run.timeout)),
        ],
        capture_output=True,
        text=True,
        timeout=60 + left / 1000,  # paced at 2,000 a second
        check=False,
    )
    shown_lines = " / ".join(done.stdout.splitlines())
    run.notes.append(f"spool --replay (exit status {done.returncode}): {shown_lines}")
    if done.stderr:
        run.notes.append(f"spool --replay said on stderr: {done.stderr[-300:]!r}")
    replayed = re.match(r"replayed (\d+) record", done.stdout)
    return left, int(replayed.group(1)) if replayed else 0


def run_isolated(
    fault: Fault, load: Load, timeout: float, keep: Path | None, spool: bool = False
) -> Row:
    """The row in a fresh interpreter that runs PRELUDES[fault.prelude]
    first, then this script with --child-row; its row comes back as JSON.
    A process that dies (of SIGPIPE, say) is a failed row."""
    began = time.monotonic()
    code = (
        f"{PRELUDES[fault.prelude]}\n"
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    command = [sys.executable, "-c", code, str(Path(__file__).resolve()), "--child-row"]
    command += [fault.name, "--loads", load.key, "--timeout", str(timeout)]
    if keep is not None:
        command += ["--keep", str(keep)]
    if spool:
        command += ["--child-spool"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=budget(fault, spool) + 30, check=False
        )
    except subprocess.TimeoutExpired as expired:
        row = Row(fault.name, load.name, fault.handler, spool=spool)
        row.seconds = round(time.monotonic() - began, 2)
        row.failures.append("the logging process hung")
        row.notes.append(f"its stderr ends: {str(expired.stderr)[-600:]!r}")
        return row
    lines = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
    if done.returncode == 0 and lines:
        return Row(**json.loads(lines[-1][4:]))
    row = Row(fault.name, load.name, fault.handler, spool=spool)
    row.seconds = round(time.monotonic() - began, 2)
    missing = re.search(r"No module named '(\w+)'", done.stderr)
    if missing:
        row.notes.append(f"{missing.group(1)} is not installed where this runs: install it")
    if done.returncode < 0:
        how = f"killed by {signal.Signals(-done.returncode).name}"
    else:
        how = f"exit status {done.returncode}"
    row.failures.append(f"the logging process ended ({how}) before its row was done")
    row.notes.append(f"its stderr ends: {done.stderr[-600:]!r}")
    return row


def budget(fault: Fault, spool: bool = False) -> float:
    """Seconds a row may take at most, its processes' start and end included
    (with a spool: waiting for replayers, and the command line's replay)."""
    return fault.before + fault.during + fault.after + 60 + (2 * DRAIN_LIMIT + 60) * spool


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
    #: worker -> when the daemon queued its first record after its return
    #: that was not also handed to the fallback.
    resumed: dict[int, float] = field(default_factory=dict)
    summaries: int = 0
    summarised: int = 0
    altered: int = 0
    #: Replays' audit events, and the records they say were replayed.
    audits: int = 0
    audit_replayed: int = 0


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
        elif audit := SPOOL_AUDIT.match(message):  # its head only (HEAD): the first field
            result.audits += 1
            result.audit_replayed += int(audit.group(1))
            continue
        elif (
            message == EMPTY_PLACEHOLDER
            and isinstance(stamp, int)
            and 0 <= stamp - STAMP_BASE_MS < STAMP_SPAN
        ):
            rid = stamp - STAMP_BASE_MS  # an empty record, sent as a placeholder
        else:
            run.notes.append(f"unknown event: {message[:60]!r} stamped {stamp}")
            continue
        result.acked[rid] += 1
        kind = kinds.get(rid, "normal")
        want = expected_message(kind, rid)
        if (want is not None and message != want) or event["bytes"] > MAX_MESSAGE_BYTES:
            result.altered += 1
            if result.altered == 1:
                run.notes.append(f"{kind} record arrived as {message[:60]!r}")
        if back is not None and event["t"] >= back and rid not in fallback:
            result.resumed.setdefault(rid // RID_SPAN, event["t"])
    return result


def analyse(
    run: Run,
    back: float | None,
    workers: list[WorkerReport],
    handlers: list[HandlerReport],
    left: tuple[int, int] = (0, 0),
) -> Row:
    kinds = {rid: kind for w in workers for rid, kind in w.special}
    emitted = {w.worker * RID_SPAN + n for w in workers for n in range(w.emitted)}
    fallback_list = [rid for h in handlers for rid in h.fallback]
    fallback = set(fallback_list)
    events = tally(run, back, kinds, fallback)
    acked = set(events.acked)
    journal = Counter(entry["kind"] for entry in read_jsonl(run.daemon.journal))
    stderr = "".join(h.stderr for h in handlers)
    signals = [w for w in workers if w.alarm]
    row = Row(
        fault=run.fault.name,
        load=run.load.name,
        handler=run.fault.handler,
        emitted=len(emitted),
        acknowledged=len(acked),
        fallback=len(fallback),
        dup=len(acked & fallback),
        lost=len(emitted - acked - fallback),
        twice=sum(count - 1 for count in events.acked.values() if count > 1),
        slowest=max(w.slowest for w in workers),
        slowest_raw=max(w.slowest_raw for w in workers),
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
        signals=sum(w.emitted for w in signals),
        nested=sum(w.nested for w in signals),
        signal_slowest=max((w.slowest for w in signals), default=0.0),
        closes=[round(seconds, 4) for seconds in run.closes],
        exit=max(run.exits) if run.exits else None,
        stalled=round(run.stalled, 4),
        green=patched_by_gevent(),
        spool=run.spool is not None,
        spooled=sum(h.spooled for h in handlers),
        replayed=sum(h.replayed for h in handlers),
        left=left[0],
        missing=len(emitted - acked) if run.spool is not None else 0,
        audits=events.audits,
        audit_replayed=events.audit_replayed,
        drained=None
        if None in [h.drained for h in handlers]
        else max(h.drained or 0 for h in handlers),
        notes=run.notes,
    )
    during = {w.worker * RID_SPAN + n for w in workers for n in range(*w.during)}
    row.during = len(during)
    row.during_both = len(during & acked & fallback)
    row.during_daemon = len(during & acked) - row.during_both
    row.during_fallback = len(during & fallback) - row.during_both
    if back is not None:
        # From the daemon's return (or a worker's first record after it, for
        # a Pool task that began later) to the worker's first record that the
        # daemon acknowledged, for every worker that logged after it.
        producers = [w for w in workers if w.after]
        missing = [w.worker for w in producers if w.worker not in events.resumed]
        if missing:
            row.notes.append(f"no record acknowledged after the daemon was back from {missing}")
        elif producers:
            row.resume = max(events.resumed[w.worker] - max(back, w.first) for w in producers)

    if acked - emitted:
        row.notes.append(f"{len(acked - emitted)} acknowledged records were never emitted")
    if len(fallback_list) != len(fallback):
        row.notes.append(f"{len(fallback_list) - len(fallback)} records in the fallback twice")
    if not run.load.mp:  # a multiprocessing child's counters end with it
        check_counts(row, len(acked - fallback), len(fallback_list), left[1])
    elif row.spool:  # so the daemon's audit events say what the children replayed
        row.replayed = row.audit_replayed - left[1]
        row.notes.append("replayed: from the audit events (a child's counters end with it)")
    if row.logging_errors:
        row.notes.append(f"logging errors on stderr: {stderr[-300:]!r}")
    describe(row)
    over = sorted((call for w in workers for call in w.over_limit), key=lambda c: -c[1])
    if over:
        shown = ", ".join(f"{took:.3f} s at {at:+.2f} s" for at, took in over[:4])
        row.notes.append(
            f"{len(over)} calls over the limit; slowest (start, from the fault's start): {shown}"
        )
    judge(row, back, len(over), run.limit)
    return row


def describe(row: Row) -> None:
    """Notes on what the row measured beyond the table's columns."""
    if row.slowest_raw > row.slowest + 0.001:
        row.notes.append(
            f"slowest call {row.slowest_raw:.3f} s with its time in the fallback, "
            f"{row.slowest:.3f} s without"
        )
    if row.signals:
        row.notes.append(
            f"{row.signals} records logged by the SIGALRM handler ({row.nested} inside "
            f"another logging call), slowest {row.signal_slowest:.3f} s"
        )
    if row.closes:
        shown = ", ".join(f"{seconds:.3f} s" for seconds in row.closes)
        row.notes.append(f"close() took {shown}")
    if row.exit is not None:
        row.notes.append(f"children ended at most {row.exit:.3f} s after their last record")
    if row.green:
        row.notes.append(f"a greenlet that only sleeps woke at most {row.stalled:.3f} s late")
    if row.spool:
        waited = "more than DRAIN_LIMIT" if row.drained is None else f"{row.drained:.3f} s"
        row.notes.append(
            f"spool: {row.spooled} spooled, {row.replayed} replayed by the logging processes "
            f"(their replayers took {waited} once the stream stopped), {row.left} left for "
            f"spool --replay; {row.twice} duplicates; {row.audits} audit events"
        )


def patched_by_gevent() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def check_counts(row: Row, genuine: int, handed: int, replayed_later: int = 0) -> None:
    """Notes where the handler's counters and summaries disagree with what
    the daemon and the fallback got (with a spool, the daemon also has what
    was replayed: then the replays' own counts)."""
    if row.spool:
        if row.audit_replayed != row.replayed + replayed_later:
            row.notes.append(
                f"audit events report {row.audit_replayed} replayed records in {row.audits} "
                f"events; the handlers replayed {row.replayed}, spool --replay {replayed_later}"
            )
        if row.spooled != row.replayed + replayed_later:
            row.notes.append(
                f"handlers counted spooled={row.spooled}; replayed: {row.replayed} by them, "
                f"{replayed_later} by spool --replay"
            )
    elif row.handler_delivered != genuine:
        row.notes.append(
            f"handler counted delivered={row.handler_delivered}; the daemon has {genuine} "
            f"records that are not also in the fallback"
        )
    if row.handler_undelivered != handed:
        row.notes.append(
            f"handler counted undelivered={row.handler_undelivered}; the fallback got {handed}"
        )
    if row.summarised != handed:
        row.notes.append(
            f"summary events report {row.summarised} undelivered records in {row.summaries} "
            f"events; the fallback got {handed}"
        )


def close_limit(handler: str, limit: float) -> float:
    """The most close() may take: one timeout for late replies, seven for
    the queue handler (five to drain the queue, the record being sent, late
    replies: see GlobusQueueHandler.close)."""
    return 7 * limit if handler == "queue" else limit


def judge_records(row: Row) -> None:
    """Lost or queued twice (without a spool); with a spool, not in the
    daemon's log at the end (duplicates are allowed: counted)."""
    if row.lost:
        row.failures.append(f"{row.lost} records lost")
    if row.twice and not row.spool:
        row.failures.append(f"{row.twice} records queued twice")
    if row.missing:
        row.failures.append(
            f"{row.missing} records not in the daemon's log at the end "
            f"({row.missing - row.lost} of them in the fallback)"
        )


def judge(row: Row, back: float | None, over_limit: int, limit: float) -> None:
    """Record why the row fails, if it does."""
    judge_records(row)
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
    if row.closes:
        first, *again = row.closes
        if first > close_limit(row.handler, limit):
            row.failures.append(f"close() took {first:.3f} s")
        if any(seconds > limit / 2 for seconds in again):
            row.failures.append(f"closing again took {max(again):.3f} s: it should be instant")
    if row.green and row.stalled > HUB_LIMIT * limit:
        row.failures.append(f"the gevent hub was blocked for {row.stalled:.3f} s")
    # What the queue handler promises for close(), plus the time an
    # interpreter takes to end, on a shared machine.
    if row.exit is not None and row.exit > close_limit("queue", limit) + 0.5:
        row.failures.append(f"a child took {row.exit:.3f} s to end after its last record")


# -- output ----------------------------------------------------------------

COLUMNS = (
    ("fault", 17),
    ("load", 10),
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
    ("replay", 6),
    ("left", 5),
    ("missing", 7),
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
        *((row.replayed, row.left, row.missing) if row.spool else ("-", "-", "-")),
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


def cells(fault: Fault, mine: list[Row]) -> tuple[str, str, str, str]:
    """The README's first four cells for one fault (its rows without a
    spool): the worst case over its loads, counts summed over them; the
    words from the fault, the numbers from the rows."""
    first = mine[0]
    during = sum(r.during for r in mine) or 1
    shares = [
        (name, sum(getattr(r, f"during_{name}") for r in mine) / during)
        for name in ("daemon", "fallback", "both")
    ]
    closes = [r.closes for r in mine if r.closes]
    exits = [r.exit for r in mine if r.exit is not None]
    resumes = [r.resume for r in mine if r.returned]
    values = {
        "slowest": f"{max(r.slowest for r in mine):.3f} s",
        "slowest_ms": f"{max(r.slowest for r in mine) * 1000:.0f}",
        "quick_ms": f"{max(r.quick for r in mine) * 1000:.0f}",
        "raw": f"{max(r.slowest_raw for r in mine):.3f} s",
        "blocked": first.blocked,  # under its first load (one thread, where it has one)
        "during": f"{fault.during:g}",
        "shares": ", ".join(f"{name} {percent(share)}" for name, share in shares if share),
        "lost": sum(r.lost for r in mine),
        "signals": sum(r.signals for r in mine),
        "nested": sum(r.nested for r in mine),
        "signal_slowest": f"{max(r.signal_slowest for r in mine):.3f} s",
        "close": f"{max(c[0] for c in closes):.3f} s" if closes else "-",
        "close2": f"{max(max(c[1:], default=0) for c in closes) * 1000:.1f} ms" if closes else "-",
        "exit": f"{max(exits):.2f} s" if exits else "-",
        "stalled_ms": f"{max(r.stalled for r in mine) * 1000:.0f}",
        "resume": f"{max((v for v in resumes if v is not None), default=0):.3f} s",
    }
    loads = ", ".join(r.load for r in mine)
    state = fault.state
    if fault.loads != ALL_LOADS:
        state = f"{state[:-1]}; {loads})" if state.endswith(")") else f"{state} ({loads})"
    if fault.call:
        call = fault.call.format(**values)
    elif any(r.blocked for r in mine):
        call = "{blocked} calls in {during} s blocked, for at most {slowest}".format(**values)
    else:
        call = "returns at once (slowest {slowest_ms} ms)".format(**values)
    ends = (fault.ends or "{shares}; lost {lost}").format(**values)
    failures = [f"{r.load}: {f}" for r in mine for f in r.failures]
    if failures:
        ends += "; **FAILED**: " + "; ".join(failures)
    if not resumes:
        back = "it never stopped"
    elif None in resumes:
        back = "did not resume"
    else:
        back = (fault.resumes or "within {resume}").format(**values)
    return state, call, ends, back


def spool_cell(fault: Fault, mine: list[Row]) -> str:
    """The README's spool column for one fault: its rows with a spool."""
    if not mine:
        return "not run"
    loads = ", ".join(r.load for r in mine)
    emitted, missing = sum(r.emitted for r in mine), sum(r.missing for r in mine)
    replayed, left = sum(r.replayed for r in mine), sum(r.left for r in mine)
    if missing:
        text = f"**{missing} of {emitted} not in the daemon's log** ("
        text += (
            f"{sum(r.fallback for r in mine)} in the fallback, lost {sum(r.lost for r in mine)})"
        )
    else:
        text = f"all {emitted} in the daemon's log"
    if replayed or left:
        text += f"; {replayed} replayed by the logging processes"
    if left:
        text += f", {left} left for the next one (sent by `spool --replay`)"
    text += f"; duplicates {sum(r.twice for r in mine)}"
    failures = [f for r in mine for f in r.failures]
    if failures:
        text += "; **FAILED**: " + "; ".join(failures)
    return f"{loads}: {text}"


def percent(share: float) -> str:
    if share < 0.001:
        return "under 0.1%"
    return "100%" if share == 1 else f"{share:.1%}"


def readme_table(rows: list[Row], faults: Sequence[Fault]) -> str:
    """The README's table, from the rows."""
    lines = [
        "| the daemon is ... | a logging call | the record ends up | delivery resumes "
        "| with a spool |",
        "| --- | --- | --- | --- | --- |",
    ]
    for fault in faults:
        mine = [row for row in rows if row.fault == fault.name and not row.spool]
        spooled = [row for row in rows if row.fault == fault.name and row.spool]
        if mine:
            cell = spool_cell(fault, spooled)
            lines.append("| {} | {} | {} | {} | {} |".format(*cells(fault, mine), cell))
    return "\n".join(lines)


def find_fault(name: str) -> Fault:
    for fault in FAULTS + EXTRA_FAULTS:
        if fault.name == name:
            return fault
    msg = f"no fault named {name!r}"
    raise SystemExit(msg)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the fault matrix.")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default: {DEFAULT_JSON}")
    parser.add_argument("--only", help="comma-separated fault names (default: all)")
    keys = ",".join(load.key for load in LOADS)
    parser.add_argument("--loads", help=f"comma-separated loads of {keys} (default: each fault's)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="the handler's timeout")
    parser.add_argument("--extra", action="store_true", help="also run the extra faults")
    parser.add_argument("--keep", type=Path, help="keep each daemon's files under this directory")
    parser.add_argument("--markdown", type=Path, help="print the README table of this JSON, only")
    parser.add_argument(
        "--spool",
        choices=("first", "all", "none", "only"),
        default="first",
        help="run each fault again with a spool under its first load (default), every "
        "load, none; or only those rows",
    )
    parser.add_argument("--child-row", help=argparse.SUPPRESS)  # see run_isolated
    parser.add_argument("--child-spool", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.markdown is not None:
        result = json.loads(args.markdown.read_text(encoding="utf-8"))
        names = list(dict.fromkeys(row["fault"] for row in result["rows"]))
        print(readme_table([Row(**row) for row in result["rows"]], [find_fault(n) for n in names]))
        return 0
    wanted = args.loads.split(",") if args.loads else None
    if args.child_row is not None:  # one row, here: the prelude has run
        fault = find_fault(args.child_row)
        (load,) = (ld for ld in LOADS if wanted and ld.key == wanted[0])
        row = run_row(replace_prelude(fault), load, args.timeout, args.keep, args.child_spool)
        print("ROW " + json.dumps(asdict(row)), flush=True)
        return 0
    # On SIGTERM, unwind (and so stop every daemon and child) as on Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    every = FAULTS + EXTRA_FAULTS if args.extra else FAULTS
    faults = [f for f in every if not args.only or f.name in args.only.split(",")]

    began = time.monotonic()
    print(f"handler timeout {args.timeout} s, one record every {PACE * 1000:.0f} ms per worker")
    print("with a spool: replay, left and missing (see the module's doc); else -")
    print(header(), flush=True)
    rows: list[Row] = []
    for fault in faults:
        loads = [
            ld for ld in LOADS if ld.key in fault.loads and (wanted is None or ld.key in wanted)
        ]
        runs = [(load, False) for load in loads] if args.spool != "only" else []
        spooled = {"first": loads[:1], "only": loads[:1], "all": loads, "none": []}[args.spool]
        for load, spool in runs + [(load, True) for load in spooled]:
            row = run_row(fault, load, args.timeout, args.keep, spool)
            rows.append(row)
            print(format_row(row), flush=True)
    elapsed = time.monotonic() - began

    print(f"\n{len(rows)} rows in {elapsed:.0f} s")
    for row in rows:
        name = f"{row.fault} / {row.load}{' / spool' if row.spool else ''}"
        for note in row.notes:
            print(f"  note  {name}: {note}")
        for failure in row.failures:
            print(f"  FAIL  {name}: {failure}")
    print(f"\n{readme_table(rows, faults)}\n")
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


def replace_prelude(fault: Fault) -> Fault:
    """The fault, to be run in this process (its prelude has run)."""
    return replace(fault, prelude="")


if __name__ == "__main__":
    sys.exit(main())
