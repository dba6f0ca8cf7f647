"""A pytest fixture: the stand-in daemon, for the tests of services that log.

    def test_audit(cwlogger_daemon):
        service.login("alice")  # its handlers, built without a host, use the stand-in
        (event,) = cwlogger_daemon.wait_for(1, strict=True)

Installed as the ``globus_cwlogger`` entry point of ``pytest11``, so pytest
loads it by itself (``-p no:globus_cwlogger`` turns it off).  Nothing in the
package imports this module, and it imports the stand-in only when a test
asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from . import ENV_ADDRESS
from .protocol import display_address

if TYPE_CHECKING:
    from .testing import LocalDaemon

__all__ = ["cwlogger_daemon"]


@pytest.fixture
def cwlogger_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalDaemon]:
    """A :class:`~globus.cwlogger.testing.LocalDaemon` on a fresh abstract
    address, with ``GLOBUS_CWLOGGER_ADDRESS`` pointing at it for the test.

    Handlers built during the test without a ``host`` deliver to it.  The
    variable is restored (or removed) and the stand-in stopped afterwards.
    """
    from .testing import LocalDaemon  # here: loading the plugin stays cheap

    with LocalDaemon() as daemon:
        monkeypatch.setenv(ENV_ADDRESS, display_address(daemon.address))
        yield daemon
