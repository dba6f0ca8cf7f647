"""The usages PRODUCT.md promises, run verbatim in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

from globus.cwlogger import ENV_ADDRESS
from globus.cwlogger.testing import LocalDaemon

from .support import unique_address


def run_python(code: str, **env: str) -> str:
    """Run ``code`` in a new interpreter (so imports are fresh) and return
    its stdout; fail the test with its stderr if it fails."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        msg = f"exit {result.returncode}:\n{result.stderr}"
        raise AssertionError(msg)
    return result.stdout


class UsageTest(unittest.TestCase):
    def test_default_handler_verbatim(self) -> None:
        code = textwrap.dedent("""\
            import logging
            from globus.cwlogger import cloudwatch_handler
            log = logging.getLogger()
            log.addHandler(cloudwatch_handler)
            log.error("Something bad happened!")
        """)
        with LocalDaemon(unique_address()) as daemon:
            before = time.time()
            # An environment variable cannot hold a NUL byte: the @ form can.
            run_python(code, **{ENV_ADDRESS: "@" + daemon.address[1:]})
            after = time.time()
            (event,) = daemon.wait_for(1)
        self.assertEqual(event.message, "Something bad happened!")
        assert event.timestamp is not None
        self.assertLessEqual(int(before * 1000), event.timestamp)
        self.assertLessEqual(event.timestamp, after * 1000)

    def test_yaml_with_only_class_formatter_and_single_quoted_host(self) -> None:
        address = unique_address()
        # In a single-quoted YAML string \0 is not an escape: the handler gets
        # a backslash and a zero, exactly as users' files give it.
        config = textwrap.dedent(f"""\
            version: 1
            formatters:
              myjson:
                format: '{{"level": "%(levelname)s", "message": "%(message)s"}}'
            handlers:
              cloudwatch:
                class: globus.cwlogger.GlobusSocketHandler
                formatter: myjson
                host: '\\0{address[1:]}'
            root:
              level: INFO
              handlers: [cloudwatch]
        """)
        self.assertIn("host: '\\0globus-cwlogger-test-", config)
        code = textwrap.dedent("""\
            import logging, logging.config, sys, yaml
            with open(sys.argv[1]) as f:
                logging.config.dictConfig(yaml.safe_load(f))
            logging.getLogger("service").info("from yaml")
            (handler,) = logging.getLogger().handlers
            print(handler.port, handler.delivered)
        """)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(config)
        self.addCleanup(os.unlink, f.name)
        with LocalDaemon(address) as daemon:
            out = subprocess.run(
                [sys.executable, "-c", code, f.name],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
            (event,) = daemon.wait_for(1)
        self.assertEqual(json.loads(event.message), {"level": "INFO", "message": "from yaml"})
        self.assertEqual(out.split(), ["None", "1"])

    def test_json_config_backslash_zero(self) -> None:
        address = unique_address()
        config = json.dumps(
            {
                "version": 1,
                "handlers": {
                    "cw": {
                        "class": "globus.cwlogger.GlobusSocketHandler",
                        "host": "\\0" + address[1:],
                    }
                },
                "root": {"level": "INFO", "handlers": ["cw"]},
            }
        )
        self.assertIn('"\\\\0globus-cwlogger-test-', config)  # as written in a JSON file
        code = "import json, logging, logging.config, sys\n"
        code += "logging.config.dictConfig(json.loads(sys.argv[1]))\n"
        code += "logging.info('from json')\n"
        with LocalDaemon(address) as daemon:
            subprocess.run([sys.executable, "-c", code, config], timeout=60, check=True)
            self.assertEqual([e.message for e in daemon.wait_for(1)], ["from json"])


class LazyDefaultTest(unittest.TestCase):
    def test_import_builds_nothing_then_sixteen_threads_get_one_handler(self) -> None:
        code = textwrap.dedent("""\
            import logging, logging.handlers, os, sys, threading, time  # they bring struct
            fds = sorted(os.listdir("/proc/self/fd"))
            handlers = len(logging._handlerList)
            before = set(sys.modules)
            import globus.cwlogger as cw
            assert "cloudwatch_handler" not in vars(cw), "built at import"
            assert sorted(os.listdir("/proc/self/fd")) == fds, "import opened a file"
            assert len(logging._handlerList) == handlers, "import made a handler"
            assert "cloudwatch_handler" in dir(cw)
            lazy = {"globus.cwlogger._json", "globus.cwlogger._emf", "globus.cwlogger._queued"}
            assert not lazy & set(sys.modules), "loaded before use"
            # Each costs more to import than the package (3.9 needs typing for Union).
            costly = {"typing_extensions", "dataclasses", "json", "struct", "importlib"}
            if sys.version_info >= (3, 10):
                costly.add("typing")
            assert not costly & (set(sys.modules) - before), costly & set(sys.modules)
            assert {"JSONFormatter", "emf", "GlobusQueueHandler"} <= set(dir(cw))
            assert cw.JSONFormatter.__name__ == "JSONFormatter" and lazy & set(sys.modules)

            built = []
            original = cw.GlobusSocketHandler.__init__
            def slow_init(self, *args, **kwargs):
                built.append(1)
                time.sleep(0.05)  # widen the window for a race
                original(self, *args, **kwargs)
            cw.GlobusSocketHandler.__init__ = slow_init

            barrier = threading.Barrier(16)
            got = []
            def access():
                barrier.wait()
                got.append(cw.cloudwatch_handler)
            threads = [threading.Thread(target=access) for _ in range(16)]
            for t in threads: t.start()
            for t in threads: t.join()
            assert len(built) == 1, f"built {len(built)} times"
            assert len(got) == 16 and all(h is got[0] for h in got)
            from globus.cwlogger import cloudwatch_handler
            assert cloudwatch_handler is got[0] is cw.cloudwatch_handler
            assert isinstance(cloudwatch_handler, cw.GlobusSocketHandler)
            print(repr(cloudwatch_handler.address))
            try:
                cw.cloudwatch_handlr
            except AttributeError as error:
                assert "cloudwatch_handlr" in str(error)
            else:
                raise AssertionError("a misspelled name did not raise")
        """)
        out = run_python(code, **{ENV_ADDRESS: "@from-the-environment"})
        self.assertEqual(out.strip(), repr("\0from-the-environment"))

    def test_default_address_without_environment(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != ENV_ADDRESS}
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import globus.cwlogger as c; print(repr(c.cloudwatch_handler.address))",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        self.assertEqual(out.strip(), repr("\0org.globus.cwlogs"))


if __name__ == "__main__":
    unittest.main()
