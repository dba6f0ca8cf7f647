"""The ledger of undelivered records, and the one summary that reports them.

Records the daemon did not acknowledge are *open* until a summary event
claims them; the claimed summary is *on its way* until its fate is known
(acknowledged, refused, or answered late), and is then settled: forgotten
when the daemon acknowledged it, or merged back into the open records to be
reported again.  Only one summary is on its way at a time, so two summaries
never report the same record.  Pure: no clock, no I/O, no lock of its own
(the handler calls it under its lock).
"""

from __future__ import annotations

import math
from collections import namedtuple

TYPE_CHECKING = False  # without importing typing: see _typing.py
if TYPE_CHECKING:
    from typing import NamedTuple

__all__ = ["SUMMARY_EVERY", "Ledger", "Summary"]

#: Seconds between two summaries while the daemon answers but refuses some
#: records (its queue is full); after it was unreachable, one goes at once.
SUMMARY_EVERY = 1.0

if TYPE_CHECKING:

    class Summary(NamedTuple):
        """Records a summary reports: how many, and the first and last
        timestamp among them (milliseconds since the epoch)."""

        records: int
        first: int
        last: int

else:  # the same tuple, without importing typing
    Summary = namedtuple("Summary", ["records", "first", "last"])


class Ledger:
    """Undelivered records: :meth:`add` each, :meth:`claim` a summary of
    those not reported yet, :meth:`settle` it once its fate is known."""

    def __init__(self) -> None:
        self.open = 0  # records added and not claimed
        self._first = math.inf  # their timestamps' span
        self._last = -math.inf
        self.on_its_way: Summary | None = None
        self.due = 0.0  # the clock reading before which no summary is claimed

    def add(self, timestamp: int, *, unreachable: bool) -> None:
        """One more undelivered record, stamped ``timestamp``; when the
        daemon was ``unreachable``, the summary goes first thing on its return."""
        self.open += 1
        self._first = min(self._first, timestamp)
        self._last = max(self._last, timestamp)
        if unreachable:
            self.due = 0.0

    def owes(self) -> bool:
        """Whether records wait to be reported, or a report waits to be settled."""
        return bool(self.open) or self.on_its_way is not None

    def claim(self, now: float) -> Summary | None:
        """The summary to send now, if one is due and none is on its way."""
        if not self.open or self.on_its_way is not None or now < self.due:
            return None
        summary = Summary(self.open, int(self._first), int(self._last))
        self.on_its_way = summary
        self.open, self._first, self._last = 0, math.inf, -math.inf
        self.due = now + SUMMARY_EVERY
        return summary

    def settle(self, summary: Summary, *, delivered: bool) -> None:
        """The fate of the summary :meth:`claim` returned."""
        if summary is not self.on_its_way:
            return  # settled already
        self.on_its_way = None
        if not delivered:
            self.open += summary.records
            self._first = min(self._first, summary.first)
            self._last = max(self._last, summary.last)
