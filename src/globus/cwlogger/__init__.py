"""Send Python logging records to the CWLogger daemon, which forwards them to
Amazon CloudWatch Logs.

    import logging
    from globus.cwlogger import cloudwatch_handler
    logging.getLogger().addHandler(cloudwatch_handler)

Importing this package creates no handler and opens no socket:
``cloudwatch_handler`` is built on first access, once.
"""

from __future__ import annotations

import os
import threading

from ._handler import DEFAULT_TIMEOUT, ENV_ADDRESS, Fallback, GlobusSocketHandler
from .protocol import DEFAULT_ADDRESS

TYPE_CHECKING = False  # without importing typing: see _typing.py

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT",
    "ENV_ADDRESS",
    "Fallback",
    "GlobusQueueHandler",
    "GlobusSocketHandler",
    "JSONFormatter",
    "cloudwatch_handler",
    "emf",
]

if TYPE_CHECKING:
    from ._emf import emf
    from ._json import JSONFormatter
    from ._queued import GlobusQueueHandler

    #: The default handler: built on first access, then always the same one.
    cloudwatch_handler: GlobusSocketHandler
    #: The installed distribution's version, read from its metadata on first access.
    __version__: str
else:
    # Imported on first use, to keep `import globus.cwlogger` cheap.
    _LAZY = {"JSONFormatter": "_json", "emf": "_emf", "GlobusQueueHandler": "_queued"}
    _build_lock = threading.Lock()
    # A child forked while another thread held the lock gets a fresh one.
    os.register_at_fork(after_in_child=lambda: globals().update(_build_lock=threading.Lock()))

    def __getattr__(name: str) -> object:
        # Hidden from type checkers, so that a misspelled name stays an error.
        if name in _LAZY:
            # __import__, not importlib: importing importlib costs more here.
            module = __import__(f"{__name__}.{_LAZY[name]}", fromlist=[name])
            value = globals()[name] = getattr(module, name)
            return value
        if name == "__version__":
            from importlib.metadata import PackageNotFoundError, version

            try:
                value = version("globus-cw-loghandler")
            except PackageNotFoundError:  # a source tree that was never installed
                value = "0+unknown"
            globals()[name] = value
            return value
        if name != "cloudwatch_handler":
            msg = f"module {__name__!r} has no attribute {name!r}"
            raise AttributeError(msg)
        with _build_lock:
            handler = globals().get(name)
            if handler is None:
                handler = globals()[name] = GlobusSocketHandler()
        return handler


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | {"__version__"})
