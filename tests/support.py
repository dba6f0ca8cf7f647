"""Shared test helpers: unique addresses and a handler wired to a stand-in."""

from __future__ import annotations

import logging
import socket
import unittest
import uuid

from globus.cwlogger import GlobusSocketHandler
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


class ListHandler(logging.Handler):
    """Collects the records it is given (a fallback to assert on)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class DaemonTestCase(unittest.TestCase):
    """A stand-in on a unique address, a handler pointed at it, a logger."""

    timeout = 0.5

    def setUp(self) -> None:
        self.daemon = LocalDaemon(unique_address()).start()
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
