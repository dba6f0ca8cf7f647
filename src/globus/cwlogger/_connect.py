"""Reaching the daemon: connect, one request's round trip, all in a deadline.

How the waits work, and why:

- The socket is non-blocking from its creation.  An ``AF_UNIX`` connect then
  succeeds at once, or fails at once: refused or missing (no daemon, nothing
  to wait for), or ``EAGAIN`` when the daemon's listen backlog is full.  Only
  that last one is worth waiting for: the connect is retried every
  :data:`_SLICE` seconds until the deadline (``time.sleep`` retries itself
  after a signal, PEP 475, and yields under gevent and eventlet).
- The request is sent at once (a request of up to 200 KiB fits the socket's
  buffer), with ``MSG_NOSIGNAL`` so that a daemon hanging up mid-request can
  never raise ``SIGPIPE``, even where a program restored its default action.
- The reply is awaited with the socket's own timeout (``settimeout``), the
  time left to the deadline.  CPython retries a wait that a signal
  interrupted with the time that is left (PEP 475); gevent's and eventlet's
  sockets implement the same timeout by yielding to their hub.  No ``poll``
  or ``select`` of ours: eventlet removes ``select.poll``, and ``select``
  cannot take a descriptor above 1023.
- Under gevent or eventlet ``socket.socket`` is their class, and it is used;
  otherwise the C class ``_socket.socket`` is, which skips the Python
  wrapper's cost on every connection.
"""

from __future__ import annotations

import _socket
import errno
import os
import socket
import sys
import time

from . import protocol

TYPE_CHECKING = False  # without importing typing: see _typing.py
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "ENV_ADDRESS",
    "NEWER_DAEMON_PATH",
    "connect",
    "default_addresses",
    "exchange",
    "is_timeout",
    "peer",
    "round_trip",
]

#: Replaces the default addresses when a handler is built without ``host``.
ENV_ADDRESS = "GLOBUS_CWLOGGER_ADDRESS"

#: Where newer daemons (on uvloop, which has no abstract sockets) listen.
NEWER_DAEMON_PATH = "/tmp/org.globus.cwlogs"

_SLICE = 0.005  # seconds between two connects while the listen backlog is full
_UCRED = 12  # bytes of struct ucred: pid, uid, gid, each 32 bits
_UNIX = socket.AF_UNIX
_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_NOSIGNAL = socket.MSG_NOSIGNAL
_SOON = 1e-9  # seconds: the shortest wait settimeout takes (0 would not wait)
# The standard library's class, unless gevent or eventlet patched it in first.
_STDLIB_SOCKET = socket.socket if socket.socket.__module__ == "socket" else None
# Refused or missing: nothing listens there, so the next address is tried.
_ABSENT = (ConnectionRefusedError, FileNotFoundError)


def is_timeout(error: BaseException) -> bool:
    """Whether ``error`` is a wait that ran out (``socket.timeout`` is not a
    ``TimeoutError`` before Python 3.10, nor under every green library)."""
    return isinstance(error, (TimeoutError, socket.timeout))


def default_addresses() -> tuple[str, ...]:
    """Where to look for the daemon when no address is given: the address in
    ``$GLOBUS_CWLOGGER_ADDRESS`` (parsed: ValueError if it is not one), else
    the abstract name and then the newer daemon's path, tried in that order
    on every connection (a daemon may move between them across a restart)."""
    given = os.environ.get(ENV_ADDRESS)
    if given:
        return (protocol.parse_address(given),)
    return (protocol.DEFAULT_ADDRESS, NEWER_DAEMON_PATH)


def connect(addresses: Sequence[str], deadline: float, uid: int | None = None) -> _socket.socket:
    """A socket connected to the first of ``addresses`` that something
    listens on, waiting for room in a full listen backlog until ``deadline``
    (``time.monotonic()``); with ``uid``, only to a listener of that uid.

    Raises what the first address raised when none listens, BlockingIOError
    when the backlog stays full, PermissionError for another uid.
    """
    green = socket.socket is not _STDLIB_SOCKET
    first: OSError | None = None
    for address in addresses:
        sock = socket.socket(_UNIX, _STREAM) if green else _socket.socket(_UNIX, _STREAM)
        try:
            if green:
                sock.settimeout(0.0)  # their connect would wait, unbounded, on EAGAIN
            try:
                sock.connect(address)
            except BlockingIOError:  # EAGAIN: the daemon's listen backlog is full
                _wait_for_room(sock, address, deadline)
            if uid is not None:
                _check_listener(sock, uid)
            return sock
        except _ABSENT as error:
            sock.close()
            first = first or error
        except BaseException:
            sock.close()
            raise
    assert first is not None, "no address to connect to"
    raise first


def _wait_for_room(sock: _socket.socket, address: str, deadline: float) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            msg = "the listen backlog stays full"
            raise BlockingIOError(errno.EAGAIN, msg)
        time.sleep(_SLICE if left > _SLICE else left)
        try:
            sock.connect(address)
            return
        except BlockingIOError:
            continue


def peer(sock: _socket.socket) -> tuple[int, int]:
    """The pid and uid of the process listening at the other end of ``sock``."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED)
    order = sys.byteorder
    return int.from_bytes(creds[:4], order, signed=True), int.from_bytes(creds[4:8], order)


def _check_listener(sock: _socket.socket, uid: int) -> None:
    """Any local process can bind an abstract name first: send nothing to a
    listener that does not run as ``uid``."""
    pid, their_uid = peer(sock)
    if their_uid != uid:
        msg = f"the listener (pid {pid}) runs as uid {their_uid}, not daemon_uid {uid}"
        raise PermissionError(msg)


def exchange(sock: _socket.socket, request: bytes, timeout: float) -> bytes:
    """Send ``request`` whole on a connected socket and return the reply
    line, waiting ``timeout`` seconds at most.

    Raises a timeout (see :func:`is_timeout`; the socket is left open, its
    reply may still come), or ConnectionError when the daemon hung up
    without a reply.
    """
    sent = sock.send(request, _NOSIGNAL)
    sock.settimeout(timeout if timeout > _SOON else _SOON)
    reply = sock.recv(512) if sent == len(request) else b""
    if reply.endswith(b"\n"):
        return reply
    return exchange_rest(sock, request, sent, reply)


def exchange_rest(sock: _socket.socket, request: bytes, sent: int, reply: bytes) -> bytes:
    """The rest of :func:`exchange` when the first send or the first read
    was not the whole of it (a request over the socket's buffer, a reply in
    pieces, or none), within the socket's timeout as exchange set it."""
    deadline = time.monotonic() + sock.gettimeout()  # type: ignore[operator]  # set by exchange
    if sent < len(request):
        sock.sendall(memoryview(request)[sent:], _NOSIGNAL)
        left = deadline - time.monotonic()
        sock.settimeout(left if left > _SOON else _SOON)
        reply = sock.recv(512)
    while not reply.endswith(b"\n"):  # a reply in pieces, or none
        left = deadline - time.monotonic()
        sock.settimeout(left if left > _SOON else _SOON)
        chunk = sock.recv(512) if reply else b""
        if not chunk:
            msg = "the daemon closed the connection without a reply"
            raise ConnectionResetError(msg)
        reply += chunk
    return reply


def round_trip(
    addresses: Sequence[str], request: bytes, timeout: float, uid: int | None = None
) -> protocol.Reply:
    """One request on a connection of its own: connect, send, read the
    reply, close.  Raises OSError when there is no reply in ``timeout``
    seconds, :class:`protocol.ProtocolError` for a reply that is not one."""
    deadline = time.monotonic() + timeout
    sock = connect(addresses, deadline, uid)
    try:
        reply = exchange(sock, request, deadline - time.monotonic())
    finally:
        sock.close()
    return protocol.decode_reply(reply)
