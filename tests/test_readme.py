"""Every Python and YAML example in README.md runs against a stand-in."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import unittest

from globus.cwlogger import ENV_ADDRESS
from globus.cwlogger.testing import LocalDaemon

from .support import unique_address

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(python|yaml)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

RUN_YAML = """\
import logging, logging.config, sys, yaml
logging.config.dictConfig(yaml.safe_load(sys.stdin))
logging.getLogger("readme").warning("from the README")
"""


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(README.read_text()) if lang == language]


class ReadmeTest(unittest.TestCase):
    def run_block(self, code: str, source: str) -> list[str]:
        """Run one example with the default address on a stand-in; return
        what the stand-in received."""
        with LocalDaemon(unique_address()) as daemon:
            name = daemon.address[1:]
            result = subprocess.run(
                [sys.executable, "-c", code],
                input=source.replace("org.globus.cwlogs", name),
                env={**os.environ, ENV_ADDRESS: "@" + name},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertNotIn(f"records to @{name} are not acknowledged", result.stderr)
            return [event.message for event in daemon.events]

    def test_there_are_examples(self) -> None:
        self.assertGreaterEqual(len(blocks("python")), 3)
        self.assertGreaterEqual(len(blocks("yaml")), 2)

    def test_python_examples(self) -> None:
        for code in blocks("python"):
            with self.subTest(code=code.splitlines()[:3]):
                self.run_block(code, "")

    def test_yaml_examples(self) -> None:
        for config in blocks("yaml"):
            with self.subTest(config=config.splitlines()[:4]):
                received = self.run_block(RUN_YAML, config)
                self.assertEqual(len(received), 1)
                self.assertIn("from the README", received[0])


if __name__ == "__main__":
    unittest.main()
