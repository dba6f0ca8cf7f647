"""A consumer's view of the public API: type-checked (mypy, pyright), never run.

With ``warn_unused_ignores``, the check fails the day a misspelled name stops
being a type error.
"""

from __future__ import annotations

import logging
import logging.handlers

import globus.cwlogger
from globus.cwlogger import (
    GlobusQueueHandler,
    GlobusSocketHandler,
    JSONFormatter,
    cloudwatch_handler,
    emf,
    protocol,
)
from globus.cwlogger.testing import Event, LocalDaemon

handler: GlobusSocketHandler = cloudwatch_handler
also: GlobusSocketHandler = globus.cwlogger.cloudwatch_handler
as_base: logging.handlers.SocketHandler = cloudwatch_handler
counts: tuple[int, int, int] = (handler.delivered, handler.undelivered, handler.truncated)
timeout: float = handler.timeout
more: tuple[int, int, int] = (handler.restamped, handler.spooled, handler.replayed)
spool: str | None = handler.spool
version: str = globus.cwlogger.__version__

custom = GlobusSocketHandler(host="@org.globus.cwlogs", timeout=0.5, fallback="off")
to_file = GlobusSocketHandler(fallback=logging.FileHandler("/dev/null"))
request, cut = protocol.encode_event("message", 1764090000123)
reply: protocol.Reply = protocol.decode_reply(b'{"status": "ok"}')
stamped: tuple[int, bool] = protocol.stamp(1764090000.123, 1764090001.0)

queued = GlobusQueueHandler("@org.globus.cwlogs", timeout=2, spool="/var/spool/cw", senders=2)
target: GlobusSocketHandler = queued.target
children: str = queued.children
formatter: logging.Formatter = JSONFormatter(fields={"time": "@timestamp", "stack": None})
metrics: dict[str, object] = emf("MyService", {"Latency": (12.5, "Milliseconds")})

with LocalDaemon() as daemon:
    address: str = daemon.address
    events: list[Event] = daemon.wait_for(1)

globus.cwlogger.cloudwatch_handlr  # type: ignore[attr-defined]  # noqa: B018
GlobusSocketHandler(timeout="1")  # type: ignore[arg-type]
GlobusSocketHandler(port=9000)  # type: ignore[arg-type]
GlobusSocketHandler(fallback=True)  # type: ignore[arg-type]
GlobusQueueHandler(timeut=2)  # type: ignore[call-arg]
GlobusQueueHandler(children="thread")  # type: ignore[arg-type]
