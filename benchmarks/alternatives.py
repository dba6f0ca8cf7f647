"""The other ways to reach the daemon, measured against the same stand-in in one run.

    PYTHONPATH=src python benchmarks/alternatives.py [--rounds N] [--json OUT]

Each client sends a burst of 20000 records to ``listener.py`` in its own
process (bench.py's Listener): from 1 thread, from 8 threads, and from 4
forked processes (a pre-fork server's workers).  For each: the share of the
burst the listener acknowledged, the share the client itself admits it did
not deliver (counted, or handed to a fallback), what is left (lost without
a trace), and the wall time per record, closing the handlers included.

- ``GlobusSocketHandler`` and ``GlobusQueueHandler``, this package.
- ``2018-style client``: the daemon's original handler as PROTOCOL.md
  describes it, written here from that description (its code is not used):
  a socket with a timeout, connect, send, close without reading the reply;
  a record that meets an error is dropped silently.
- ``logging.handlers.SocketHandler``: the standard library's, given the
  daemon's address.  It sends length-prefixed pickles on one long-lived
  connection, which the daemon cannot decode.

watchtower (CloudWatch's own API over HTTPS, through boto3) and
fluent-logger (a fluentd server over TCP) do not talk to this daemon at all,
so they have no place in this comparison.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import (
    BURST,
    BURST_THREADS,
    HERE,
    Listener,
    _in_threads,
    _log,
    _logger,
    columns,
)

from globus.cwlogger import GlobusQueueHandler, GlobusSocketHandler

DEFAULT_JSON = HERE / "results" / "alternatives.json"


class Client2018(logging.Handler):
    """The daemon's 2018 handler, from PROTOCOL.md's account of it: a socket
    with a timeout (so connect fails at once with EAGAIN on a full backlog),
    the time of sending as the timestamp, the reply never read, and every
    error swallowed."""

    def __init__(self, address: str, timeout: float = 1.0) -> None:
        super().__init__()
        self.address, self.timeout = address, timeout

    def emit(self, record: logging.LogRecord) -> None:
        event = {"message": self.format(record), "timestamp": int(time.time() * 1000)}
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.address)
                sock.sendall(json.dumps(event).encode() + b"\n")
        except OSError:
            pass  # what made it fast, and what lost the records


def _admitted(handler: logging.Handler) -> int:
    """Records the client says it did not deliver (0 when it cannot say)."""
    if isinstance(handler, GlobusSocketHandler):
        return handler.undelivered
    if isinstance(handler, GlobusQueueHandler):
        return handler.target.undelivered
    return 0


def _send(make: Callable[[], logging.Handler], threads: int, records: int) -> int:
    """Log ``records`` through a new handler from ``threads`` threads, close
    it (a queue handler delivers what it holds first); return how many it
    admits it did not deliver."""
    handler = make()
    logger = _logger(handler, "globus.cwlogger.alternatives")
    try:
        _in_threads(threads, records, lambda count: _log(logger, count))
    finally:
        handler.close()
    return _admitted(handler)


def _in_processes(make: Callable[[], logging.Handler], processes: int) -> int:
    """:func:`_send` in forked processes (a pre-fork server's workers), each
    with a handler of its own; the sum of what they admit."""
    read, write = os.pipe()
    pids = []
    for i in range(processes):
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without the parent's cleanup
            code = 1
            try:
                os.close(read)
                admitted = _send(make, 1, BURST // processes + (i < BURST % processes))
                os.write(write, f"{admitted}\n".encode())
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(write)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if status != 0:
            msg = f"a sending process failed with status {status}"
            raise RuntimeError(msg)
    with os.fdopen(read) as reports:
        return sum(int(line) for line in reports)


def burst(
    listener: Listener, make: Callable[[], logging.Handler], processes: int, threads: int
) -> dict[str, float]:
    """One burst: the shares acknowledged, admitted and lost, and the wall
    time per record (sending and closing the handlers)."""
    before = listener.acknowledged()
    start = time.perf_counter()
    admitted = _send(make, threads, BURST) if processes == 1 else _in_processes(make, processes)
    seconds = time.perf_counter() - start
    acked = listener.acknowledged() - before
    return {
        "acknowledged": acked / BURST,
        "admitted": admitted / BURST,
        "lost": max(0, BURST - acked - admitted) / BURST,
        "us_per_record": seconds / BURST * 1e6,
    }


#: (processes, threads in each) of a burst.
LOADS = ((1, 1), (1, BURST_THREADS), (4, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="bursts per client (default 3)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    args = parser.parse_args(argv)

    listener = Listener()
    address = listener.address
    clients: dict[str, Callable[[], logging.Handler]] = {
        "GlobusSocketHandler": lambda: GlobusSocketHandler(address, fallback="off"),
        "GlobusQueueHandler": lambda: GlobusQueueHandler(host=address, fallback="off"),
        "2018-style client": lambda: Client2018(address),
        "stdlib SocketHandler": lambda: logging.handlers.SocketHandler(address, None),
    }
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for round_ in range(args.rounds):
            names = list(clients) if round_ % 2 == 0 else list(clients)[::-1]
            for processes, threads in LOADS:
                for name in names:
                    load = f"{processes} process" if processes == 1 else f"{processes} processes"
                    key = f"{name}, {load} x {threads} thread{'s' if threads > 1 else ''}"
                    for what, value in burst(listener, clients[name], processes, threads).items():
                        results.setdefault(key, {}).setdefault(what, []).append(value)
    finally:
        listener.stop()

    rows = [
        ("client, load", "acknowledged (worst)", "admitted", "lost silently", "us/record (wall)")
    ]
    for key, values in results.items():
        rows.append(
            (
                key,
                f"{min(values['acknowledged']) * 100:.2f}%",
                f"{max(values['admitted']) * 100:.2f}%",
                f"{max(values['lost']) * 100:.2f}%",
                f"{statistics.median(values['us_per_record']):.1f} "
                f"[{min(values['us_per_record']):.1f}-{max(values['us_per_record']):.1f}]",
            )
        )
    sys.stdout.write(
        "\n".join(columns(rows)) + f"\n{BURST} records per burst, {args.rounds} rounds\n"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"burst": BURST, "rounds": args.rounds, "results": results}))
    sys.stdout.write(f"results: {args.json}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
