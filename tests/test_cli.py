"""python -m globus.cwlogger: --version, send, status, spool, listen, demo."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import io
import json
import logging
import math
import os
import pathlib
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from typing import ClassVar
from unittest import mock

import globus.cwlogger
from globus.cwlogger import ENV_ADDRESS, GlobusSocketHandler, _connect, protocol
from globus.cwlogger.__main__ import UNHEALTHY_PERCENT_FULL, _parser, main
from globus.cwlogger._spool import Spool, frame
from globus.cwlogger.testing import LocalDaemon

from .support import unique_address

# Where `globus/cwlogger` lives: src/ or site-packages.
PACKAGE_ROOT = pathlib.Path(globus.cwlogger.__file__).resolve().parents[2]
# Children run as strictly as the suite: an unclosed socket is a bug there too.
PYTHON = [sys.executable, "-X", "dev", "-W", "error"]


def cli(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command line in a new interpreter, warnings as errors.  Text
    is UTF-8 with surrogateescape, so ``input`` can carry any byte."""
    return subprocess.run(
        [*PYTHON, "-m", "globus.cwlogger", *args],
        input=input,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="surrogateescape",
        timeout=60,
        check=False,
    )


def run(*args: str) -> tuple[int, str, str]:
    """Run the command line in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(args), prog="cwl")
    return status, out.getvalue(), err.getvalue()


def temporary_directory(test: unittest.TestCase) -> pathlib.Path:
    directory = tempfile.TemporaryDirectory()
    test.addCleanup(directory.cleanup)
    return pathlib.Path(directory.name)


def at(address: str) -> str:
    return protocol.display_address(address)


class CliTestCase(unittest.TestCase):
    def assert_one_line(self, text: str, expected: str) -> None:
        self.assertEqual(len(text.splitlines()), 1, text)
        self.assertIn(expected, text)
        self.assertNotIn("Traceback", text)


class VersionTest(CliTestCase):
    def test_version_option_shows_the_installed_metadata(self) -> None:
        installed = importlib.metadata.version("globus-cw-loghandler")
        result = cli("--version")
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        self.assertEqual(result.stdout, f"globus-cw-loghandler {installed}\n")
        self.assertEqual(globus.cwlogger.__version__, installed)

    def test_version_is_read_on_first_access_not_at_import(self) -> None:
        # -S: no site, so nothing but this code can import importlib.metadata.
        code = textwrap.dedent("""\
            import sys
            assert "importlib.metadata" not in sys.modules, "imported before the test"
            import globus.cwlogger as cw
            assert "importlib.metadata" not in sys.modules, "import read the metadata"
            assert "__version__" in dir(cw) and "__version__" not in vars(cw)
            print(cw.__version__)
            assert vars(cw)["__version__"] is cw.__version__, "not cached"
            """)
        for root, expected in [
            (PACKAGE_ROOT, importlib.metadata.version("globus-cw-loghandler")),
            (self.tree_without_metadata(), "0+unknown"),
        ]:
            with self.subTest(root=root):
                result = subprocess.run(
                    [*PYTHON, "-S", "-c", code],
                    env={**os.environ, "PYTHONPATH": str(root)},
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertEqual(result.stdout, expected + "\n")

    def tree_without_metadata(self) -> pathlib.Path:
        """The package alone, as in a source tree that was never installed."""
        root = temporary_directory(self)
        (root / "globus").mkdir()
        (root / "globus" / "cwlogger").symlink_to(PACKAGE_ROOT / "globus" / "cwlogger")
        return root


class BadInputTest(CliTestCase):
    CASES: ClassVar[list[tuple[tuple[str, ...], str]]] = [
        ((), "required: COMMAND"),
        (("bogus",), "invalid choice: 'bogus'"),
        (("send",), "required: MESSAGE"),
        (("send", "x", "--timeout"), "expected one argument"),
        (("send", "x", "--timeout", "-1"), "timeout must be a positive number"),
        (("send", "x", "--timeout", "0"), "timeout must be a positive number"),
        (("send", "x", "--timeout", "nan"), "positive number of seconds, at most 2147483.647: nan"),
        (("send", "x", "--timeout", "inf"), "positive number of seconds, at most 2147483.647: inf"),
        (("send", "x", "--timeout", "1e999"), ": inf"),
        (("send", "x", "--timeout", "3e6"), "at most 2147483.647: 3000000.0"),
        (("send", "x", "--timeout", "abc"), "timeout must be a number of seconds, not str: 'abc'"),
        (("send", "x", "--timeout", ""), "not str: ''"),
        (("send", "x", "--daemon-uid", "-1"), "daemon_uid must be non-negative: -1"),
        (("send", "x", "--daemon-uid", "1.5"), "daemon_uid must be an int or None, not str: '1.5'"),
        (("send", "x", "--address", "relative"), "absolute path: 'relative'"),
        (("send", "x", "--address", ""), "absolute path: ''"),
        (("send", "x", "--address", "@"), "empty name: '@'"),
        (("send", "x", "--address", "/" + "a" * 200), "longer than 108 bytes"),
        (("send", "x", "--adr", "@a"), "unrecognized arguments: --adr"),
        (("send", "x", "--addr", "@a"), "unrecognized arguments: --addr"),  # no abbreviations
        (("send", ""), "the message is empty"),
        (("status", "--timeout", "nan"), ": nan"),
        (("status", "--address", "\\0"), "empty name: '\\\\0'"),
        (("status", "extra"), "unrecognized arguments: extra"),
        (("listen",), "required: --address"),
        (("listen", "--address", "tmp/sock"), "absolute path: 'tmp/sock'"),
        (("listen", "--address", "@a", "--behaviour", "slow"), "invalid choice: 'slow'"),
        (("demo", "now"), "unrecognized arguments: now"),
        (("spool",), "required: DIR"),
        (("spool", "/nonexistent/cwlogger-spool"), "no such directory: '/nonexistent/"),
        (("spool", "relative/cwlogger-spool"), "no such directory: 'relative/cwlogger-spool'"),
        (("spool", "/etc/passwd"), "not a directory: '/etc/passwd'"),
        (("spool", "/"), "not a spool directory: '/' holds"),
        (("spool", "/", "--replay", "--timeout", "0"), "timeout must be a positive number"),
        (("spool", "/", "--replay", "--address", "rel"), "absolute path: 'rel'"),
        (("spool", "/", "--rep"), "unrecognized arguments: --rep"),
    ]

    def test_each_is_one_line_and_exit_status_2(self) -> None:
        for args, expected in self.CASES:
            with self.subTest(args=args):
                status, out, err = run(*args)
                self.assertEqual((status, out), (2, ""))
                self.assert_one_line(err, expected)
                self.assertTrue(err.startswith("cwl"), err)

    def test_in_a_real_process(self) -> None:
        for args, expected in [
            (("send", "--timeout", "-1", "x"), "argument --timeout: timeout must be"),
            (("listen",), "the following arguments are required: --address"),
            ((), "required: COMMAND"),
        ]:
            with self.subTest(args=args):
                result = cli(*args)
                self.assertEqual((result.returncode, result.stdout), (2, ""))
                self.assert_one_line(result.stderr, expected)

    def test_bad_address_in_the_environment(self) -> None:
        env = {**os.environ, ENV_ADDRESS: "relative"}
        for command in ("send", "status"):
            with self.subTest(command=command):
                result = cli(command, *(["x"] if command == "send" else []), env=env)
                self.assertEqual(result.returncode, 2)
                self.assert_one_line(result.stderr, f"${ENV_ADDRESS}: address must be")

    def test_help_exits_0(self) -> None:
        for args in [("--help",), ("send", "--help"), ("status", "-h")]:
            with self.subTest(args=args):
                status, out, err = run(*args)
                self.assertEqual((status, err), (0, ""))
                self.assertTrue(out.startswith("usage: cwl"), out)


class HelpTest(unittest.TestCase):
    def test_every_option_has_help(self) -> None:
        parsers = [_parser()]
        seen = []
        while parsers:
            parser = parsers.pop()
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    parsers.extend(action.choices.values())
                    actions = action._choices_actions
                else:
                    actions = [action]
                for each in actions:
                    seen.append(each.dest)
                    self.assertTrue(each.help, f"{parser.prog}: {each.dest} has no help")
        self.assertLessEqual({"version", "message", "address", "timeout", "daemon_uid"}, set(seen))
        self.assertLessEqual({"behaviour", "send", "status", "listen", "demo"}, set(seen))
        self.assertLessEqual({"spool", "directory", "replay"}, set(seen))

    def test_status_help_says_the_probe_is_an_event(self) -> None:
        status, out, _ = run("status", "--help")
        self.assertEqual(status, 0)
        self.assertIn('"subtype": "cwlogger.status"', " ".join(out.split()))
        self.assertIn("real, small event", " ".join(out.split()))


class ReadmeTest(unittest.TestCase):
    def test_command_line_section(self) -> None:
        readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
        section = readme.split("## Command line\n")[1].split("\n## ")[0]
        block = section.split("```console\n")[1].split("```")[0]
        commands = [line.split("#")[0].split("|")[-1] for line in block.splitlines()]
        self.assertEqual(len(commands), 8)
        for command in commands:
            with self.subTest(command=command):
                words = shlex.split(command)
                self.assertEqual(words[:3], ["python", "-m", "globus.cwlogger"])
                if words[3:] != ["--version"]:
                    self.assertEqual(_parser().parse_args(words[3:]).command, words[3])
        self.assertIn(f"less than {UNHEALTHY_PERCENT_FULL:g}% full", section)
        self.assertIn('{"type": "audit", "subtype": "cwlogger.status"', section)


class ProgramNameTest(unittest.TestCase):
    def test_as_a_module(self) -> None:
        result = cli("send", "--help")
        self.assertTrue(result.stdout.startswith("usage: python -m globus.cwlogger send "))
        result = cli("send")
        self.assertTrue(result.stderr.startswith("python -m globus.cwlogger send: error: "))

    def test_as_the_installed_script(self) -> None:
        # What pip writes for [project.scripts]; and the real one when installed.
        scripts = [temporary_directory(self) / "globus-cwlogger"]
        scripts[0].write_text(
            "import re, sys\n"
            "from globus.cwlogger.__main__ import main\n"
            "if __name__ == '__main__':\n"
            "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
            "    sys.exit(main())\n"
        )
        installed = pathlib.Path(sys.executable).parent / "globus-cwlogger"
        if installed.exists():
            scripts.append(installed)
        for script in scripts:
            with self.subTest(script=script):
                result = subprocess.run(
                    [sys.executable, str(script), "send", "--timeout", "-1", "x"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                self.assertEqual(result.returncode, 2)
                self.assertTrue(result.stderr.startswith("globus-cwlogger send: error: "))


class SendTest(CliTestCase):
    def test_acknowledged(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            result = cli("send", "deploy finished", "--address", at(daemon.address))
            self.assertEqual([e.message for e in daemon.wait_for(1)], ["deploy finished"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout,
            f"acknowledged by {at(daemon.address)}: queue_length=1 queue_percent_full=0.001\n",
        )

    def test_refused(self) -> None:
        with LocalDaemon(unique_address(), behaviour="refuse") as daemon:
            status, _, err = run("send", "x", "--address", at(daemon.address))
        self.assertEqual(status, 1)
        self.assert_one_line(err, "too many events in queue")

    def test_no_daemon(self) -> None:
        address = at(unique_address())
        status, _, err = run("send", "x", "--address", address)
        self.assertEqual(status, 1)
        self.assert_one_line(err, f"nothing listens on {address}: ConnectionRefusedError")

    def test_timeout_bounds_a_hung_daemon(self) -> None:
        with LocalDaemon(unique_address(), behaviour="hang") as daemon:
            start = time.monotonic()
            status, _, err = run("send", "x", "--address", at(daemon.address), "--timeout", "0.3")
            elapsed = time.monotonic() - start
        self.assertEqual(status, 1)
        self.assert_one_line(err, f"not acknowledged: {at(daemon.address)}: no reply within 0.3 s")
        self.assertGreaterEqual(elapsed, 0.3)
        self.assertLess(elapsed, 2.0)

    def test_daemon_uid(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            where, other = at(daemon.address), str(os.getuid() + 1)
            status, _, err = run("send", "x", "--address", where, "--daemon-uid", other)
            self.assertEqual(status, 1)
            self.assert_one_line(err, f"runs as uid {os.getuid()}, not daemon_uid {other}")
            self.assertFalse(any(daemon.requests))  # nothing was sent to it
            mine = str(os.getuid())
            status, _, err = run("send", "y", "--address", at(daemon.address), "--daemon-uid", mine)
            self.assertEqual((status, err), (0, ""))
            self.assertEqual([e.message for e in daemon.wait_for(1)], ["y"])

    def test_message_from_standard_input(self) -> None:
        for given, sent in [
            ("first\n  second\tline\n", "first\n  second\tline"),  # echo's newline only
            ("two newlines at the end\n\n", "two newlines at the end\n"),
            ("no newline", "no newline"),
            ("not utf-8: \udcff\n", "not utf-8: \ufffd"),  # the byte 0xff
        ]:
            with self.subTest(given=given), LocalDaemon(unique_address()) as daemon:
                result = cli("send", "-", "--address", at(daemon.address), input=given)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertEqual([e.message for e in daemon.wait_for(1)], [sent])
                self.assertEqual(len(daemon.requests), 1)

    def test_empty_or_closed_standard_input(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            where = at(daemon.address)
            empty = cli("send", "-", "--address", where, input="\n")
            command = f'exec "$0" -m globus.cwlogger send - --address {where} <&-'
            closed = subprocess.run(
                ["sh", "-c", command, sys.executable],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            self.assertFalse(any(daemon.requests))
        self.assertEqual(empty.returncode, 2)
        self.assert_one_line(empty.stderr, "the message is empty")
        self.assertEqual(closed.returncode, 2)
        self.assert_one_line(closed.stderr, "standard input is closed")

    def test_address_from_the_environment(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            result = cli("send", "x", env={**os.environ, ENV_ADDRESS: at(daemon.address)})
            self.assertEqual([e.message for e in daemon.wait_for(1)], ["x"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"acknowledged by {at(daemon.address)}:", result.stdout)

    def test_without_address_looks_where_the_handler_looks(self) -> None:
        # The two default addresses, moved to private ones for the test.
        abstract = unique_address()
        path = str(temporary_directory(self) / "cwlogs")
        env = {k: v for k, v in os.environ.items() if k != ENV_ADDRESS}
        with (
            mock.patch.dict(os.environ, env, clear=True),
            mock.patch.multiple(protocol, DEFAULT_ADDRESS=abstract),
            mock.patch.multiple(_connect, NEWER_DAEMON_PATH=path),
        ):
            status, _, err = run("send", "x")
            self.assertEqual(status, 1)
            self.assert_one_line(err, f"nothing listens on {at(abstract)} or {path}:")
            with LocalDaemon(path) as newer:
                status, out, _ = run("send", "to the newer daemon")
                self.assertEqual((status, out.split(":")[0]), (0, f"acknowledged by {path}"))
                with LocalDaemon(abstract) as older:
                    status, out, _ = run("send", "to the abstract name first")
                    self.assertEqual(status, 0)
                    self.assertIn(f"acknowledged by {at(abstract)}:", out)
                    self.assertEqual(len(older.wait_for(1)), 1)
            self.assertEqual([e.message for e in newer.events], ["to the newer daemon"])


class StatusTest(CliTestCase):
    def status(self, daemon: LocalDaemon, *args: str) -> tuple[int, list[str]]:
        code, out, err = run("status", "--address", at(daemon.address), *args)
        self.assertEqual(err, "")
        return code, out.splitlines()

    def listener_line(self, daemon: LocalDaemon) -> str:
        return f"{at(daemon.address)}: listening, pid {os.getpid()}, uid {os.getuid()}"

    def test_healthy_and_the_probe_it_sent(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            code, lines = self.status(daemon)
            (probe,) = daemon.wait_for(1)
        self.assertEqual(code, 0)
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].startswith(self.listener_line(daemon)), lines)
        self.assertEqual(lines[1], "healthy: queue_length=1 queue_percent_full=0.001")
        event = json.loads(probe.message)
        self.assertEqual(event["type"], "audit")
        self.assertEqual(event["subtype"], "cwlogger.status")

    def test_a_queue_half_full_is_unhealthy(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            for full, expected in [(49.9, 0), (UNHEALTHY_PERCENT_FULL, 1), (100.0, 1)]:
                with self.subTest(full=full):
                    daemon.queue_percent_full = full
                    code, lines = self.status(daemon)
                    self.assertEqual(code, expected)
                    verdict = "unhealthy" if expected else "healthy"
                    self.assertTrue(lines[1].startswith(f"{verdict}: "), lines)
                    self.assertIn(f"queue_percent_full={full}", lines[1])

    def test_no_health_without_an_acknowledgement(self) -> None:
        for behaviour, why in [
            ("refuse", "the probe was refused: Exception('too many events in queue')"),
            ("close", "ConnectionResetError: the daemon closed the connection without a reply"),
            ("hang", "no reply within 0.2 s"),
            ("stall", "no reply within 0.2 s"),
        ]:
            with self.subTest(behaviour=behaviour):
                with LocalDaemon(unique_address(), behaviour=behaviour) as daemon:  # type: ignore[arg-type]
                    code, lines = self.status(daemon, "--timeout", "0.2")
                self.assertEqual(code, 1)
                self.assertTrue(lines[0].startswith(self.listener_line(daemon)), lines)
                self.assertEqual(lines[1:], [f"health unknown: {why}"])

    def test_nothing_listens(self) -> None:
        address = at(unique_address())
        code, out, _ = run("status", "--address", address)
        self.assertEqual(code, 1)
        self.assert_one_line(out, f"nothing listens on {address}: ConnectionRefusedError")

    def test_full_backlog(self) -> None:
        with LocalDaemon(unique_address(), behaviour="stall", backlog=0) as daemon:
            waiting = socket.socket(socket.AF_UNIX)
            self.addCleanup(waiting.close)
            waiting.connect(daemon.address)  # a backlog of 0 holds this one only
            code, out, _ = run("status", "--address", at(daemon.address), "--timeout", "0.2")
        self.assertEqual(code, 1)
        self.assert_one_line(
            out,
            f"cannot connect to {at(daemon.address)}: "
            "the daemon's listen backlog stayed full for 0.2 s",
        )

    def test_another_uid_is_not_probed(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            code, lines = self.status(daemon, "--daemon-uid", str(os.getuid() + 1))
            self.assertFalse(any(daemon.requests))
        self.assertEqual(code, 1)
        self.assertIn(f"PermissionError: the listener (pid {os.getpid()})", lines[0])

    def test_in_a_real_process_reports_the_listener_not_itself(self) -> None:
        with LocalDaemon(unique_address()) as daemon:
            result = cli("status", "--address", at(daemon.address))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(result.stdout.startswith(self.listener_line(daemon)), result.stdout)


class ClosedOutputTest(unittest.TestCase):
    def test_ends_quietly(self) -> None:
        # A pipe nobody reads, as `| head -1` leaves once head has exited.
        with LocalDaemon(unique_address()) as daemon:
            # send's result is lost: 1.  Help is 0 where argparse ignores the
            # failed write (3.10 and newer), 1 where it raises.
            for args, expected in [
                (("--help",), {0, 1}),
                (("send", "x", "--address", at(daemon.address)), {1}),
            ]:
                with self.subTest(args=args):
                    read, write = os.pipe()
                    os.close(read)
                    with subprocess.Popen(
                        [*PYTHON, "-m", "globus.cwlogger", *args],
                        stdout=write,
                        stderr=subprocess.PIPE,
                        text=True,
                    ) as child:
                        os.close(write)
                        _, err = child.communicate(timeout=60)
                    self.assertEqual(err, "")
                    self.assertIn(child.returncode, expected)
            self.assertEqual([e.message for e in daemon.wait_for(1)], ["x"])


class ListenTest(CliTestCase):
    def start(self, address: str) -> subprocess.Popen[str]:
        listener = subprocess.Popen(
            [*PYTHON, "-m", "globus.cwlogger", "listen", "--address", at(address)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(listener.wait)
        self.addCleanup(listener.kill)
        assert listener.stderr is not None and listener.stdout is not None
        self.addCleanup(listener.stderr.close)
        self.addCleanup(listener.stdout.close)
        self.assertEqual(listener.stderr.readline(), f"listening on {at(address)}\n")
        return listener

    def test_prints_each_event_as_a_json_line(self) -> None:
        address = unique_address()
        listener = self.start(address)
        assert listener.stderr is not None and listener.stdout is not None
        handler = GlobusSocketHandler(address, fallback="off")
        self.addCleanup(handler.close)
        created = time.time() - 60
        record = logging.makeLogRecord({"msg": 'two\nlines "quoted"', "created": created})
        handler.handle(record)
        self.assertEqual(handler.delivered, 1)
        line = json.loads(listener.stdout.readline())
        expected = {"timestamp": int(created * 1000), "message": 'two\nlines "quoted"'}
        self.assertEqual(line, expected)
        listener.send_signal(signal.SIGTERM)
        self.assertEqual(listener.wait(timeout=10), 0)
        self.assertEqual(listener.stderr.read(), "")

    def test_closed_output_ends_it_quietly(self) -> None:
        # As `listen | head -1` does.
        address = unique_address()
        listener = self.start(address)
        assert listener.stderr is not None and listener.stdout is not None
        handler = GlobusSocketHandler(address, fallback="off")
        self.addCleanup(handler.close)
        handler.handle(logging.makeLogRecord({"msg": "first"}))
        self.assertIn("first", listener.stdout.readline())
        listener.stdout.close()
        handler.handle(logging.makeLogRecord({"msg": "second"}))
        self.assertEqual(listener.wait(timeout=10), 1)
        self.assertEqual(listener.stderr.read(), "")

    def test_address_in_use(self) -> None:
        for address in [unique_address(), str(temporary_directory(self) / "sock")]:
            with self.subTest(address=address), LocalDaemon(address) as daemon:
                result = cli("listen", "--address", at(address))
                self.assertEqual((result.returncode, result.stdout), (1, ""))
                self.assert_one_line(
                    result.stderr, f"cannot listen on {at(address)}: Address already in use"
                )
                status, _, _ = run("send", "still there", "--address", at(address))
                self.assertEqual(status, 0)
                self.assertEqual([e.message for e in daemon.wait_for(1)], ["still there"])


class DemoTest(unittest.TestCase):
    def test_demo(self) -> None:
        result = cli("demo")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("host: '\\0globus-cwlogger-standin-", result.stdout)
        self.assertEqual(result.stdout.count("- timestamp="), 4)
        self.assertIn("Traceback (most recent call last)", result.stdout)
        self.assertIn("bytes cut]", result.stdout)
        self.assertIn("delivered=4 undelivered=0 truncated=1", result.stdout)


def iso(timestamp: int) -> str:
    """A timestamp in ms as the spool command shows it."""
    seconds, ms = divmod(timestamp, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


class SpoolTest(CliTestCase):
    """``spool DIR [--replay]`` on directories that real handlers filled."""

    def setUp(self) -> None:
        self.directory = str(temporary_directory(self) / "spool")
        self.now = math.floor(time.time()) - 600  # whole seconds: exact timestamps

    def handler(self) -> GlobusSocketHandler:
        """A handler whose daemon is not there: what it logs is spooled."""
        handler = GlobusSocketHandler(
            unique_address(), spool=self.directory, fallback="off", timeout=0.5
        )
        self.addCleanup(handler.close)
        return handler

    def fill(self, ages: list[int], handler: GlobusSocketHandler | None = None) -> list[bytes]:
        """Log one record per age (seconds before self.now), through
        ``handler`` (else a handler of its own, closed after); the requests
        spooled, as the handler made them."""
        logger = handler or self.handler()
        requests = []
        with contextlib.redirect_stderr(io.StringIO()) as warned:
            for age in ages:
                message = f"record {age} s old"
                logger.handle(logging.makeLogRecord({"msg": message, "created": self.now - age}))
                requests.append(protocol.encode_event(message, (self.now - age) * 1000)[0])
        self.assertIn(f"they go to the spool {self.directory}", warned.getvalue())
        self.assertEqual((logger.spooled, logger.undelivered), (len(ages), 0))
        if handler is None:
            logger.close()
        return requests

    def replay(self, daemon: LocalDaemon, *args: str) -> tuple[int, list[str]]:
        code, out, err = run(
            "spool", self.directory, "--replay", "--address", at(daemon.address), *args
        )
        self.assertEqual(err, "")
        return code, out.splitlines()

    def test_shows_what_a_closed_handler_left(self) -> None:
        requests = self.fill([30, 90, 60])  # the oldest is not the first
        size = sum(map(len, requests))
        code, out, err = run("spool", self.directory)
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        oldest = iso((self.now - 90) * 1000)
        head = f"{self.directory}: 3 records not replayed yet ({size} bytes), the oldest from "
        self.assertTrue(lines[0].startswith(f"{head}{oldest}, 1"), lines)  # 10.0 min ago or so
        self.assertTrue(lines[0].endswith(" min ago"), lines)
        self.assertEqual(len(lines), 5, lines)
        self.assertTrue(
            lines[1].startswith(
                f"  pid {os.getpid()} (gone): 3 records ({size} bytes) in 1 segment, "
                f"the oldest from {oldest}"
            ),
            lines,
        )
        framed = sum(len(frame(request)) for request in requests)
        # A replay pass that found no daemon may have left its checkpoint.
        checkpoints = [n for n in os.listdir(self.directory) if n.endswith(".ack")]
        framed += sum(os.path.getsize(os.path.join(self.directory, n)) for n in checkpoints)
        self.assertEqual(lines[2], f"{framed} bytes in the directory (what the bound counts)")
        self.assertEqual(
            lines[3:], ["quarantined: 0 files", "dropped at the bound, not reported yet: 0 records"]
        )

    def test_a_running_handler_and_an_empty_spool(self) -> None:
        code, out, _ = run("spool", self.directory + "/")  # not created yet: bad input
        self.assertEqual(code, 2)
        handler = self.handler()  # creates it
        code, out, _ = run("spool", self.directory)
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines()[0], f"{self.directory}: 0 records not replayed yet (0 bytes)"
        )
        self.fill([5, 6], handler)
        code, out, _ = run("spool", self.directory)
        self.assertIn(f"  pid {os.getpid()} (running): 2 records (", out)
        handler.close()
        code, out, _ = run("spool", self.directory)
        self.assertIn(f"  pid {os.getpid()} (gone): 2 records (", out)

    def test_a_recent_record_is_seconds_old(self) -> None:
        handler = self.handler()
        with contextlib.redirect_stderr(io.StringIO()):
            handler.handle(logging.makeLogRecord({"msg": "just now"}))
        handler.close()
        _, out, _ = run("spool", self.directory)
        self.assertRegex(out.splitlines()[0], r", the oldest from \S+Z, [0-9]+ s ago$")

    def test_replays_the_exact_requests_then_one_audit_event(self) -> None:
        requests = self.fill([3, 2, 1])
        with LocalDaemon(unique_address()) as daemon:
            code, lines = self.replay(daemon)
            events = daemon.wait_for(4)
            raw = list(daemon.requests)
        self.assertEqual(code, 0, lines)
        self.assertEqual(
            lines,
            [
                f"replayed 3 records to {at(daemon.address)}: restamped 0, duplicates 0, "
                "quarantined 0, torn 0; dropped at the bound and reported 0",
                'the daemon acknowledged the audit event ({"subtype": "cwlogger.spool"})',
            ],
        )
        self.assertEqual(raw[:3], requests)  # byte for byte, timestamps included
        audit = json.loads(events[3].message)
        self.assertEqual((audit["subtype"], audit["replayed"]), ("cwlogger.spool", 3))
        self.assertEqual(audit["processes"][0]["pid"], os.getpid())
        self.assertEqual(audit["directory"], self.directory)
        self.assertEqual(sorted(os.listdir(self.directory)), ["replay.lock"])  # all sent
        _, out, _ = run("spool", self.directory)
        self.assertIn(": 0 records not replayed yet", out)

    def test_in_a_real_process(self) -> None:
        self.fill([1])
        with LocalDaemon(unique_address()) as daemon:
            result = cli("spool", self.directory, "--replay", "--address", at(daemon.address))
            self.assertEqual(len(daemon.wait_for(2)), 2)
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        self.assertTrue(result.stdout.startswith("replayed 1 record to "), result.stdout)

    def test_what_is_left_when_the_daemon_does_not_acknowledge(self) -> None:
        self.fill([2, 1])
        address = at(unique_address())
        code, out, err = run("spool", self.directory, "--replay", "--address", address)
        lines = out.splitlines()
        self.assertEqual((code, err), (1, ""))
        self.assertEqual(
            lines[0],
            "replayed 0 records: restamped 0, duplicates 0, quarantined 0, torn 0; "
            "dropped at the bound and reported 0",
        )
        self.assertTrue(
            lines[1].startswith(f"stopped: nothing listens on {address}: ConnectionRefusedError"),
            lines,
        )
        self.assertTrue(lines[2].startswith(f"left: pid {os.getpid()} (gone): 2 records ("), lines)
        self.assertTrue(lines[2].endswith("(run --replay again)"), lines)
        self.assertEqual(len(lines), 3)
        with LocalDaemon(unique_address(), behaviour="refuse") as daemon:
            code, lines = self.replay(daemon)
            self.assertEqual(len(daemon.requests), 1)  # stopped at the first refusal
        self.assertEqual(code, 1)
        self.assertEqual(
            lines[1],
            f"stopped: refused by {at(daemon.address)}: Exception('too many events in queue')",
        )
        self.assertIn(": 2 records (", lines[2])

    def test_timeout_bounds_a_hung_daemon_and_its_record_counts_as_a_duplicate(self) -> None:
        self.fill([2, 1])
        with LocalDaemon(unique_address(), behaviour="hang") as daemon:
            start = time.monotonic()
            code, lines = self.replay(daemon, "--timeout", "0.3")
            elapsed = time.monotonic() - start
        self.assertEqual(code, 1)
        self.assertEqual(lines[1], f"stopped: {at(daemon.address)}: no reply within 0.3 s")
        self.assertGreaterEqual(elapsed, 0.3)
        self.assertLess(elapsed, 2.0)
        with LocalDaemon(unique_address()) as daemon:
            code, lines = self.replay(daemon)  # the daemon may have had the first
        self.assertEqual(code, 0, lines)
        self.assertTrue(lines[0].startswith("replayed 2 records to "), lines)
        self.assertIn(", duplicates 1,", lines[0])

    def test_a_running_handler_keeps_its_records(self) -> None:
        self.fill([1, 2], self.handler())  # still open: it holds its segment
        with LocalDaemon(unique_address()) as daemon:
            code, lines = self.replay(daemon)
            self.assertEqual(daemon.requests, [])  # nothing to report either
        self.assertEqual(code, 1)
        self.assertTrue(lines[0].startswith("replayed 0 records: "), lines)
        self.assertTrue(lines[1].startswith(f"left: pid {os.getpid()} (running): 2 records ("))
        self.assertTrue(lines[1].endswith("(its handler replays them)"), lines)

    def test_another_replayer_at_work(self) -> None:
        self.fill([1])
        lock = os.open(os.path.join(self.directory, "replay.lock"), os.O_RDWR | os.O_CLOEXEC)
        self.addCleanup(os.close, lock)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with LocalDaemon(unique_address()) as daemon:
            code, lines = self.replay(daemon)
            self.assertEqual(daemon.requests, [])
        self.assertEqual(code, 1)
        self.assertEqual(
            lines[1],
            f"not replayed: another process is replaying {self.directory} (it holds replay.lock)",
        )

    def test_restamped_quarantined_torn_and_dropped(self) -> None:
        # Written by the spool itself: a handler would restamp an old record
        # when it makes the request, and never writes a bad frame.
        spool = Spool(self.directory, max_bytes=600)
        old = (self.now - 20 * 86400) * 1000  # outside CloudWatch's 14 days
        requests = [protocol.encode_event(f"record {n}", old)[0] for n in range(3)]
        self.assertTrue(all(spool.append(request) for request in requests))
        self.assertFalse(spool.append(protocol.encode_event("x" * 600, old)[0]))  # the bound
        name = spool.active()[0]
        spool.close()
        path = os.path.join(self.directory, name)
        with open(path, "r+b") as segment:
            segment.seek(len(frame(requests[0])) + 20)  # in the second request's bytes
            segment.write(b"#")
            segment.seek(0, os.SEEK_END)
            segment.write(frame(requests[0])[:30])  # a writer killed mid-record
        _, out, _ = run("spool", self.directory)
        self.assertIn(": 2 records (", out)  # the first and the third
        self.assertIn("; 2 damaged frames (set aside when replayed)", out)
        self.assertIn(f"the oldest from {iso(old)}, 20.0 days ago", out)
        self.assertIn("dropped at the bound, not reported yet: 1 record\n", out)
        with LocalDaemon(unique_address()) as daemon:
            code, lines = self.replay(daemon)
            events = daemon.wait_for(3)
        self.assertEqual(code, 0, lines)
        self.assertEqual(
            lines[0],
            f"replayed 2 records to {at(daemon.address)}: restamped 2, duplicates 0, "
            "quarantined 1, torn 1; dropped at the bound and reported 1",
        )
        self.assertEqual([e.message for e in events[:2]], ["record 0", "record 2"])
        for event in events[:2]:  # now, not 20 days ago
            self.assertLess(abs((event.timestamp or 0) - time.time() * 1000), 60_000)
        audit = json.loads(events[2].message)
        self.assertEqual((audit["quarantined"], audit["torn"], audit["dropped"]), (1, 1, 1))
        _, out, _ = run("spool", self.directory)
        self.assertIn(": 0 records not replayed yet", out)
        self.assertIn("quarantined: 1 file\n", out)

    def test_not_a_spool(self) -> None:
        for entries, expected in [
            (["notes.txt"], "not a spool directory: '{}' holds 1 entries, none of them a spool's"),
            (["notes.txt", "replay.lock"], ""),  # a spool, with something else in it
        ]:
            with self.subTest(entries=entries):
                directory = temporary_directory(self)
                for entry in entries:
                    (directory / entry).touch()
                for args in [(), ("--replay", "--address", at(unique_address()))]:
                    code, out, err = run("spool", str(directory), *args)
                    if expected:
                        self.assertEqual((code, out), (2, ""))
                        self.assert_one_line(err, expected.format(directory))
                        self.assertTrue(err.startswith("cwl spool: error: "), err)
                    else:
                        self.assertEqual((code, err), (0, ""))
                        self.assertIn("0 records", out.splitlines()[0])
        # The handler's checks, before any replay: ours and private.
        if os.geteuid() == 0:
            foreign = temporary_directory(self) / "theirs"
            foreign.mkdir()
            os.chown(foreign, 65534, 65534)
            code, _, err = run("spool", str(foreign), "--replay")
            self.assertEqual(code, 2)
            self.assert_one_line(err, f"spool directory {str(foreign)!r} belongs to uid 65534")


if __name__ == "__main__":
    unittest.main()
