"""The command line's ``spool DIR [--replay]``: what a spool directory holds,
and sending it to the daemon now.

The work is :func:`_replay.describe` and :func:`_replay.replay`, the very
functions a handler's replayer is made of; this module checks the directory
(bad input is :class:`BadDirectory`, which the command line shows in one line)
and says what they found or did.
"""

from __future__ import annotations

import os
import time

from . import protocol
from ._replay import BUSY, DONE, REFUSED, UNANSWERED, describe, replay
from ._spool import CHECKPOINT, DROPS, LOCK, QUARANTINE, check_directory, parse_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from ._replay import Owner, Status

    class Sender(Protocol):
        """Sends one request (as the replayer wants it), and can say why the
        last one was not acknowledged, and where it was sent."""

        def __call__(self, request: bytes) -> protocol.Reply: ...

        @property
        def failure(self) -> str: ...

        @property
        def reached(self) -> str | None: ...


__all__ = ["BadDirectory", "check", "replay_now", "show"]


class BadDirectory(Exception):
    """DIR is not a spool directory that this command can read (or replay)."""


def _is_spools(name: str) -> bool:
    """Whether a spool writes a file of this name (see _spool.py)."""
    if parse_name(name) is not None or name in (LOCK, QUARANTINE):
        return True
    return name.endswith((CHECKPOINT, DROPS)) or (name.startswith(".") and name.endswith(".tmp"))


def check(given: str) -> str:
    """``given`` as an absolute path, if it is a spool's directory (or an
    empty one); else BadDirectory, saying why not."""
    path = os.path.abspath(given)
    if not os.path.isdir(path):
        why = "not a directory" if os.path.exists(path) else "no such directory"
        msg = f"{why}: {given!r}"
        raise BadDirectory(msg)
    try:
        names = os.listdir(path)
    except OSError as error:
        msg = f"cannot read {path!r}: {error.strerror}"
        raise BadDirectory(msg) from None
    if names and not any(map(_is_spools, names)):
        msg = f"not a spool directory: {path!r} holds {len(names)} entries, none of them a spool's"
        raise BadDirectory(msg)
    return path


def _iso(timestamp: int) -> str:
    seconds, ms = divmod(timestamp, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def _since(timestamp: int) -> str:
    """When a record was made: its time, and how long ago."""
    seconds = max(0.0, time.time() - timestamp / 1000)
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{_iso(timestamp)}, {seconds / size:.1f} {unit} ago"
    return f"{_iso(timestamp)}, {seconds:.0f} s ago"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _owner(owner: Owner) -> str:
    state = "running" if owner["alive"] else "gone"
    line = (
        f"pid {owner['pid']} ({state}): {_plural(owner['records'], 'record')} "
        f"({owner['bytes']} bytes) in {_plural(owner['segments'], 'segment')}"
    )
    if owner["oldest"] is not None:
        line += f", the oldest from {_since(owner['oldest'])}"
    if owner["damaged"]:
        line += f"; {_plural(owner['damaged'], 'damaged frame')} (set aside when replayed)"
    return line


def _read(path: str) -> Status:
    try:
        return describe(path)
    except OSError as error:
        msg = f"cannot read {path!r}: {error.strerror or error}"
        raise BadDirectory(msg) from None


def show(path: str) -> list[str]:
    """What the spool ``path`` (from :func:`check`) holds, in lines."""
    status = _read(path)
    records = sum(owner["bytes"] for owner in status["owners"])
    oldest = status["oldest"]
    lines = [
        f"{path}: {_plural(status['records'], 'record')} not replayed yet ({records} bytes)"
        + (f", the oldest from {_since(oldest)}" if oldest is not None else "")
    ]
    lines.extend(f"  {_owner(owner)}" for owner in status["owners"])
    lines += [
        f"{status['bytes']} bytes in the directory (what the bound counts)",
        f"quarantined: {_plural(status['quarantined'], 'file')}",
        f"dropped at the bound, not reported yet: {_plural(status['dropped'], 'record')}",
    ]
    return lines


def replay_now(path: str, send: Sender) -> tuple[int, list[str]]:
    """Replay the spool ``path`` (from :func:`check`) with ``send``, paced and
    counted as a handler's replayer does: the exit status (0 when nothing is
    left) and what was done, in lines."""
    try:
        check_directory(path)  # as the handler would: ours, private
    except (TypeError, ValueError, OSError) as error:
        raise BadDirectory(str(error)) from None
    try:
        outcome, done = replay(path, send)
    except OSError as error:  # the directory's own files: a full disk, say
        return 1, [f"cannot replay {path}: {error.strerror or error}"]
    where = f" to {send.reached}" if send.reached else ""
    lines = [
        f"replayed {_plural(done.replayed, 'record')}{where}: restamped {done.restamped}, "
        f"duplicates {done.duplicates}, quarantined {done.quarantined}, torn {done.torn}; "
        f"dropped at the bound and reported {done.dropped}"
    ]
    if done.audits:
        lines.append('the daemon acknowledged the audit event ({"subtype": "cwlogger.spool"})')
    elif done.replayed or done.quarantined or done.torn:
        lines.append("the audit event was not acknowledged: nothing reports this replay")
    if outcome == BUSY:
        lines.append(f"not replayed: another process is replaying {path} (it holds {LOCK})")
    elif outcome in (REFUSED, UNANSWERED):
        lines.append(f"stopped: {send.failure}")
    elif outcome != DONE:
        lines.append(f"stopped: {outcome}")
    left = _read(path)
    for owner in left["owners"]:
        if owner["records"]:
            whose = "its handler replays them" if owner["alive"] else "run --replay again"
            lines.append(f"left: {_owner(owner)} ({whose})")
    return (0 if outcome == DONE and not left["records"] else 1), lines
