"""``override`` for type checkers, free at run time: importing
typing_extensions costs more than importing the rest of this package."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["override"]

if TYPE_CHECKING:
    from typing_extensions import override
else:

    def override(method):
        return method
