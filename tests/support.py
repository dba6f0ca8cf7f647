"""Shared test helpers: unique addresses and a handler wired to a stand-in."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
import warnings
from typing import Callable

from globus.cwlogger import ENV_ADDRESS, GlobusSocketHandler
from globus.cwlogger.testing import LocalDaemon


def unique_address() -> str:
    """A fresh abstract address, so tests run in parallel and beside a daemon."""
    return "\0globus-cwlogger-test-" + uuid.uuid4().hex


def exchange(address: str, request: bytes) -> bytes:
    """Send one raw request to a listener and return its raw reply."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(address)
        sock.sendall(request)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply


def message_of(request: bytes) -> str:
    """The message of a raw request."""
    message = json.loads(request)["message"]
    assert isinstance(message, str)
    return message


def answered_once(test: unittest.TestCase, *replies: bytes, pause: float = 0.0) -> str:
    """The address of a listener (a thread, joined at cleanup) that reads
    one request and answers it with ``replies``, written ``pause`` seconds
    apart: a daemon of another make."""
    address = unique_address()
    listener = socket.socket(socket.AF_UNIX)
    test.addCleanup(listener.close)
    listener.bind(address)
    listener.listen(1)
    listener.settimeout(10)

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for reply in replies:
                conn.sendall(reply)
                time.sleep(pause)

    thread = threading.Thread(target=answer)
    thread.start()
    test.addCleanup(thread.join)
    return address


def summary_of(message: str) -> dict[str, object]:
    """The body of a summary event (and a failure if it is not one)."""
    body = json.loads(message)
    assert isinstance(body, dict), message
    assert body["subtype"] == "cwlogger.undelivered", message
    return body


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def run_python(
    code: str, address: str | None = None, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (with ``$GLOBUS_CWLOGGER_ADDRESS``
    pointing at ``address``, if given) and return what it did."""
    environment = {**os.environ, **env}
    if address is not None:
        environment[ENV_ADDRESS] = "@" + address[1:] if address.startswith("\0") else address
    return subprocess.run(
        [sys.executable, "-X", "dev", "-c", code],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def fork() -> int:
    """``os.fork()`` while threads run (a stand-in daemon's, the handler's):
    what a service that forks workers does.  Python warns of it from 3.12,
    and 3.15 raises the warning under ``-W error``; these children only log
    and leave through ``os._exit``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"This process .* is multi-threaded", DeprecationWarning)
        return os.fork()


def temporary_directory(test: unittest.TestCase) -> str:
    """A directory removed when ``test`` ends."""
    directory = tempfile.TemporaryDirectory()
    test.addCleanup(directory.cleanup)
    return directory.name


class ListHandler(logging.Handler):
    """Collects the records it is given (a fallback to assert on)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


class DaemonTestCase(unittest.TestCase):
    """A stand-in on a unique address, a handler pointed at it, a logger."""

    timeout = 0.5

    def daemon_address(self) -> str:
        return unique_address()

    def setUp(self) -> None:
        self.daemon = LocalDaemon(self.daemon_address()).start()
        self.addCleanup(self.daemon.stop)
        self.fallback = ListHandler()
        self.handler = self.make_handler()
        self.log = logging.getLogger(f"test.{uuid.uuid4().hex}")
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)
        self.log.addHandler(self.handler)

    def make_handler(self, **kwargs: object) -> GlobusSocketHandler:
        options: dict[str, object] = {
            "host": self.daemon.address,
            "timeout": self.timeout,
            "fallback": self.fallback,
        }
        options.update(kwargs)
        handler = GlobusSocketHandler(**options)  # type: ignore[arg-type]
        self.addCleanup(handler.close)
        return handler

    def timed_log(self, message: str) -> float:
        start = time.monotonic()
        self.log.info(message)
        return time.monotonic() - start

    def counts(self) -> tuple[int, int]:
        return self.handler.delivered, self.handler.undelivered


class PathAddress:
    """Mixed into a DaemonTestCase: the stand-in on a filesystem path."""

    def daemon_address(self) -> str:
        return os.path.join(temporary_directory(self), "cwlogs.sock")  # type: ignore[arg-type]
