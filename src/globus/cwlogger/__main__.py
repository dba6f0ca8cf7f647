"""The command line: ``python -m globus.cwlogger {send,status,spool,listen,demo}``.

Each subcommand is a parser (built in :func:`_parser`) and a function that
takes the parsed arguments and returns the exit status: 0 for success, 1 when
the daemon did not do what was asked, 2 for bad input.  Bad input is one line
on standard error, never a traceback: every option goes through the same
checks as the handler's (``_options``, ``protocol.parse_address``).
"""

from __future__ import annotations

import _socket
import argparse
import json
import logging
import logging.config
import os
import pwd
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

from . import _connect, protocol
from ._handler import DEFAULT_TIMEOUT, GlobusSocketHandler
from ._options import check_timeout, check_uid
from .testing import Event, LocalDaemon

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn, TypeVar

    T = TypeVar("T")
    V = TypeVar("V")

__all__ = ["main"]

#: ``status`` calls a daemon whose queue is fuller than this (in percent)
#: unhealthy.  It flushes about once a second and takes about 20000 events a
#: second (PROTOCOL.md), so a daemon whose uploads succeed stays far below.
UNHEALTHY_PERCENT_FULL = 50.0


class _UsageError(Exception):
    """Bad input found after parsing (an empty message, a bad environment)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, unlike argparse's usage-then-error.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _Version(argparse.Action):
    """``--version``: reads the installed metadata only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from . import __version__

        print(f"globus-cw-loghandler {__version__}")
        parser.exit()


def _checked(check: Callable[[V], T], value: V) -> T:
    try:
        return check(value)
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _number(parse: Callable[[str], object], text: str) -> object:
    try:
        return parse(text)
    except ValueError:
        return text  # then the check says what the option must be


def _timeout(text: str) -> float:
    return _checked(check_timeout, _number(float, text))


def _uid(text: str) -> int | None:
    return _checked(check_uid, _number(int, text))


def _address(text: str) -> str:
    return _checked(protocol.parse_address, text)


def _addresses(given: str | None) -> tuple[str, ...]:
    if given is not None:
        return (given,)
    try:
        return _connect.default_addresses()  # where the handler looks
    except ValueError as error:
        msg = f"${_connect.ENV_ADDRESS}: {error}"
        raise _UsageError(msg) from None


def _show(addresses: Sequence[str]) -> str:
    # As ss shows them; lone surrogates (from undecodable bytes) escaped.
    shown = " or ".join(protocol.display_address(address) for address in addresses)
    return shown.encode("utf-8", "backslashreplace").decode("utf-8")


def _why(error: BaseException, timeout: float) -> str:
    if _connect.is_timeout(error):
        return f"no reply within {timeout} s"
    if isinstance(error, BlockingIOError):
        return f"the daemon's listen backlog stayed full for {timeout} s"
    return f"{type(error).__name__}: {error}"


def _peer(sock: _socket.socket) -> tuple[str, int, int]:
    """The address ``sock`` is connected to, and the listener's pid and uid."""
    name = sock.getpeername()
    address = name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name
    return (_show([address]), *_connect.peer(sock))


class _Sender:
    """Sends one request per call as the handler does (a connection each),
    returning the reply or raising OSError or ProtocolError, as the spool's
    replayer wants; it remembers the listener it reached and why the last
    request was not acknowledged."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.addresses: tuple[str, ...] = _addresses(args.address)
        self.timeout: float = args.timeout
        self.uid: int | None = args.daemon_uid
        #: The listener the last request reached (None if none), its pid and uid.
        self.peer: tuple[str, int, int] | None = None
        #: The last listener any request reached.
        self.reached: str | None = None
        #: Why the last request got no reply (not saying where).
        self.why = ""
        #: Why the last request was not acknowledged, in a sentence.
        self.failure = ""

    def __call__(self, request: bytes) -> protocol.Reply:
        deadline = time.monotonic() + self.timeout
        self.peer, shown = None, _show(self.addresses)
        try:
            sock = _connect.connect(self.addresses, deadline, self.uid)
        except (ConnectionRefusedError, FileNotFoundError) as error:
            self.why = self.failure = f"nothing listens on {shown}: {_why(error, self.timeout)}"
            raise
        except OSError as error:  # a full backlog, another uid, no permission
            self.why = self.failure = f"cannot connect to {shown}: {_why(error, self.timeout)}"
            raise
        try:
            self.peer = _peer(sock)
            self.reached = self.peer[0]
            reply = _connect.exchange(sock, request, deadline - time.monotonic())
            answer = protocol.decode_reply(reply)
        except (OSError, protocol.ProtocolError) as error:
            self.why = _why(error, self.timeout)
            self.failure = f"{self.peer[0] if self.peer else shown}: {self.why}"
            raise
        finally:
            sock.close()
        if isinstance(answer, protocol.Error):
            self.failure = f"refused by {self.reached}: {answer.message}"
        return answer


def _ask(
    args: argparse.Namespace, request: bytes
) -> tuple[tuple[str, int, int] | None, protocol.Reply | str]:
    """One request, as the handler makes it: the listener it reached (None if
    none), and the reply, or why there is none."""
    sender = _Sender(args)
    try:
        reply = sender(request)
    except (OSError, protocol.ProtocolError):
        return sender.peer, sender.why
    return sender.peer, reply


def _health(answer: protocol.Ok) -> str:
    return f"queue_length={answer.queue_length} queue_percent_full={answer.queue_percent_full}"


def _read_stdin() -> str:
    if sys.stdin is None:
        msg = "standard input is closed"
        raise _UsageError(msg)
    try:
        data = sys.stdin.buffer.read()
    except OSError as error:
        msg = f"cannot read standard input: {error}"
        raise _UsageError(msg) from None
    # Undecodable bytes become U+FFFD, as the handler repairs lone surrogates.
    text = data.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\n") else text  # what echo added


def send(args: argparse.Namespace) -> int:
    """Send one event; print the daemon's answer; 0 only if acknowledged."""
    message = _read_stdin() if args.message == "-" else args.message
    if not message:
        msg = "the message is empty (the daemon acknowledges it, but can never upload it)"
        raise _UsageError(msg)
    request, cut = protocol.encode_event(message, int(time.time() * 1000))
    peer, answer = _ask(args, request)
    if peer is None or isinstance(answer, str):
        where = f"{peer[0]}: " if peer else ""
        print(f"not acknowledged: {where}{answer}", file=sys.stderr)
        return 1
    if isinstance(answer, protocol.Error):
        print(f"refused by {peer[0]}: {answer.message}", file=sys.stderr)
        return 1
    note = f" (message cut by {cut} bytes to fit)" if cut else ""
    print(f"acknowledged by {peer[0]}{note}: {_health(answer)}")
    return 0


def status(args: argparse.Namespace) -> int:
    """Who listens where, and the daemon's health from a probe event."""
    probe = {"type": "audit", "subtype": "cwlogger.status", "pid": os.getpid(), "uid": os.getuid()}
    request, _ = protocol.encode_event(json.dumps(probe), int(time.time() * 1000))
    peer, answer = _ask(args, request)
    if peer is None:
        print(answer)
        return 1
    where, pid, uid = peer
    try:
        user = f" ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        user = ""
    print(f"{where}: listening, pid {pid}, uid {uid}{user}")
    if isinstance(answer, str):
        print(f"health unknown: {answer}")
        return 1
    if isinstance(answer, protocol.Error):
        print(f"health unknown: the probe was refused: {answer.message}")
        return 1
    if answer.queue_percent_full >= UNHEALTHY_PERCENT_FULL:
        print(f"unhealthy: {_health(answer)} (at least {UNHEALTHY_PERCENT_FULL}% full)")
        return 1
    print(f"healthy: {_health(answer)}")
    return 0


def listen(args: argparse.Namespace) -> int:
    """Stand in for the daemon on ``address``, printing each event as JSON."""
    stop, broken = threading.Event(), threading.Event()

    def show(event: Event) -> None:
        try:
            print(json.dumps({"timestamp": event.timestamp, "message": event.message}), flush=True)
        except BrokenPipeError:  # as with `listen | head -1`; this is the serving thread
            broken.set()
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    where = _show([args.address])
    daemon = LocalDaemon(args.address, behaviour=args.behaviour, on_event=show)
    try:
        daemon.start()
    except OSError as error:
        print(f"cannot listen on {where}: {error.strerror or error}", file=sys.stderr)
        return 1
    try:
        print(f"listening on {where}", file=sys.stderr, flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        daemon.stop()
    if broken.is_set():
        raise BrokenPipeError
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


def demo(args: argparse.Namespace) -> int:
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


def spool(args: argparse.Namespace) -> int:
    """What a spool directory holds; with ``--replay``, send it now."""
    from . import _cli_spool  # a spool's machinery, loaded only for this command

    try:
        path = _cli_spool.check(args.directory)
        if args.replay:
            code, lines = _cli_spool.replay_now(path, _Sender(args))
        else:
            code, lines = 0, _cli_spool.show(path)
    except _cli_spool.BadDirectory as error:
        raise _UsageError(str(error)) from None
    print("\n".join(lines))
    return code


ADDRESS_HELP = (
    "the daemon's address: @name or \\0name (abstract), or an absolute path; default: "
    f"${_connect.ENV_ADDRESS}, else @org.globus.cwlogs, then {_connect.NEWER_DAEMON_PATH}"
)


def _add_request_options(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that send a request, as the handler has them."""
    parser.add_argument("--address", type=_address, help=ADDRESS_HELP)
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULT_TIMEOUT,
        help="the most seconds to wait for the reply (default: %(default)s)",
    )
    parser.add_argument(
        "--daemon-uid",
        type=_uid,
        metavar="UID",
        help="send only to a listener running as this uid (default: any)",
    )


def _parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Talk to the CWLogger daemon, or stand in for it.",
        epilog="Exit status: 0 on success, 1 when the daemon did not do what was asked, "
        "2 for bad input.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action=_Version, help="show the installed version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_send = commands.add_parser(
        "send", help="send one event; exit 0 only if acknowledged", allow_abbrev=False
    )
    p_send.add_argument(
        "message",
        metavar="MESSAGE",
        help="the event's message; - reads it from standard input "
        "(one event, newlines kept, but the one that ends the input)",
    )
    _add_request_options(p_send)
    p_send.set_defaults(run=send)

    p_status = commands.add_parser(
        "status",
        help="whether the daemon listens, as which uid, and its queue's health",
        description="Show what listens on the daemon's address (its pid and uid), and the "
        "daemon's health from the reply to a probe. The probe is a real, small event "
        '({"type": "audit", "subtype": "cwlogger.status", ...}), since only an '
        "acknowledgement carries the health. Exit status 0 when the daemon acknowledged it "
        f"with its queue less than {UNHEALTHY_PERCENT_FULL:g}% full.",
        allow_abbrev=False,
    )
    _add_request_options(p_status)
    p_status.set_defaults(run=status)

    p_listen = commands.add_parser(
        "listen",
        help="stand in for the daemon, print events as JSON lines",
        allow_abbrev=False,
    )
    p_listen.add_argument(
        "--address",
        type=_address,
        required=True,
        help="where to listen: @name or \\0name (abstract), or an absolute path",
    )
    p_listen.add_argument(
        "--behaviour",
        default="ok",
        choices=["ok", "refuse", "hang", "close", "stall"],
        help="ok: acknowledge; refuse: reply with an error (a full queue); hang: never reply; "
        "close: hang up without a reply; stall: accept nothing, so the backlog fills "
        "(default: %(default)s)",
    )
    p_listen.set_defaults(run=listen)

    p_spool = commands.add_parser(
        "spool",
        help="what a spool directory holds; --replay sends it to the daemon now",
        description="Show what the spool directory DIR holds: the records not replayed yet "
        "(their bytes, the oldest), the processes that spooled them (running: one still "
        "holds its segment and replays it itself; gone: none does, so the next process "
        "with this spool, or --replay, sends them), what was quarantined, and what was "
        "dropped at the bound. With --replay, send them to the daemon now, paced and "
        "counted as a handler's replayer does, then one audit event "
        '({"type": "audit", "subtype": "cwlogger.spool", ...}); exit status 0 when '
        "nothing is left.",
        allow_abbrev=False,
    )
    p_spool.add_argument(
        "directory", metavar="DIR", help="the spool's directory (spool=DIR, $GLOBUS_CWLOGGER_SPOOL)"
    )
    p_spool.add_argument(
        "--replay", action="store_true", help="send what it holds to the daemon now"
    )
    _add_request_options(p_spool)
    p_spool.set_defaults(run=spool)

    p_demo = commands.add_parser(
        "demo", help="log a few records to a private stand-in and show them", allow_abbrev=False
    )
    p_demo.set_defaults(run=demo)
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the command line; return the exit status.  ``prog`` defaults to
    the name it was started by (``globus-cwlogger`` for the installed one)."""
    parser = _parser(prog)
    try:
        args = parser.parse_args(argv)
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except SystemExit as stop:  # argparse: --help, --version, bad input
        return stop.code if isinstance(stop.code, int) else 2
    except _UsageError as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # standard output closed early, as by `| head -1`
        # Nothing more can be written there; spare the flush at exit its error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main(prog="python -m globus.cwlogger"))
