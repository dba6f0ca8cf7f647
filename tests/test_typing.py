"""A service's own `mypy --strict` sees real types and catches typos."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import unittest

import globus.cwlogger

CONSUMER = """\
from globus.cwlogger import GlobusSocketHandler, cloudwatch_handler

handler: GlobusSocketHandler = cloudwatch_handler
delivered: int = handler.delivered
"""

TYPO = """\
import globus.cwlogger

handler = globus.cwlogger.cloudwatch_handlr
"""


def mypy(source: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as directory:
        module = pathlib.Path(directory, "consumer.py")
        module.write_text(source)
        env = dict(os.environ)
        package_root = pathlib.Path(globus.cwlogger.__file__).parents[2]
        if "site-packages" not in package_root.parts:  # testing src/, not an install
            env["MYPYPATH"] = str(package_root)
        command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]
        command += ["--config-file", os.devnull, str(module)]
        return subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=300, check=False
        )


class TypingTest(unittest.TestCase):
    def test_consumer_passes_mypy_strict(self) -> None:
        result = mypy(CONSUMER)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_misspelled_attribute_fails_mypy(self) -> None:
        result = mypy(TYPO)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn('has no attribute "cloudwatch_handlr"', result.stdout)
        self.assertIn("[attr-defined]", result.stdout)


if __name__ == "__main__":
    unittest.main()
