"""The README's recipes under the real frameworks (``nox -s integrations``).

    python tests/integrations/run.py [CHECK ...]      # all checks, or some
    python tests/integrations/run.py --list

Each check takes its recipes from README.md itself, fenced as
```` ```python gunicorn.conf.py ````: the language, then the file name the
user pastes it into (tests/test_readme.py runs only the untitled blocks).  It
writes them into a fresh directory, starts the real program (gunicorn,
uvicorn, ``manage.py``, a Celery worker, pytest, a script) with a
``LocalDaemon`` of its own as the daemon, makes it log records that carry
unique ids (HTTP requests, tasks, command arguments), stops it, and asserts
that every record arrived exactly once: for each id, one event per logger
expected and no other.  A process that wrote the handler's own warning
(``globus.cwlogger: ...``) on standard error fails the check too, as does a
titled block of the README that no check runs.

Only the frameworks' glue lives here (a WSGI and an ASGI app, a Django
project around the recipe's ``LOGGING``); it is written out as text, so that
type-checking this file does not need the frameworks installed.  This
directory has no ``__init__.py`` and no ``test*.py`` file: the unit suite's
discovery does not enter it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable

from globus.cwlogger import ENV_ADDRESS
from globus.cwlogger.testing import LocalDaemon

HERE = Path(__file__).resolve().parent
README = HERE.parents[1] / "README.md"
# ```python gunicorn.conf.py ... ```: a titled block.
TITLED = re.compile(r"^```(\w+) (\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
DEFAULT_NAME = "org.globus.cwlogs"
WAIT = 60.0  # seconds for anything to happen; a healthy run needs a few
WARNING = "globus.cwlogger:"  # how the handler's own warnings start
PREFIX = "globus-cwlogger-integrations-"  # of each run's directory


class CheckFailed(Exception):
    """A recipe did not deliver what it should have."""


def recipes(readme: Path) -> dict[str, str]:
    """The README's titled blocks, by file name."""
    found: dict[str, str] = {}
    for _, name, code in TITLED.findall(readme.read_text(encoding="utf-8")):
        if name in found:
            msg = f"{readme.name} has two blocks titled {name}"
            raise CheckFailed(msg)
        found[name] = code
    return found


class Run:
    """One check: a directory, a stand-in daemon, the processes it started."""

    def __init__(self, directory: Path, daemon: LocalDaemon, blocks: dict[str, str]) -> None:
        self.dir = directory
        self.daemon = daemon
        self.blocks = blocks
        self.used: set[str] = set()
        name = daemon.address[1:]
        self.env = {**os.environ, ENV_ADDRESS: "@" + name, "PYTHONPATH": str(directory)}
        self._name = name
        self._logs: list[tuple[list[str], Path]] = []
        self._processes: list[subprocess.Popen[bytes]] = []

    def write(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def recipe(self, name: str, target: str | None = None, prefix: str = "") -> Path:
        """Write the README's block ``name`` (after ``prefix``) to ``target``
        (by default ``name``), with this run's address for the default one."""
        if name not in self.blocks:
            msg = f"README.md has no block titled {name}"
            raise CheckFailed(msg)
        self.used.add(name)
        code = self.blocks[name].replace(DEFAULT_NAME, self._name)
        return self.write(target or name, prefix + code)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start a program in the directory, in a session of its own."""
        output = self.dir / f"output-{len(self._logs)}.txt"
        self._logs.append((list(args), output))
        # The commands the frameworks install, from this interpreter's venv.
        program = shutil.which(args[0], path=str(Path(sys.executable).parent)) or args[0]
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [program, *args[1:]],
                cwd=self.dir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._processes.append(process)
        return process

    def run(self, *args: str, status: int = 0) -> str:
        """Run a program to its end; return what it printed."""
        process = self.start(*args)
        code = process.wait(WAIT)
        printed = self._logs[-1][1].read_text(errors="replace")
        if code != status:
            msg = f"{args[0]} ... exited with {code}, not {status}"
            raise CheckFailed(msg)
        return printed

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM, as a service manager stops a service; wait for the exit."""
        process.send_signal(signal.SIGTERM)
        process.wait(WAIT)

    def kill_all(self) -> None:
        """End what a failed check left running: each process's group."""
        for process in self._processes:
            # Each leads a group of its own (start_new_session), which holds
            # its children too, even once it has exited itself.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def messages(self) -> list[str]:
        return [event.message for event in self.daemon.events]

    def wait_until(
        self, what: str, done: Callable[[], bool], server: subprocess.Popen[bytes]
    ) -> None:
        """Wait until ``done()``, while ``server`` runs."""
        deadline = time.monotonic() + WAIT
        while not done():
            if server.poll() is not None:
                msg = f"the server exited with {server.returncode} before {what}"
                raise CheckFailed(msg)
            if time.monotonic() > deadline:
                msg = f"timed out waiting for {what}"
                raise CheckFailed(msg)
            time.sleep(0.05)

    def wait_for_listener(self, path: Path, server: subprocess.Popen[bytes]) -> None:
        """Wait until ``server`` accepts connections on the Unix socket ``path``."""

        def listening() -> bool:
            with socket.socket(socket.AF_UNIX) as sock:
                try:
                    sock.connect(str(path))
                except (FileNotFoundError, ConnectionRefusedError):
                    return False
                return True

        self.wait_until(f"a listener on {path}", listening, server)

    def settle(self) -> list[str]:
        """Once the processes are gone: every message that arrived."""
        # The stand-in counts an event just after writing its reply, which the
        # last process may have read before exiting: give it a moment.
        seen = -1
        while seen != len(self.daemon.events):
            seen = len(self.daemon.events)
            time.sleep(0.2)
        for _, output in self._logs:
            for line in output.read_text(errors="replace").splitlines():
                if line.startswith(WARNING):
                    msg = f"the handler warned: {line}"
                    raise CheckFailed(msg)
        if self.daemon.hangups:  # a client that gave up waiting for its reply
            msg = f"{self.daemon.hangups} clients hung up before their reply"
            raise CheckFailed(msg)
        return self.messages()

    def settle_json(self) -> list[dict[str, object]]:
        """Once the processes are gone: every event, as JSON objects."""
        events = []
        for message in self.settle():
            try:
                event = json.loads(message)
            except json.JSONDecodeError:
                msg = f"not JSON: {message!r}"
                raise CheckFailed(msg) from None
            if not isinstance(event, dict):
                msg = f"not a JSON object: {message!r}"
                raise CheckFailed(msg)
            events.append(event)
        return events

    def show_outputs(self, out: IO[str]) -> None:
        """What the processes printed and what arrived, for a failed check."""
        for args, output in self._logs:
            out.write(f"--- {' '.join(args)}\n")
            out.write(textwrap.indent(output.read_text(errors="replace")[-4000:], "    "))
        messages = self.messages()
        out.write(f"--- the {len(messages)} events that arrived (the last 100)\n")
        for message in messages[-100:]:
            out.write(f"    {message[:300]}\n")


def _count(run: Run, text: str) -> int:
    """How many of the events so far contain ``text``."""
    return sum(text in message for message in run.messages())


def ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


def expect(events: list[dict[str, object]], uid: str, *loggers: str) -> list[dict[str, object]]:
    """Exactly one event per logger named (a logger named twice: two) carries
    ``uid``, and no other event does; return those events."""
    found = [event for event in events if uid in json.dumps(event)]
    got = collections.Counter(str(event.get("logger")) for event in found)
    if got != collections.Counter(loggers):
        msg = f"{uid}: expected one event from each of {sorted(loggers)}, got {dict(got)}"
        raise CheckFailed(msg)
    return found


def expect_count(events: list[dict[str, object]], logger: str, text: str, count: int) -> None:
    found = [e for e in events if e.get("logger") == logger and text in str(e.get("message"))]
    if len(found) != count:
        msg = f"expected {count} events from {logger} with {text!r}, got {len(found)}"
        raise CheckFailed(msg)


def http_get(path: str, url: str) -> None:
    """GET ``url`` from an HTTP server on the Unix socket ``path``."""
    connection = _UnixHTTPConnection(path)
    try:
        connection.request("GET", url)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    if response.status != 200:
        msg = f"GET {url}: {response.status}"
        raise CheckFailed(msg)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=WAIT)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


# --- gunicorn and uvicorn: real HTTP requests, each logged by the app -------

WSGI_APP = """\
import logging

log = logging.getLogger("app")


def app(environ, start_response):
    log.info("handled %s", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
"""

ASGI_APP = """\
import logging

log = logging.getLogger("app")


async def app(scope, receive, send):
    log.info("handled %s", scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok\\n"})
"""

REQUESTS = 40  # in each half, from 4 clients at once
BOOTED = "Booting worker with pid"


def serve(
    run: Run,
    sock: Path,
    args: list[str],
    between: Callable[[subprocess.Popen[bytes]], None] = lambda server: None,
) -> list[dict[str, object]]:
    """Start a server on ``sock``; GET one URL per id, calling ``between``
    halfway; stop it; check each id reached the app's logger and the access
    log once."""
    server = run.start(*args)
    run.wait_for_listener(sock, server)
    sent = ids(2 * REQUESTS)
    with ThreadPoolExecutor(4) as clients:
        list(clients.map(lambda uid: http_get(str(sock), f"/requests/{uid}"), sent[:REQUESTS]))
        between(server)
        list(clients.map(lambda uid: http_get(str(sock), f"/requests/{uid}"), sent[REQUESTS:]))
    run.stop(server)
    events = run.settle_json()
    access = "gunicorn.access" if args[0] == "gunicorn" else "uvicorn.access"
    for uid in sent:
        expect(events, uid, "app", access)
    return events


# gunicorn's control socket is one path per user by default: none, so that
# runs side by side do not share it.
GUNICORN = ["gunicorn", "--no-control-socket"]


def check_gunicorn_dict(run: Run) -> None:
    """gunicorn -c gunicorn.conf.py (logconfig_dict), 2 sync workers, a HUP."""
    run.write("app.py", WSGI_APP)
    run.recipe("gunicorn.conf.py")
    sock = run.dir / "http.sock"
    args = [*GUNICORN, "-c", "gunicorn.conf.py", "--bind", f"unix:{sock}", "app:app"]

    def reload(server: subprocess.Popen[bytes]) -> None:
        # HUP: gunicorn reads its configuration again (dictConfig, a new
        # handler in the master) and replaces both workers.
        server.send_signal(signal.SIGHUP)
        run.wait_until("the new workers", lambda: _count(run, BOOTED) >= 4, server)

    events = serve(run, sock, args, between=reload)
    _check_gunicorn(events, workers=4)
    expect_count(events, "gunicorn.error", "Handling signal: hup", 1)


def check_gunicorn_ini(run: Run) -> None:
    """gunicorn --log-config gunicorn-logging.ini (fileConfig), --preload, gthread."""
    run.write("app.py", WSGI_APP)
    run.recipe("gunicorn-logging.ini")
    sock = run.dir / "http.sock"
    args = [*GUNICORN, "--log-config", "gunicorn-logging.ini", "--workers", "2", "--preload"]
    args += ["--worker-class", "gthread", "--threads", "4", "--bind", f"unix:{sock}", "app:app"]
    _check_gunicorn(serve(run, sock, args), workers=2)


def _check_gunicorn(events: list[dict[str, object]], workers: int) -> None:
    # gunicorn's own records: from the master, and from each worker at start and exit.
    expect_count(events, "gunicorn.error", "Starting gunicorn", 1)
    expect_count(events, "gunicorn.error", BOOTED, workers)
    expect_count(events, "gunicorn.error", "Worker exiting", workers)
    expect_count(events, "gunicorn.error", "Shutting down: Master", 1)


def check_uvicorn(run: Run) -> None:
    """uvicorn --log-config uvicorn-logging.yaml --workers 2."""
    run.write("app.py", ASGI_APP)
    run.recipe("uvicorn-logging.yaml")
    sock = run.dir / "http.sock"
    args = ["uvicorn", "app:app", "--uds", str(sock), "--workers", "2", "--lifespan", "off"]
    events = serve(run, sock, [*args, "--log-config", "uvicorn-logging.yaml"])
    # Logged by each worker as it starts and as it exits, just before uvicorn
    # raises SIGTERM again and the worker dies of it.
    expect_count(events, "uvicorn.error", "Started server process", 2)
    expect_count(events, "uvicorn.error", "Finished server process", 2)
    expect_count(events, "uvicorn.error", "Stopping parent process", 1)
    if coloured := [e for e in events if "\x1b" in json.dumps(e, ensure_ascii=False)]:
        msg = f"ANSI escapes in {coloured[0]}"
        raise CheckFailed(msg)


# --- Django: manage.py commands ---------------------------------------------

DJANGO_SETTINGS = """\
SECRET_KEY = "integration-check"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = ["audit"]
ROOT_URLCONF = "mysite.urls"
DATABASES = {}
USE_TZ = True

"""

DJANGO_MANAGE = """\
import os
import sys

from django.core.management import execute_from_command_line

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
execute_from_command_line(sys.argv)
"""

DJANGO_COMMAND = """\
import logging

from django.core.management.base import BaseCommand
from django.test import Client

log = logging.getLogger("audit")


class Command(BaseCommand):
    help = "Log each id; ask for a missing page (django.request); log a traceback."

    def add_arguments(self, parser):
        parser.add_argument("missing")
        parser.add_argument("failing")
        parser.add_argument("ids", nargs="+")

    def handle(self, *args, missing, failing, ids, **options):
        for uid in ids:
            log.info("audited %s", uid)
        if Client().get(f"/missing/{missing}").status_code != 404:
            raise SystemExit("expected a 404")
        try:
            raise ValueError(failing)
        except ValueError:
            log.exception("failed")
"""


def check_django(run: Run) -> None:
    """Two `manage.py audit` commands at once, with LOGGING from settings.py."""
    run.write("manage.py", DJANGO_MANAGE)
    run.write("mysite/__init__.py", "")
    run.write("mysite/urls.py", "urlpatterns = []\n")
    run.recipe("settings.py", "mysite/settings.py", prefix=DJANGO_SETTINGS)
    for package in ("audit", "audit/management", "audit/management/commands"):
        run.write(f"{package}/__init__.py", "")
    run.write("audit/management/commands/audit.py", DJANGO_COMMAND)
    commands = [(ids(1)[0], ids(1)[0], ids(5)) for _ in range(2)]
    processes = [
        run.start(sys.executable, "manage.py", "audit", missing, failing, *each)
        for missing, failing, each in commands
    ]
    for process in processes:
        if process.wait(WAIT) != 0:
            msg = f"manage.py audit exited with {process.returncode}"
            raise CheckFailed(msg)
    events = run.settle_json()
    for missing, failing, each in commands:
        for uid in each:
            expect(events, uid, "audit")
        (not_found,) = expect(events, missing, "django.request")
        if not_found.get("status_code") != 404:
            msg = f"django.request: no status_code 404 in {not_found}"
            raise CheckFailed(msg)
        (failed,) = expect(events, failing, "audit")
        if f"ValueError: {failing}" not in str(failed.get("exception")):
            msg = f"the traceback is not in the event: {failed}"
            raise CheckFailed(msg)


# --- Celery: a worker with a prefork pool, on a filesystem broker -----------

CELERY_CONFIG = """\
broker_url = "filesystem://"
broker_transport_options = {{
    "data_folder_in": {queue!r},
    "data_folder_out": {queue!r},
    "control_folder": {control!r},
}}
broker_connection_retry_on_startup = True
task_ignore_result = True
worker_enable_remote_control = False
"""

TASKS = 12
CELERY_SEND = """\
import sys
import celery_app
for uid in sys.argv[1:]:
    celery_app.work.apply_async((uid,), task_id=uid)
"""


def check_celery(run: Run) -> None:
    """celery worker --pool prefork --concurrency 2 --max-tasks-per-child 3."""
    queue, control = run.dir / "broker" / "queue", run.dir / "broker" / "control"
    queue.mkdir(parents=True)
    control.mkdir()
    run.write("celeryconfig.py", CELERY_CONFIG.format(queue=str(queue), control=str(control)))
    run.recipe("celery_app.py")
    sent = ids(TASKS)
    # Children that reach --max-tasks-per-child end with os._exit and are replaced.
    worker = run.start(
        *("celery", "-A", "celery_app", "worker", "--loglevel", "INFO", "--pool", "prefork"),
        *("--concurrency", "2", "--max-tasks-per-child", "3"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
    )
    run.run(sys.executable, "-c", CELERY_SEND, *sent)
    # Each task: received (worker), run and succeeded (a pool child).
    run.wait_until(
        f"{TASKS} tasks to succeed", lambda: _count(run, "succeeded in") >= TASKS, worker
    )
    run.stop(worker)
    events = run.settle_json()
    for uid in sent:
        expect(events, uid, "celery.worker.strategy", "celery_app", "celery.app.trace")
    expect_count(events, "celery.apps.worker", "ready.", 1)


# --- structlog, through logging ---------------------------------------------

STRUCTLOG_MAIN = """\
import datetime
import sys
import uuid

import structlog

import logsetup  # the README's recipe: configures logging and structlog, logs its example

log = structlog.get_logger("service")
at = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
for uid in sys.argv[2:]:
    structlog.contextvars.bind_contextvars(request_id=uid)
    # `name` and `process` are LogRecord attributes: extra= would refuse them.
    log = log.bind(user="alice", name="bob")
    log.info("handled %s", "it", order=uuid.UUID(uid), at=at, items=3, process="billing")
structlog.contextvars.bind_contextvars(request_id=sys.argv[1])
try:
    1 / 0
except ZeroDivisionError:
    log.exception("failed")
"""


STRUCTLOG_BOUND = {"user": "alice", "name": "bob", "process": "billing"}


def check_structlog(run: Run) -> None:
    """structlog through stdlib logging: one JSON object per event."""
    run.recipe("logsetup.py")
    run.write("main.py", STRUCTLOG_MAIN)
    failing, *sent = ids(11)
    run.run(sys.executable, "main.py", failing, *sent)
    events = run.settle_json()
    example = [e for e in events if e.get("event") == "invoice paid"]
    _fields(example, {"logger": "billing", "invoice": 42, "customer": "alice"})
    for uid in sent:
        found = expect(events, uid, "service")
        _fields(found, {"event": "handled it", "request_id": uid, "items": 3, **STRUCTLOG_BOUND})
        _fields(found, {"order": str(uuid.UUID(uid)), "at": "2026-01-02T03:04:05+00:00"})
    (failed,) = expect(events, failing, "service")
    if "ZeroDivisionError" not in str(failed.get("exception")):
        msg = f"no traceback in {failed}"
        raise CheckFailed(msg)


def _fields(found: list[dict[str, object]], fields: dict[str, object]) -> None:
    if len(found) != 1 or any(found[0].get(k) != v for k, v in fields.items()):
        msg = f"expected one event with {fields} at the top level, got {found}"
        raise CheckFailed(msg)


# --- a cron-style script ----------------------------------------------------


def check_cron(run: Run) -> None:
    """nightly.py, 4 runs at once: 3 that succeed and 1 that fails."""
    run.recipe("nightly.py")
    run.write("a.csv", "1\n2\n3\n")
    run.write("b.csv", "1\n2\n3\n4\n5\n")
    ok = [run.start(sys.executable, "nightly.py", "a.csv", "b.csv") for _ in range(3)]
    failing = run.start(sys.executable, "nightly.py", "a.csv", "missing.csv")
    for process, status in [*((p, 0) for p in ok), (failing, 1)]:
        if process.wait(WAIT) != status:
            msg = f"nightly.py exited with {process.returncode}, not {status}"
            raise CheckFailed(msg)
    events = run.settle_json()
    expected = {
        **{
            p.pid: ["started", "read a.csv: 3 lines", "read b.csv: 5 lines", "finished"] for p in ok
        },
        failing.pid: ["started", "read a.csv: 3 lines", "failed"],
    }
    got = {pid: [e.get("message") for e in events if e.get("pid") == pid] for pid in expected}
    if got != expected or len(events) != sum(map(len, expected.values())):
        msg = f"expected, by process id, {expected}; got {got} ({len(events)} events)"
        raise CheckFailed(msg)
    (failed,) = [e for e in events if e.get("message") == "failed"]
    if "FileNotFoundError" not in str(failed.get("exception")):
        msg = f"no traceback in {failed}"
        raise CheckFailed(msg)


# --- the pytest fixture -----------------------------------------------------


def check_pytest_fixture(run: Run) -> None:
    """The cwlogger_daemon fixture, from the plugin's entry point."""
    run.recipe("test_audit.py")
    shutil.copy(HERE / "fixture_cases.py", run.dir)
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
    tests = ["test_audit.py", "fixture_cases.py"]
    # With the variable set (to this run's stand-in: the tests that use the
    # fixture must not reach it, the one after them must), then without it.
    run.run(*pytest, *tests)
    outer = run.settle()
    if outer != ["after the fixture"]:
        msg = f"the stand-in outside the fixture got {outer}"
        raise CheckFailed(msg)
    del run.env[ENV_ADDRESS]
    run.run(*pytest, *tests)
    # `-p no:globus_cwlogger`, as the plugin's docstring says, turns it off.
    printed = run.run(*pytest, "-p", "no:globus_cwlogger", "test_audit.py", status=1)
    if "fixture 'cwlogger_daemon' not found" not in printed:
        msg = f"-p no:globus_cwlogger: {printed}"
        raise CheckFailed(msg)
    # Loading the plugin imports no stand-in; importing the package, no plugin.
    lazy = (
        "import sys, globus.cwlogger; assert 'globus.cwlogger.pytest_plugin' not in sys.modules;"
        "import globus.cwlogger.pytest_plugin; assert 'globus.cwlogger.testing' not in sys.modules"
    )
    run.run(sys.executable, "-c", lazy)


CHECKS: dict[str, Callable[[Run], None]] = {
    "gunicorn-dict": check_gunicorn_dict,
    "gunicorn-ini": check_gunicorn_ini,
    "uvicorn": check_uvicorn,
    "django": check_django,
    "celery": check_celery,
    "structlog": check_structlog,
    "cron": check_cron,
    "pytest-fixture": check_pytest_fixture,
}


@contextmanager
def fresh_run(blocks: dict[str, str], used: set[str]) -> Iterator[Run]:
    # A fresh abstract address for each run: the stand-in's default.
    with tempfile.TemporaryDirectory(prefix=PREFIX) as name, LocalDaemon() as daemon:
        run = Run(Path(name), daemon, blocks)
        try:
            yield run
        except BaseException:
            run.kill_all()
            run.show_outputs(sys.stderr)
            raise
        finally:
            used |= run.used


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="*", metavar="CHECK", help="default: all of them")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--readme", type=Path, default=README, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.list:
        for name, check in CHECKS.items():
            print(f"{name:16} {(check.__doc__ or '').strip()}")
        return 0
    if unknown := sorted(set(args.checks) - set(CHECKS)):
        parser.error(f"no such check: {', '.join(unknown)} (see --list)")
    blocks = recipes(args.readme)
    used: set[str] = set()
    failed = []
    for name in args.checks or CHECKS:
        started = time.monotonic()
        try:
            with fresh_run(blocks, used) as run:
                CHECKS[name](run)
                print(f"ok     {name:16} {len(run.daemon.events):4} events", end="")
        except (CheckFailed, subprocess.TimeoutExpired) as error:
            failed.append(name)
            print(f"FAILED {name:16} {error}", end="")
        except Exception:
            failed.append(name)
            traceback.print_exc()
            print(f"FAILED {name:16} (the traceback above)", end="")
        print(f"  {time.monotonic() - started:5.1f} s", flush=True)
    if not args.checks and (unused := sorted(set(blocks) - used)):
        print(f"FAILED README.md blocks that no check runs: {unused}")
        failed.append("README.md")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
