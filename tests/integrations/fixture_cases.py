"""What the ``cwlogger_daemon`` fixture promises, run by pytest in a
subprocess (run.py's pytest-fixture check; the unit suite stays unittest).

The fixture comes from the installed plugin's entry point: no conftest.py.
The tests run in file order, so the later ones can look back.
"""

from __future__ import annotations

import logging
import os
import socket

from globus.cwlogger import ENV_ADDRESS, GlobusSocketHandler
from globus.cwlogger.testing import LocalDaemon

BEFORE = os.environ.get(ENV_ADDRESS)  # read at collection, before any fixture ran
ADDRESSES: list[str] = []


def send(message: str) -> GlobusSocketHandler:
    """Log ``message`` through a handler built now, without a host."""
    handler = GlobusSocketHandler()
    log = logging.getLogger("fixture.cases")
    log.addHandler(handler)
    try:
        log.warning(message)
    finally:
        log.removeHandler(handler)
        handler.close()
    return handler


def test_points_the_address_at_itself(cwlogger_daemon: LocalDaemon) -> None:
    assert os.environ[ENV_ADDRESS] == "@" + cwlogger_daemon.address[1:]
    assert os.environ[ENV_ADDRESS] != BEFORE
    assert send("first").delivered == 1
    assert [e.message for e in cwlogger_daemon.wait_for(1, strict=True)] == ["first"]
    ADDRESSES.append(cwlogger_daemon.address)


def test_each_test_gets_a_fresh_one(cwlogger_daemon: LocalDaemon) -> None:
    assert cwlogger_daemon.address not in ADDRESSES
    assert cwlogger_daemon.events == []
    send("second")
    assert [e.message for e in cwlogger_daemon.wait_for(1, strict=True)] == ["second"]
    ADDRESSES.append(cwlogger_daemon.address)


def test_strict_wait_for_raises(cwlogger_daemon: LocalDaemon) -> None:
    send("only one")
    try:
        cwlogger_daemon.wait_for(2, timeout=0.2, strict=True)
    except TimeoutError as error:
        assert "1 of 2" in str(error)
    else:
        msg = "wait_for(strict=True) returned fewer events"
        raise AssertionError(msg)


def test_restored_and_stopped_afterwards() -> None:
    assert os.environ.get(ENV_ADDRESS) == BEFORE
    for address in ADDRESSES:  # nothing listens there any more
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(address)
            except ConnectionRefusedError:
                continue
        msg = f"the fixture's stand-in on {address!r} still listens"
        raise AssertionError(msg)
    if BEFORE is not None:  # run.py's own stand-in: it expects this one record
        assert send("after the fixture").delivered == 1
