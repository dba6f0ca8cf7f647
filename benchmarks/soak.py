"""A soak: many records through one handler to a daemon in its own process.

    PYTHONPATH=src python benchmarks/soak.py [--records 200000] [--json OUT]

Reports records per second, the growth of this process's resident memory
after a warm-up, and its open file descriptors before and after.  Exit
status 1 when a record is not acknowledged, memory grew by 1 MiB or more
after the warm-up, or a file descriptor was left open.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from globus.cwlogger import GlobusSocketHandler

HERE = Path(__file__).resolve().parent
FAULTD = HERE / "faultd.py"
DEFAULT_JSON = HERE / "results" / "soak.json"
MAX_GROWTH = 1 << 20  # bytes of resident memory after the warm-up


def resident_bytes() -> int:
    """VmRSS of this process, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    msg = "no VmRSS in /proc/self/status"
    raise RuntimeError(msg)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class CountingFallback(logging.Handler):
    """Counts what the handler could not deliver."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


@dataclass
class Soak:
    records: int
    warmup: int
    seconds: float = 0.0
    per_second: float = 0.0
    rss_after_warmup: int = 0
    rss_at_end: int = 0
    growth: int = 0
    fds_before: int = 0
    fds_after_warmup: int = 0
    fds_at_end: int = 0
    fds_after_close: int = 0
    #: The same daemon's pace with a bare client (connect, send, read, close),
    #: so the handler's own cost per record can be told from the daemon's.
    bare_per_second: float = 0.0
    handler_us_per_record: float = 0.0
    delivered: int = 0
    undelivered: int = 0
    fallback: int = 0
    acknowledged: int = 0
    #: Requests whose client hung up before the daemon's reply.
    hangups: int = 0
    failures: list[str] = field(default_factory=list)


def start_daemon(address: str, workdir: Path) -> subprocess.Popen[str]:
    command = [sys.executable, str(FAULTD), "--address", "@" + address[1:], "--head", "40"]
    command += ["--events", str(workdir / "events.jsonl")]
    command += ["--journal", str(workdir / "journal.jsonl"), "--parent", str(os.getpid())]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    if not process.stdout.readline().startswith("ready"):
        process.kill()
        msg = "faultd did not start"
        raise RuntimeError(msg)
    return process


def bare_client(address: str, count: int) -> float:
    """Records per second with no handler at all: the daemon's own pace."""
    line = "2026-01-01 00:00:00,000 INFO soak.bare: soak record 0 of a steady stream, user=alice"
    request = json.dumps({"message": line, "timestamp": int(time.time() * 1000)}).encode() + b"\n"
    began = time.perf_counter()
    for _ in range(count):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(address)
            sock.sendall(request)
            reply = sock.recv(512)
            while not reply.endswith(b"\n"):
                reply += sock.recv(512)
    return count / (time.perf_counter() - began)


def log_many(logger: logging.Logger, first: int, count: int) -> None:
    for n in range(first, first + count):
        logger.info("soak record %d of a steady stream, user=%s", n, "alice")


def soak(records: int, warmup: int, workdir: Path) -> Soak:
    result = Soak(records, warmup)
    address = "\0globus-cwlogger-soak-" + uuid.uuid4().hex
    daemon = start_daemon(address, workdir)
    try:
        gc.collect()
        result.fds_before = open_fds()
        fallback = CountingFallback()
        handler = GlobusSocketHandler(address, timeout=1.0, fallback=fallback)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger(f"soak.{uuid.uuid4().hex}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)

        log_many(logger, 0, warmup)
        gc.collect()
        result.rss_after_warmup = resident_bytes()
        result.fds_after_warmup = open_fds()

        began = time.perf_counter()
        log_many(logger, warmup, records - warmup)
        result.seconds = time.perf_counter() - began
        result.per_second = (records - warmup) / result.seconds

        gc.collect()
        result.rss_at_end = resident_bytes()
        result.fds_at_end = open_fds()
        result.growth = result.rss_at_end - result.rss_after_warmup
        result.delivered, result.undelivered = handler.delivered, handler.undelivered
        result.fallback = fallback.count
        logger.removeHandler(handler)
        handler.close()
        result.fds_after_close = open_fds()
        result.bare_per_second = bare_client(address, min(20_000, records))
        result.handler_us_per_record = 1e6 * (1 / result.per_second - 1 / result.bare_per_second)
    finally:
        daemon.terminate()
        daemon.wait(10)
        if daemon.stdout is not None:
            daemon.stdout.close()
    with open(workdir / "events.jsonl", encoding="utf-8") as lines:
        soaked = (json.loads(line)["message"] for line in lines)
        result.acknowledged = sum(1 for message in soaked if "soak.bare" not in message)
    with open(workdir / "journal.jsonl", encoding="utf-8") as lines:
        result.hangups = sum(1 for line in lines if json.loads(line)["kind"] == "hangup")
    judge(result)
    return result


def judge(result: Soak) -> None:
    if result.acknowledged != result.records or result.fallback or result.undelivered:
        result.failures.append(
            f"{result.records} records, the daemon acknowledged {result.acknowledged}, "
            f"{result.fallback} went to the fallback"
        )
    if result.hangups:
        result.failures.append(f"{result.hangups} requests hung up before the daemon's reply")
    if result.growth >= MAX_GROWTH:
        result.failures.append(f"resident memory grew by {result.growth} bytes after the warm-up")
    if result.fds_at_end != result.fds_after_warmup or result.fds_after_close != result.fds_before:
        result.failures.append(
            f"open file descriptors: {result.fds_before} before, {result.fds_after_warmup} "
            f"after warm-up, {result.fds_at_end} at the end, {result.fds_after_close} after close"
        )


def show(result: Soak) -> None:
    mib = 1 << 20
    rows = (
        ("records", f"{result.records} ({result.warmup} of them warm-up)"),
        ("acknowledged", f"{result.acknowledged} (handler: {result.delivered})"),
        ("fallback", f"{result.fallback}"),
        ("hung up before reply", f"{result.hangups}"),
        ("records per second", f"{result.per_second:,.0f} (after warm-up, {result.seconds:.1f} s)"),
        (
            "same daemon, bare client",
            f"{result.bare_per_second:,.0f} per second: the handler adds "
            f"{result.handler_us_per_record:.0f} us per record",
        ),
        (
            "resident memory",
            f"{result.rss_after_warmup / mib:.2f} MiB after warm-up, "
            f"{result.rss_at_end / mib:.2f} MiB at the end",
        ),
        ("growth after warm-up", f"{result.growth / 1024:+.0f} KiB (limit {MAX_GROWTH >> 10} KiB)"),
        (
            "open file descriptors",
            f"{result.fds_before} before, {result.fds_after_warmup} after warm-up, "
            f"{result.fds_at_end} at the end, {result.fds_after_close} after close",
        ),
        ("result", "FAIL: " + "; ".join(result.failures) if result.failures else "ok"),
    )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Soak one handler with many records.")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--warmup", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default: {DEFAULT_JSON}")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind: stop the daemon
    if not 0 < args.warmup < args.records:
        parser.error("--warmup must be between 0 and --records")
    with tempfile.TemporaryDirectory(prefix="cwl-soak-") as workdir:
        result = soak(args.records, args.warmup, Path(workdir))
    show(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {"python": platform.python_version(), "cpus": os.cpu_count(), **asdict(result)}
    args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.json}")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
