"""JSONFormatter: each record as one JSON object on one line.

How it stays cheap (a little over half the instructions python-json-logger
takes per record): the object is built in one pass, no call per field, and
handed to the ``json`` module's C encoder, built once per formatter,
rather than to ``json.dumps``, which builds an encoder on every call; the
date and time of day are formatted once a second, not once a record.  The
encoder keeps no record of the containers it is inside (one record shared
by every thread would not be thread-safe), so a cycle ends in
RecursionError and, like any value the encoder refuses (NaN, a key that
is not a str), sends the object down the slow path, :func:`_plain`, which
writes such values with ``repr``.

How it stays within the daemon's limit: an object over
:data:`~globus.cwlogger.protocol.MAX_MESSAGE_BYTES` UTF-8 bytes is written
again with its message cut, then if need be its largest other values
(:meth:`JSONFormatter._fit`): still one JSON object with every key, so
that the handler never has to cut it in the middle.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from json.encoder import encode_basestring

from ._typing import override
from .protocol import MAX_MESSAGE_BYTES, _cut_marker

TYPE_CHECKING = False  # without importing typing: see _typing.py
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, Literal

__all__ = ["JSONFormatter"]

#: The fields JSONFormatter writes, in this order, under these keys unless
#: renamed.  A field whose value is None (no exception, no stack) is left out.
FIELDS = ("time", "level", "logger", "message", "exception", "stack")

# Every LogRecord has these attributes: any other one came from ``extra=``.
RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12+
}

_SURROGATE = re.compile("[\ud800-\udfff]")
_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_MAX_DEPTH = 100  # deeper values are written with repr
# A text of at most this many characters is within the limit whatever it
# holds (a character is at most 4 UTF-8 bytes), so it needs no measuring.
_SAFE_CHARS = MAX_MESSAGE_BYTES // 4


class JSONFormatter(logging.Formatter):
    """Format each record as one JSON object on one line.

    The object holds, under these keys: ``time`` (UTC ISO 8601 with
    milliseconds, from ``record.created``), ``level``, ``logger``,
    ``message``, every field given with ``extra=``, then ``exception`` and
    ``stack`` when the record has them.  A dict message given without
    arguments (``log.info({"event": "login", "user": 1})``, as structlog
    passes one) is merged into the object in place of ``message``, its
    items treated as ``extra`` fields; ``dict_message_text=True`` also
    writes its text under ``message``.

    Values JSON has no type for are converted: ``datetime``, ``date`` and
    ``time`` to ISO 8601 (``isoformat()``), ``UUID``, ``Decimal`` and paths
    to ``str``, an ``Enum`` to its value, sets to sorted lists, bytes to
    text (UTF-8, other bytes as ``\\xNN``); anything else by ``default``
    (a function of one value that returns one JSON can write) when given,
    and with ``repr`` when it is not or when it raises.  The output is
    always valid, UTF-8-encodable JSON within the daemon's limit: an object
    over it has its message cut, then if need be its largest other values
    (``_aws`` last), each ending with ``... [N bytes cut]``.

    ``fields`` renames or drops fields: it maps a field name to the key to
    write it under, or to None to leave it out.  A name may be one of ours,
    any LogRecord attribute (``lineno``, ``funcName``, ``process``, ...),
    which is then written after ``message``, or the key of an ``extra=``
    field (``color_message: null``), renamed or dropped when a record has
    it.  ``defaults`` are fields added to every object unless the record
    has its own.  An ``extra`` field whose key is already taken is written
    as ``extra.<key>``.  From dictConfig::

        formatters:
          json:
            (): globus.cwlogger.JSONFormatter
            fields: {time: "@timestamp", level: lvl, message: msg, color_message: null}
            defaults: {service: billing}
            default: ext://myservice.logs.to_json

    ``class: globus.cwlogger.JSONFormatter`` also works, with the defaults.
    """

    def __init__(
        self,
        fmt: None = None,
        datefmt: None = None,
        style: Literal["%", "{", "$"] = "%",
        validate: bool = True,
        *,
        defaults: Mapping[str, object] | None = None,
        fields: Mapping[str, str | None] | None = None,
        default: Callable[[Any], object] | None = None,
        dict_message_text: bool = False,
    ) -> None:
        # dictConfig passes `format` and `datefmt` along when a file has them.
        given: tuple[object, object] = (fmt, datefmt)
        if given != (None, None):
            msg = (
                f"JSONFormatter writes its own fields and time format; choose them "
                f"with `fields`, not format={fmt!r} or datefmt={datefmt!r}"
            )
            raise ValueError(msg)
        super().__init__(None, None, style, validate)
        keys, self._renamed = _check_fields(fields)
        self._keys = tuple(keys.get(name) for name in FIELDS[:4])
        self._attributes = [(name, key) for name, key in keys.items() if name not in FIELDS]
        self._tail = (keys.get("exception"), keys.get("stack"))
        self._taken = frozenset(keys.values())
        self._defaults = _check_defaults(defaults, self._taken)
        hook: object = default  # dictConfig passes anything
        if hook is not None and not callable(hook):
            msg = (
                f"default must be a function of one value (from dictConfig: "
                f"ext://module.function), not {type(hook).__name__}: {hook!r}"
            )
            raise TypeError(msg)
        self._hook = default
        text: object = dict_message_text
        if not isinstance(text, bool):
            msg = f"dict_message_text must be true or false, not {type(text).__name__}: {text!r}"
            raise TypeError(msg)
        self._dict_text = dict_message_text
        self._encode = _encoder(self._convert)
        self._second: tuple[int, str] = (0, "1970-01-01T00:00:00")  # one tuple: thread-safe

    @override
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """Return when the record was created, e.g. ``2026-11-25T19:58:19.123Z``."""
        created = record.created
        try:
            seconds, ms = divmod(int(created * 1000), 1000)
            second = self._second
            if second[0] != seconds:
                day = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
                second = self._second = (seconds, day)
        except Exception:  # NaN, out of range, not a number: still never raise
            return repr(created)
        return f"{second[1]}.{ms:03d}Z"

    @override
    def format(self, record: logging.LogRecord) -> str:  # noqa: PLR0912  # one pass: calls cost
        """Return the record as one line of JSON."""
        time_key, level_key, logger_key, message_key = self._keys
        event: dict[object, object] = {}
        if time_key is not None:
            event[time_key] = self.formatTime(record)
        if level_key is not None:
            event[level_key] = record.levelname
        if logger_key is not None:
            event[logger_key] = record.name
        message = record.msg
        if type(message) is not str and isinstance(message, Mapping) and not record.args:
            if message_key is not None and self._dict_text:
                event[message_key] = record.getMessage()
            self._merge(event, message.items())
        elif message_key is not None:
            event[message_key] = record.getMessage()
        for name, key in self._attributes:
            value = getattr(record, name, None)
            if value is not None:
                event[key] = value
        renamed, taken = self._renamed, self._taken
        for name, value in vars(record).items():
            if name not in RECORD_ATTRIBUTES:
                out = renamed.get(name, name) if renamed else name
                if out is None:
                    continue
                if out in taken or out in event:
                    out = f"extra.{out}"
                event[out] = value
        for key, value in self._defaults.items():
            if key not in event:
                event[key] = value
        exception_key, stack_key = self._tail
        if exception_key is not None:
            if record.exc_info and not record.exc_text:  # cached, as the base class does
                record.exc_text = self.formatException(record.exc_info)
            if record.exc_text:
                event[exception_key] = record.exc_text
        if stack_key is not None and record.stack_info:
            event[stack_key] = self.formatStack(record.stack_info)
        try:
            text = "".join(self._encode(event, 0))
        except Exception:  # non-str keys, NaN, cycles, deep nesting, a failing repr
            event = _plain(event, self._convert)
            text = "".join(self._encode(event, 0))
        if not text.isascii():
            text = _repaired(text)
        if len(text) > _SAFE_CHARS and len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
            return self._fit(event, text, message_key)
        return text

    def _merge(self, event: dict[object, object], items: Iterable[tuple[object, object]]) -> None:
        """Add a dict message's items, renamed as ``fields`` says, as extras."""
        for name, value in items:
            key = self._renamed.get(name, name) if isinstance(name, str) else name
            if key is None:
                continue
            if isinstance(key, str) and (key in self._taken or key in event):
                key = f"extra.{key}"
            event[key] = value

    def _convert(self, value: object) -> object:  # noqa: PLR0911  # one per kind
        """What to write for a value JSON has no type for (the encoder's
        ``default``); never raises."""
        try:
            if isinstance(value, enum.Enum):
                return value.value
            if isinstance(value, (set, frozenset)):
                try:
                    return sorted(value)
                except TypeError:  # members that cannot be ordered
                    return list(value)
            if isinstance(value, (bytes, bytearray)):
                return value.decode("utf-8", "backslashreplace")
            # A value of these types exists only once its module is imported:
            # look there rather than import them all with the formatter.
            modules = sys.modules
            datetime = modules.get("datetime")
            if datetime is not None and isinstance(value, (datetime.date, datetime.time)):
                return value.isoformat()
            for module, name in _STR_TYPES:
                found = modules.get(module)
                if found is not None and isinstance(value, getattr(found, name)):
                    return str(value)
            if self._hook is not None:
                converted = self._hook(value)
                if converted is not value:  # else it would be called again, and again
                    return converted
        except RecursionError:  # a hook that never gives JSON: the slow path copes
            raise
        except Exception:  # the user's hook, or a subclass's broken method
            pass
        return _repr(value)

    def _fit(self, event: dict[object, object], text: str, message_key: str | None) -> str:
        """``event``, whose JSON ``text`` is over the daemon's limit, as JSON
        within it: the message cut first, then, if that is not enough, the
        largest other values (``_aws`` last), each to the start of its text
        (its JSON text if it is not a str) and the marker ``... [N bytes
        cut]``.  Keys are never cut: if they alone are over the limit, the
        object is ``{"message": text}``, ``text`` cut likewise."""
        excess = _size(text) - MAX_MESSAGE_BYTES
        sizes = {key: _size(self._json(value)) for key, value in event.items()}
        others = [key for key in sizes if key not in (message_key, "_aws")]
        others.sort(key=sizes.__getitem__, reverse=True)  # stable: ties in order
        for key in (message_key, *others, "_aws"):
            if excess <= 0:
                break
            if key not in sizes:
                continue
            value = event[key]
            cut = _cut(value if isinstance(value, str) else self._json(value), sizes[key] - excess)
            size = _size(encode_basestring(cut))
            if size < sizes[key]:
                event[key] = cut
                excess -= sizes[key] - size
        if excess > 0:
            key = message_key or "message"
            room = MAX_MESSAGE_BYTES - _size(self._json({key: ""})) + 2
            return self._json({key: _cut(text, room)})
        return self._json(event)

    def _json(self, value: object) -> str:
        """``value`` (JSON writes it, as :meth:`format` made sure) as JSON
        text, lone surrogates replaced."""
        return _repaired("".join(self._encode(value, 0)))


_STR_TYPES = (("uuid", "UUID"), ("decimal", "Decimal"), ("pathlib", "PurePath"))


def _encoder(convert: Callable[[object], object]) -> Callable[[object, int], Iterable[str]]:
    """The C encoder of ``json`` (compact, readable, strict), built once."""
    make = getattr(json.encoder, "c_make_encoder", None)  # None without the _json C module
    if make is not None:
        try:
            encoder: Callable[[object, int], Iterable[str]] = make(
                None, convert, encode_basestring, None, ":", ",", False, False, False
            )
            return encoder
        except TypeError:  # another signature: use the documented API
            pass
    encode = json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=convert
    ).encode
    return lambda value, _: (encode(value),)


def _check_fields(
    fields: Mapping[str, str | None] | None,
) -> tuple[dict[str, str], dict[str, str | None]]:
    """Return the key of each field to write, in the order to write them,
    and the new key (None: left out) of each ``extra`` field to rename."""
    given: object = {} if fields is None else fields  # dictConfig passes anything
    if not isinstance(given, Mapping):
        msg = f"fields must map field names to keys, not {type(given).__name__}: {given!r}"
        raise TypeError(msg)
    ours: dict[str, str | None] = {name: name for name in FIELDS}
    attributes: dict[str, str | None] = {}
    extras: dict[str, str | None] = {}
    for name, key in given.items():
        if not isinstance(name, str):
            msg = f"fields: each name must be a str: {name!r}"
            raise TypeError(msg)
        if key is not None and not isinstance(key, str):
            msg = f"fields: the key of {name!r} must be a str or None: {key!r}"
            raise TypeError(msg)
        if key == "":
            msg = f"fields: the key of {name!r} must not be empty"
            raise ValueError(msg)
        if name in FIELDS:
            ours[name] = key
        elif name in {"message", "asctime"}:
            msg = f"fields: {name!r} is set by formatters; use one of {FIELDS}"
            raise ValueError(msg)
        elif name in RECORD_ATTRIBUTES:
            attributes[name] = key
        else:
            extras[name] = key
    order = [*FIELDS[:4], *attributes, *FIELDS[4:]]
    keys = {**ours, **attributes}
    written = {name: key for name in order if (key := keys[name]) is not None}
    targets = [*written.values(), *(key for key in extras.values() if key is not None)]
    if len(set(targets)) < len(targets):
        msg = f"fields: two fields would be written under the same key: {dict(given)!r}"
        raise ValueError(msg)
    return written, extras


def _check_defaults(
    defaults: Mapping[str, object] | None, taken: frozenset[str]
) -> dict[str, object]:
    given: object = {} if defaults is None else defaults  # dictConfig passes anything
    if not isinstance(given, Mapping):
        msg = f"defaults must be a mapping, not {type(given).__name__}: {given!r}"
        raise TypeError(msg)
    for key in given:
        if not isinstance(key, str) or key in taken:
            msg = f"defaults: each key must be a str that no other field uses: {key!r}"
            raise ValueError(msg)
    return dict(given)


def _repaired(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD, and valid pairs
    joined (as protocol.fit_message does, in one pass here).

    JSON is kept readable (the daemon counts UTF-8 bytes), so a lone
    surrogate would make it unencodable; escaping it would not help: the
    daemon refuses it once decoded."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub("\ufffd", _PAIR.sub(_joined, text))


def _joined(pair: re.Match[str]) -> str:
    return pair[0].encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def _size(text: str) -> int:
    """UTF-8 bytes of ``text``, a lone surrogate counted as U+FFFD (3)."""
    return len(text.encode("utf-8", "surrogatepass"))


def _cut(text: str, budget: int) -> str:
    """The start of ``text`` and the marker ``... [N bytes cut]``, at most
    ``budget`` UTF-8 bytes as a JSON string (quotes included); the marker
    alone when there is no room for more."""
    text = _repaired(text)
    size = len(text.encode("utf-8"))
    # The marker only shrinks as the count it holds shrinks (protocol.py).
    room = budget - 1 - len(_cut_marker(size))  # for the opening quote and what follows
    # Cut the JSON string itself, so that escapes (\" \n \u0001) count at
    # their length; then back off to whole characters and whole escapes.
    quoted = encode_basestring(text).encode("utf-8")[: max(room, 1)].decode("utf-8", "ignore")
    while True:
        try:
            head: str = json.loads(quoted + '"')
            break
        except ValueError:  # a split escape: at most 5 characters to drop
            quoted = quoted[:-1]
    return head + _cut_marker(size - len(head.encode("utf-8")))


def _plain(value: object, convert: Callable[[object], object], depth: int = 0) -> Any:
    """A copy of ``value`` that JSON writes without fail; ``convert`` turns
    what JSON has no type for into what it has."""
    return _copy(value, convert, depth, set())


def _copy(  # noqa: PLR0911  # one per kind
    value: object, convert: Callable[[object], object], depth: int, path: set[int]
) -> object:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float)):
        try:  # NaN and the infinities are not JSON; nor an int too long for str()
            json.dumps(value, allow_nan=False)
        except ValueError:
            return _repr(value)
        return value
    if depth >= _MAX_DEPTH or id(value) in path:  # too deep, or a cycle
        return _repr(value)
    if isinstance(value, (dict, list, tuple)):
        path.add(id(value))  # the containers we are inside
        try:
            if isinstance(value, dict):
                return {
                    k if isinstance(k, str) else _repr(k): _copy(v, convert, depth + 1, path)
                    for k, v in value.items()
                }
            return [_copy(v, convert, depth + 1, path) for v in value]
        finally:
            path.discard(id(value))
    try:
        converted = convert(value)
    except Exception:  # a conversion of a strange subclass
        return _repr(value)
    if converted is value:  # a hook that gave it back
        return _repr(value)
    return _copy(converted, convert, depth + 1, path)


def _repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__, or too deep
        return object.__repr__(value)
