"""The CWLogger daemon's wire format: pure functions, no sockets.

One request is one JSON object and one newline::

    {"message": "...", "timestamp": 1764090000123}\\n

and one reply is one JSON object and one newline, ``{"status": "ok", ...}``
or ``{"status": "error", "message": "..."}``.  The encoder never produces a
request the daemon refuses: it repairs, cuts or fills the message instead.
"""

from __future__ import annotations

import os
import sys
from collections import namedtuple

try:  # the json package's own C escaper, without importing the package
    from _json import encode_basestring
except ImportError:  # not CPython
    from json.encoder import encode_basestring

TYPE_CHECKING = False  # without importing typing: see _typing.py
if TYPE_CHECKING:
    from typing import NamedTuple

    from typing_extensions import TypeAlias

__all__ = [
    "DEFAULT_ADDRESS",
    "EMPTY_MESSAGE",
    "MAX_MESSAGE_BYTES",
    "Error",
    "Ok",
    "ProtocolError",
    "Reply",
    "decode_reply",
    "display_address",
    "encode_event",
    "fit_message",
    "parse_address",
    "restamp",
    "stamp",
    "timestamp_of",
]

#: Where the daemon listens: a Linux abstract socket name.
DEFAULT_ADDRESS = "\0org.globus.cwlogs"

#: The most UTF-8 bytes the daemon accepts in one message (262144 - 26).
MAX_MESSAGE_BYTES = 262118

#: Sent in place of an empty message, which the daemon acknowledges but can
#: never upload (CloudWatch refuses empty events and the daemon then wedges).
EMPTY_MESSAGE = "(empty log message)"

# A message of at most this many characters is within the limit whatever it
# holds (a character is at most 4 UTF-8 bytes), so it needs no measuring.
_SAFE_CHARS = MAX_MESSAGE_BYTES // 4

#: CloudWatch Logs discards, without a word, events more than 14 days old or
#: more than 2 hours ahead of its clock; the daemon does not check.  A margin
#: inside each bound leaves room for the daemon's own delay (it may hold
#: events while CloudWatch is unreachable) and for clock skew.
MAX_AGE = 14 * 86400 - 3600  # seconds: 14 days, less one hour
MAX_AHEAD = 2 * 3600 - 600  # seconds: 2 hours, less ten minutes

# What JSON must escape in a string besides the quote and the backslash.
_CONTROL = bytes(range(0x20))

# The size of sockaddr_un.sun_path: the longest path, or NUL and name.
_MAX_ADDRESS_BYTES = 108


def _cut_marker(cut: int) -> str:
    return f"... [{cut} bytes cut]"


def fit_message(message: str) -> tuple[str, int]:
    """Return ``message`` in a form the daemon accepts, and how many UTF-8
    bytes were cut from it.

    Lone surrogates become U+FFFD, an empty message becomes
    :data:`EMPTY_MESSAGE`, and a message over :data:`MAX_MESSAGE_BYTES` is cut
    at a character boundary and ends with a marker saying how much was cut.
    """
    given: object = message  # callers without a type checker may pass anything
    if not isinstance(given, str):
        msg = f"message must be a str, not {type(message).__name__}: {message!r}"
        raise TypeError(msg)
    if not message:
        return EMPTY_MESSAGE, 0
    try:
        data = message.encode("utf-8")
    except UnicodeEncodeError:
        # Joins valid surrogate pairs, replaces lone surrogates by U+FFFD.
        message = message.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        data = message.encode("utf-8")
    if len(data) <= MAX_MESSAGE_BYTES:
        return message, 0
    # Keep as much as fits beside the marker of what is cut.  Budgeting for
    # the largest count fits; each shorter count frees room to keep more.
    keep = MAX_MESSAGE_BYTES - len(_cut_marker(len(data)))
    while (more := MAX_MESSAGE_BYTES - len(_cut_marker(len(data) - keep))) > keep:
        keep = more
    head = data[:keep].decode("utf-8", "ignore")  # drops a split character
    cut = len(data) - len(head.encode("utf-8"))
    return head + _cut_marker(cut), cut


def encode_event(message: str, timestamp: int) -> tuple[bytes, int]:
    """Encode one event as the exact bytes of a request.

    ``timestamp`` is milliseconds since the Unix epoch, a non-negative int.
    Returns the request and the number of message bytes cut to fit (0 when
    the message was sent whole); see :func:`fit_message`.
    """
    if type(timestamp) is not int:  # also refuses bool, a subclass of int
        msg = f"timestamp must be an int, not {type(timestamp).__name__}: {timestamp!r}"
        raise TypeError(msg)
    if timestamp < 0:
        msg = f"timestamp must be non-negative: {timestamp!r}"
        raise ValueError(msg)
    cut = 0
    if type(message) is not str or not message or len(message) > _SAFE_CHARS:
        message, cut = fit_message(message)
    elif message.isascii():  # the usual message: quoted in bytes, quicker than in str
        data = message.encode()
        if len(data.translate(None, _CONTROL)) == len(data):  # no control character
            data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            return b'{"message": "%b", "timestamp": %d}\n' % (data, timestamp), 0
    try:
        quoted = encode_basestring(message)
        return f'{{"message": {quoted}, "timestamp": {timestamp}}}\n'.encode(), cut
    except UnicodeEncodeError:  # lone surrogates: rare, so repaired lazily
        message, cut = fit_message(message)
        return encode_event(message, timestamp)[0], cut


def stamp(created: object, now: float) -> tuple[int, bool]:
    """The ``timestamp`` of an event created at ``created`` (seconds since
    the epoch), and whether it was restamped: ``now`` replaces any value
    CloudWatch would discard (see :data:`MAX_AGE`), NaN, infinities, and
    anything that is not a number.  Never raises."""
    try:
        if now - MAX_AGE < created < now + MAX_AHEAD:  # type: ignore[operator]  # False for NaN
            return int(created * 1000), False  # type: ignore[operator]
    except Exception:  # not a number: a str, None, a broken __lt__
        pass
    return int(now * 1000), True


def timestamp_of(request: bytes) -> int:
    """The timestamp of a request made by :func:`encode_event`."""
    return int(request[request.rindex(b": ") + 2 : -2])  # the last: JSON escapes a quote


def restamp(request: bytes, now: float) -> tuple[bytes, bool]:
    """``request`` (made by :func:`encode_event`) stamped with ``now`` if
    CloudWatch would discard its timestamp, and whether it was."""
    timestamp, restamped = stamp(timestamp_of(request) / 1000, now)
    if not restamped:
        return request, False
    head = request[: request.rindex(b": ") + 2]
    return b"%s%d}\n" % (head, timestamp), True


class ProtocolError(ValueError):
    """The daemon's reply is not one the protocol allows."""


if TYPE_CHECKING:

    class Ok(NamedTuple):
        """The daemon acknowledged the event; ``health`` describes its queue."""

        queue_length: int
        queue_percent_full: float

    class Error(NamedTuple):
        """The daemon refused the event; ``message`` is its exception's repr."""

        message: str

else:  # the same tuples, without importing typing
    Ok = namedtuple("Ok", ["queue_length", "queue_percent_full"])
    Error = namedtuple("Error", ["message"])

if TYPE_CHECKING or sys.version_info < (3, 10):
    from typing import Union

    Reply: TypeAlias = Union[Ok, Error]
else:  # the same alias, without importing typing
    Reply = Ok | Error


def decode_reply(line: bytes) -> Reply:
    """Decode one reply line (with or without its newline).

    Raises :class:`ProtocolError` for anything that is not a reply.
    """
    try:
        import json  # only for replies that are not the usual acknowledgement

        reply = json.loads(line)
        status = reply["status"]
        if status == "ok":
            health = reply["health"]
            length, full = health["queue_length"], health["queue_percent_full"]
            if type(length) is int and type(full) in (int, float):
                return Ok(length, float(full))
        elif status == "error" and isinstance(reply["message"], str):
            return Error(reply["message"])
    except (ValueError, TypeError, KeyError):
        pass
    msg = f"not a reply from the daemon: {bytes(line)[:200]!r}"
    raise ProtocolError(msg)


def parse_address(address: str | os.PathLike[str]) -> str:
    """Normalise an address to what ``socket.connect`` takes for AF_UNIX.

    Abstract names may be written ``"\\0name"`` (a NUL byte first), as the
    two characters backslash and zero (what single-quoted YAML, JSON and INI
    files give for ``\\0``), or ``"@name"`` (as ``ss`` and systemd print
    them); anything else must be an absolute filesystem path.
    """
    given: object = os.fspath(address) if isinstance(address, os.PathLike) else address
    if not isinstance(given, str):
        msg = f"address must be a str or path, not {type(address).__name__}: {address!r}"
        raise TypeError(msg)
    address = given
    if address.startswith("\\0"):
        normal = "\0" + address[2:]
    elif address.startswith("@"):
        normal = "\0" + address[1:]
    else:
        normal = address
    if normal.startswith("\0"):
        if not normal.strip("\0"):
            msg = f"abstract socket address has an empty name: {address!r}"
            raise ValueError(msg)
    elif not normal.startswith("/"):
        msg = (
            f"address must be an abstract name ('\\0name' or '@name') or an "
            f"absolute path: {address!r}"
        )
        raise ValueError(msg)
    elif "\0" in normal:
        msg = f"socket path holds a NUL byte: {address!r}"
        raise ValueError(msg)
    if len(normal.encode("utf-8", "surrogateescape")) > _MAX_ADDRESS_BYTES:
        msg = f"address is longer than {_MAX_ADDRESS_BYTES} bytes: {address!r}"
        raise ValueError(msg)
    return normal


def display_address(address: str) -> str:
    """Show a normalised address the way ``ss`` does: ``@name`` if abstract."""
    return "@" + address[1:] if address.startswith("\0") else address
