"""What a record becomes on its way: its text, a stand-in for one that
cannot be formatted, and the time format of the events this package writes."""

from __future__ import annotations

import copy
import logging
import time

__all__ = ["iso_ms", "stand_in", "text_of"]


def iso_ms(timestamp: int) -> str:
    """Milliseconds since the epoch as ``2026-11-25T19:58:19.123Z``."""
    seconds, ms = divmod(timestamp, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def stand_in(record: logging.LogRecord, error: Exception) -> logging.LogRecord:
    """A copy of a record that could not be formatted, whose message says
    what it was and why: sent and kept like any other, never dropped."""
    try:
        what = f"{record.msg!r} % {record.args!r}: {type(error).__name__}: {error}"
    except Exception:  # a repr or str that raises too
        what = f"{object.__repr__(record.msg)}: {type(error).__name__}"
    where = f"{record.levelname} {record.name} {record.pathname}:{record.lineno}"
    stand_in = copy.copy(record)
    stand_in.msg, stand_in.args = f"{where}: could not format {what}", None
    stand_in.exc_info = stand_in.exc_text = stand_in.stack_info = None
    return stand_in


def text_of(handler: logging.Handler, record: logging.LogRecord) -> str:
    """``handler.format(record)``, in fewer steps with the default formatter."""
    if handler.formatter is None and not (record.exc_info or record.exc_text or record.stack_info):
        # What the default formatter gives: getMessage(), whose call costs
        # more than its work for a plain record with no arguments.
        text = record.msg
        if type(record) is not logging.LogRecord or type(text) is not str or record.args:
            text = record.getMessage()
        return text
    return handler.format(record)
