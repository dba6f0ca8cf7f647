"""The command line: ``python -m globus.cwlogger {send,listen,demo}``."""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence

from . import protocol
from ._handler import DEFAULT_TIMEOUT, ENV_ADDRESS, GlobusSocketHandler
from .testing import Event, LocalDaemon

__all__ = ["main"]


def _default_address() -> str:
    return os.environ.get(ENV_ADDRESS) or protocol.DEFAULT_ADDRESS


def send(address: str, message: str, timeout: float) -> int:
    """Send one event; print the daemon's answer; 0 only if acknowledged."""
    where = protocol.display_address(address)
    request, cut = protocol.encode_event(message, int(time.time() * 1000))
    reply = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(request)
            while not reply.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        answer = protocol.decode_reply(reply)
    except (OSError, protocol.ProtocolError) as error:
        print(f"not acknowledged: {where}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if isinstance(answer, protocol.Error):
        print(f"refused by {where}: {answer.message}", file=sys.stderr)
        return 1
    note = f" (message cut by {cut} bytes to fit)" if cut else ""
    print(
        f"acknowledged by {where}{note}: queue_length={answer.queue_length} "
        f"queue_percent_full={answer.queue_percent_full}"
    )
    return 0


def listen(address: str, behaviour: str) -> int:
    """Stand in for the daemon on ``address``, printing each event as JSON."""

    def show(event: Event) -> None:
        print(json.dumps({"timestamp": event.timestamp, "message": event.message}), flush=True)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    daemon = LocalDaemon(address, behaviour=behaviour, on_event=show)  # type: ignore[arg-type]  # argparse checked it
    with daemon:
        print(
            f"listening on {protocol.display_address(daemon.address)}", file=sys.stderr, flush=True
        )
        while not stop.wait(0.2):
            pass
    return 0


DEMO_CONFIG = """\
version: 1
formatters:
  plain:
    format: '%(levelname)s %(name)s: %(message)s'
handlers:
  cloudwatch:
    class: globus.cwlogger.GlobusSocketHandler
    formatter: plain
    host: '{host}'
root:
  level: INFO
  handlers: [cloudwatch]
"""


def demo() -> int:
    """Log a few records through dictConfig to a private stand-in; show them."""
    with LocalDaemon() as daemon:
        # The same form a YAML file gives: backslash and zero, then the name.
        host = "\\0" + daemon.address[1:]
        config = {
            "version": 1,
            "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
            "handlers": {
                "cloudwatch": {
                    "class": "globus.cwlogger.GlobusSocketHandler",
                    "formatter": "plain",
                    "host": host,
                }
            },
            "root": {"level": "INFO", "handlers": ["cloudwatch"]},
        }
        print("logging.config.dictConfig from this YAML:\n")
        print(DEMO_CONFIG.format(host=host))
        logging.config.dictConfig(config)
        log = logging.getLogger("demo")
        log.info("A plain record")
        log.info("Non-ASCII: Grüße, 日本語, emoji \U0001f680")
        try:
            int("not a number")
        except ValueError:
            log.exception("A traceback stays one event")
        log.warning("An oversized record: %s", "x" * 300_000)
        events = daemon.wait_for(4)
        handler = logging.getLogger().handlers[0]
        logging.shutdown()
    print(f"The stand-in on {protocol.display_address(daemon.address)} received:\n")
    for event in events:
        text = event.message
        shown = text if len(text) <= 200 else f"{text[:80]}...{text[-40:]}"
        size = len(text.encode("utf-8"))
        print(f"- timestamp={event.timestamp} ({size} bytes)\n  {shown!r}")
    assert isinstance(handler, GlobusSocketHandler)
    print(
        f"\n{handler!r}: delivered={handler.delivered} undelivered={handler.undelivered} "
        f"truncated={handler.truncated}"
    )
    return 0 if handler.delivered == len(events) == 4 else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m globus.cwlogger",
        description="Talk to the CWLogger daemon, or stand in for it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p_send = commands.add_parser("send", help="send one event; exit 0 if acknowledged")
    p_send.add_argument("message")
    p_send.add_argument(
        "--address", default=None, help="default: $GLOBUS_CWLOGGER_ADDRESS or @org.globus.cwlogs"
    )
    p_send.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    p_listen = commands.add_parser(
        "listen", help="stand in for the daemon, print events as JSON lines"
    )
    p_listen.add_argument("--address", default=None)
    p_listen.add_argument(
        "--behaviour", default="ok", choices=["ok", "refuse", "hang", "close", "stall"]
    )
    commands.add_parser("demo", help="log a few records to a private stand-in and show them")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    try:
        address = protocol.parse_address(args.address or _default_address())
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    if args.command == "send":
        return send(address, args.message, args.timeout)
    return listen(address, args.behaviour)


if __name__ == "__main__":
    sys.exit(main())
