"""GlobusQueueHandler in billiard's processes and Celery's prefork workers,
which end through os._exit: every record delivered.

These need billiard and Celery installed: ``nox -s green`` installs both
(the other test sessions do not, and skip these).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import signal
import subprocess
import sys
import unittest

from globus.cwlogger import ENV_ADDRESS
from globus.cwlogger.testing import LocalDaemon

from .support import run_python, temporary_directory, unique_address, wait_until

BILLIARD = """\
import logging, billiard
from globus.cwlogger import GlobusQueueHandler

def work(n):
    for i in range(200):
        logging.info("child %d record %d", n, i)

if __name__ == "__main__":
    logging.getLogger().addHandler(GlobusQueueHandler(timeout=5))
    logging.getLogger().setLevel(logging.INFO)
    processes = [billiard.Process(target=work, args=(n,)) for n in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
"""

CELERY_APP = """\
import logging
from celery import Celery, signals
from globus.cwlogger import GlobusQueueHandler

app = Celery("cwtasks")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={{
        "data_folder_in": {queue!r}, "data_folder_out": {queue!r},
        "processed_folder": {processed!r}, "store_processed": True,
        "control_folder": {control!r},
    }},
    worker_hijack_root_logger=False,
)

@signals.setup_logging.connect
def setup(**_):
    logging.getLogger().addHandler(GlobusQueueHandler(timeout=5))
    logging.getLogger().setLevel(logging.INFO)

@app.task
def work(n):
    log = logging.getLogger("cwtasks")
    for i in range(200):
        log.info("task %d record %d", n, i)
"""


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


class PreforkTest(unittest.TestCase):
    @unittest.skipUnless(installed("billiard"), "nox -s green installs billiard")
    def test_billiard_processes(self) -> None:
        directory = temporary_directory(self)
        script = pathlib.Path(directory, "work.py")
        script.write_text(BILLIARD)
        with LocalDaemon(unique_address()) as daemon:
            code = f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')"
            result = run_python(code, daemon.address)
            self.assertEqual(result.returncode, 0, result.stderr)
            messages = [e.message for e in daemon.wait_for(800, timeout=10)]
        expected = [f"child {n} record {i}" for n in range(4) for i in range(200)]
        self.assertEqual(sorted(messages), sorted(expected))

    @unittest.skipUnless(installed("celery"), "nox -s green installs Celery")
    def test_celery_prefork_workers_replaced_after_each_task(self) -> None:
        directory = temporary_directory(self)
        queue, processed = os.path.join(directory, "queue"), os.path.join(directory, "done")
        os.mkdir(queue)
        os.mkdir(processed)
        pathlib.Path(directory, "cwtasks.py").write_text(
            CELERY_APP.format(
                queue=queue, processed=processed, control=os.path.join(directory, "control")
            )
        )
        with LocalDaemon(unique_address()) as daemon:
            env = {**os.environ, ENV_ADDRESS: "@" + daemon.address[1:], "PYTHONPATH": directory}
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "cwtasks", "worker", "--pool=prefork",
                 "--concurrency=2", "--max-tasks-per-child=1", "--loglevel=WARNING"],
                cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            self.addCleanup(worker.kill)
            sent = run_python(
                "import cwtasks\nfor n in range(4): cwtasks.work.delay(n)",
                PYTHONPATH=directory,
            )
            self.assertEqual(sent.returncode, 0, sent.stderr)
            done = wait_until(lambda: len(os.listdir(processed)) == 4, timeout=60)
            self.assertTrue(done, "the worker did not take the four tasks")

            def ours() -> list[str]:  # Celery's own records arrive too
                return [e.message for e in daemon.events if e.message.startswith("task ")]

            wait_until(lambda: len(ours()) >= 800, timeout=30)
            worker.send_signal(signal.SIGTERM)
            _, errors = worker.communicate(timeout=60)
            messages = ours()
        expected = [f"task {n} record {i}" for n in range(4) for i in range(200)]
        self.assertEqual(sorted(messages), sorted(expected), errors.decode()[-2000:])


if __name__ == "__main__":
    unittest.main()
