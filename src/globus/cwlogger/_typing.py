"""``override`` for type checkers, free at run time: importing
typing_extensions costs more than importing the rest of this package, and
so does typing itself.  Each module of the package therefore spells
``TYPE_CHECKING = False`` (which type checkers read as True, PEP 781)
instead of importing it."""

from __future__ import annotations

TYPE_CHECKING = False

__all__ = ["override"]

if TYPE_CHECKING:
    from typing_extensions import override
else:

    def override(method):
        return method
