"""Checks of GlobusSocketHandler's options, so that bad configuration is a
clear error when the handler is built, naming the value."""

from __future__ import annotations

import logging
import os

__all__ = [
    "ENV_SPOOL",
    "MAX_TIMEOUT",
    "check_choice",
    "check_count",
    "check_fallback",
    "check_spool",
    "check_timeout",
    "check_uid",
]

#: The spool's directory when a handler is built without ``spool``.
ENV_SPOOL = "GLOBUS_CWLOGGER_SPOOL"

#: The longest timeout, in seconds: what poll(2) can wait (INT_MAX ms).
MAX_TIMEOUT = 2_147_483.647


def check_timeout(timeout: object) -> float:
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        msg = f"timeout must be a number of seconds, not {type(timeout).__name__}: {timeout!r}"
        raise TypeError(msg)
    if not (0 < timeout <= MAX_TIMEOUT):
        msg = f"timeout must be a positive number of seconds, at most {MAX_TIMEOUT}: {timeout!r}"
        raise ValueError(msg)
    return float(timeout)


def check_fallback(fallback: object) -> logging.Handler | str | None:
    """Resolve ``fallback`` to a handler, ``"stderr"``, ``"stdout"`` or None."""
    if fallback is None or fallback is False or fallback == "off":
        return None
    if isinstance(fallback, logging.Handler):
        return fallback
    if isinstance(fallback, str):
        if fallback in ("stderr", "stdout"):
            return fallback
        # A handler that dictConfig built before this one (it builds them in
        # alphabetical order), or that the application registered by name.
        handler = logging._handlers.get(fallback)  # type: ignore[attr-defined]
        if isinstance(handler, logging.Handler):
            return handler
        msg = (
            f"fallback must be 'stderr', 'stdout', 'off', a handler, or the name "
            f"of a handler configured before this one: {fallback!r}"
        )
        raise ValueError(msg)
    msg = f"fallback must be a str, a handler or None, not {type(fallback).__name__}: {fallback!r}"
    raise TypeError(msg)


def check_uid(uid: object) -> int | None:
    if uid is None:
        return None
    if not isinstance(uid, int) or isinstance(uid, bool):
        msg = f"daemon_uid must be an int or None, not {type(uid).__name__}: {uid!r}"
        raise TypeError(msg)
    if uid < 0:
        msg = f"daemon_uid must be non-negative: {uid!r}"
        raise ValueError(msg)
    return uid


def check_count(name: str, count: object) -> int:
    if not isinstance(count, int) or isinstance(count, bool):
        msg = f"{name} must be an int, not {type(count).__name__}: {count!r}"
        raise TypeError(msg)
    if count < 1:
        msg = f"{name} must be at least 1: {count!r}"
        raise ValueError(msg)
    return count


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        msg = f"{name} must be one of {', '.join(map(repr, choices))}: {value!r}"
        raise ValueError(msg)
    return value


def check_spool(spool: object) -> str | None:
    """The spool directory to use: ``spool``, else ``$GLOBUS_CWLOGGER_SPOOL``;
    None for none (``"off"`` turns the variable's off too).  The directory
    itself is checked when the spool opens it."""
    if spool is None:
        spool = os.environ.get(ENV_SPOOL) or None
    if spool is None or spool == "off":
        return None
    if isinstance(spool, os.PathLike):
        spool = os.fspath(spool)
    if not isinstance(spool, str):
        msg = f"spool must be a directory's path, not {type(spool).__name__}: {spool!r}"
        raise TypeError(msg)
    return spool
