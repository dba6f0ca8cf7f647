"""JSONFormatter: each record as one JSON object on one line."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Literal

from ._handler import _iso
from ._typing import override

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

# Our fields that are LogRecord attributes under another name.
_ATTRIBUTE = {"level": "levelname", "logger": "name"}

_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_DEPTH = 100  # deeper values are written with repr


class JSONFormatter(logging.Formatter):
    """Format each record as one JSON object on one line.

    The object holds, under these keys: ``time`` (UTC ISO 8601 with
    milliseconds, from ``record.created``), ``level``, ``logger``,
    ``message``, every field given with ``extra=``, then ``exception`` and
    ``stack`` when the record has them.  Values JSON cannot hold are written
    with ``repr``; the output is always valid, UTF-8-encodable JSON.

    ``fields`` renames or drops fields: it maps a field name to the key to
    write it under, or to None to leave it out.  It may also name any
    LogRecord attribute (``lineno``, ``funcName``, ``process``, ...), which
    is then written after ``message``.  Fields it does not mention keep
    their default key.  ``defaults`` are fields added to every object unless
    the record has its own.  An ``extra`` field whose key is already taken
    is written as ``extra.<key>``.  From dictConfig::

        formatters:
          json:
            (): globus.cwlogger.JSONFormatter
            fields: {time: "@timestamp", level: lvl, message: msg, stack: null}
            defaults: {service: billing}

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
        keys = _check_fields(fields)
        self._head = [(name, key) for name, key in keys.items() if name not in FIELDS[4:]]
        self._tail = [(name, key) for name, key in keys.items() if name in FIELDS[4:]]
        self._taken = frozenset(keys.values())
        self._defaults = _check_defaults(defaults, self._taken)

    @override
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """Return when the record was created, e.g. ``2026-11-25T19:58:19.123Z``."""
        return _iso(record.created)

    @override
    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON."""
        event: dict[object, object] = {}
        for name, key in self._head:
            value = self._field(record, name)
            if value is not None:
                event[key] = value
        event.update(self._defaults)
        for key, value in vars(record).items():
            if key not in RECORD_ATTRIBUTES:
                event[f"extra.{key}" if key in self._taken else key] = value
        for name, key in self._tail:
            value = self._field(record, name)
            if value is not None:
                event[key] = value
        return _dumps(event)

    def _field(self, record: logging.LogRecord, name: str) -> object:
        if name == "exception":
            if record.exc_info and not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)  # cached, as the base does
            return record.exc_text or None
        if name == "stack":
            return self.formatStack(record.stack_info) if record.stack_info else None
        if name == "time":
            return self.formatTime(record)
        if name == "message":
            return record.getMessage()
        return getattr(record, _ATTRIBUTE.get(name, name), None)


def _check_fields(fields: Mapping[str, str | None] | None) -> dict[str, str]:
    """Return the key of each field to write, in the order to write them."""
    given: object = {} if fields is None else fields  # dictConfig passes anything
    if not isinstance(given, Mapping):
        msg = f"fields must map field names to keys, not {type(given).__name__}: {given!r}"
        raise TypeError(msg)
    ours: dict[str, str | None] = {name: name for name in FIELDS}
    attributes: dict[str, str | None] = {}
    for name, key in given.items():
        if name in FIELDS:
            ours[name] = key
        elif name in RECORD_ATTRIBUTES - {"message", "asctime"}:
            attributes[name] = key
        else:
            msg = f"fields: unknown field {name!r}; use one of {FIELDS} or a LogRecord attribute"
            raise ValueError(msg)
        if key is not None and not isinstance(key, str):
            msg = f"fields: the key of {name!r} must be a str or None: {key!r}"
            raise TypeError(msg)
        if key == "":
            msg = f"fields: the key of {name!r} must not be empty"
            raise ValueError(msg)
    order = [*FIELDS[:4], *attributes, *FIELDS[4:]]
    keys = {**ours, **attributes}
    written = {name: key for name in order if (key := keys[name]) is not None}
    if len(set(written.values())) < len(written):
        msg = f"fields: two fields would be written under the same key: {written!r}"
        raise ValueError(msg)
    return written


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


def _dumps(event: dict[object, object]) -> str:
    """``event`` as compact JSON that is always valid and encodable as UTF-8."""
    try:
        text = json.dumps(
            event, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=repr
        )
    except Exception:  # non-str keys, NaN, cycles, deep nesting, a failing repr
        text = json.dumps(_plain(event, 0, set()), ensure_ascii=False, separators=(",", ":"))
    # Kept readable (the daemon counts UTF-8 bytes), so lone surrogates would
    # make it unencodable; escaping them would not help: the daemon refuses
    # them once decoded.  U+FFFD instead, as protocol.fit_message does.
    if not text.isascii() and _SURROGATE.search(text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _plain(value: object, depth: int, path: set[int]) -> object:
    """A copy of ``value`` that json.dumps writes without fail."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float)):
        try:  # NaN and the infinities are not JSON; nor an int too long for str()
            json.dumps(value, allow_nan=False)
        except ValueError:
            return _repr(value)
        return value
    if depth < _MAX_DEPTH and id(value) not in path and isinstance(value, (dict, list, tuple)):
        path.add(id(value))  # the containers we are inside: a cycle is written with repr
        try:
            if isinstance(value, dict):
                return {
                    k if isinstance(k, str) else _repr(k): _plain(v, depth + 1, path)
                    for k, v in value.items()
                }
            return [_plain(v, depth + 1, path) for v in value]
        finally:
            path.discard(id(value))
    return _repr(value)


def _repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__, or too deep
        return object.__repr__(value)
