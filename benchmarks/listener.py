"""A minimal stand-in for the CWLogger daemon, run as its own process by the
benchmarks (stdlib only; it does not import globus.cwlogger)::

    python benchmarks/listener.py @some-abstract-name [--count-file PATH]

Like the daemon, it answers one connection at a time: read until the buffer
ends with a newline, decode it as one JSON document, reply with one line,
close.  It refuses what the daemon refuses (with the same kind of error
reply) and hangs up without a reply on what the daemon cannot decode.

The request ``{"control": "count"}`` is answered with the counts so far,
``{"status": "ok", "acknowledged": N, "refused": M}``, and is not counted.
Because requests are served in order, that answer includes every event
acknowledged before it.  On SIGTERM or SIGINT the counts are printed and,
with ``--count-file``, written there as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

# The daemon's queue is never full here: this stand-in keeps nothing.
_OK = b'{"status": "ok", "health": {"queue_length": 0, "queue_percent_full": 0.0}}\n'
_MAX_REQUEST = 262144  # UTF-8 bytes of the message + 26, as the daemon counts
_BACKLOG = 1024  # the daemon's


class _Counts:
    def __init__(self) -> None:
        self.acknowledged = 0
        self.refused = 0

    def as_json(self) -> str:
        return json.dumps({"acknowledged": self.acknowledged, "refused": self.refused})


def _error(exception: Exception) -> bytes:
    return json.dumps({"status": "error", "message": repr(exception)}).encode() + b"\n"


def _answer(request: bytes, counts: _Counts) -> bytes | None:
    """The reply to one request, or None to hang up without one."""
    try:
        body = json.loads(request)
    except ValueError:  # invalid JSON or UTF-8, an empty line, two lines
        return None
    if not isinstance(body, dict):
        return None
    if body.get("control") == "count":
        return counts.as_json().replace("{", '{"status": "ok", ', 1).encode() + b"\n"
    try:
        message, timestamp = body["message"], body["timestamp"]
        if not isinstance(message, str):
            raise TypeError("message must be a str")  # noqa: TRY301, EM101
        if len(message.encode("utf-8")) + 26 > _MAX_REQUEST:
            raise ValueError("message too large")  # noqa: TRY301, EM101
        if timestamp is not None:
            if type(timestamp) is not int:
                raise TypeError("timestamp must be an int")  # noqa: TRY301, EM101
            if timestamp < 0:
                raise ValueError("Event.timestamp must be non-negative")  # noqa: TRY301, EM101
    except Exception as exception:  # the daemon replies with its repr
        counts.refused += 1
        return _error(exception)
    counts.acknowledged += 1
    return _OK


def serve(server: socket.socket, counts: _Counts) -> None:
    """Answer connections one at a time, forever.

    No timeout on the accepted connection: the handler under test never
    leaves a connection open without a whole request, and a per-connection
    setsockopt would slow the floor the benchmarks compare against.
    """
    accept, answer = server.accept, _answer
    while True:
        conn, _ = accept()
        try:
            chunk = conn.recv(65536)
            if chunk.endswith(b"\n"):
                request = chunk
            else:
                parts = [chunk]
                while chunk and not chunk.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    parts.append(chunk)
                request = b"".join(parts) if chunk else b""
            reply = answer(request, counts) if request else None
            if reply is not None:
                conn.sendall(reply)
        except OSError:
            pass  # the client left; the daemon logs it and goes on
        finally:
            conn.close()


def _address(text: str) -> str:
    return "\0" + text[1:] if text.startswith("@") else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("address", help="'@name' (abstract) or an absolute path")
    parser.add_argument("--count-file", type=Path, help="write the counts here at exit")
    args = parser.parse_args(argv)
    address = _address(args.address)
    counts = _Counts()

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(address)
        server.listen(_BACKLOG)
        serve(server, counts)
    finally:
        server.close()
        if not address.startswith("\0"):
            with contextlib.suppress(OSError):
                os.unlink(address)
        if args.count_file is not None:
            args.count_file.write_text(counts.as_json() + "\n")
        sys.stdout.write(counts.as_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
