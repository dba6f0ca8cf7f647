"""Under gevent's and eventlet's monkey patching: records delivered, a hung
daemon bounded by the timeout, and other green threads running meanwhile.

These need gevent and eventlet installed: ``nox -s green`` installs both
(the other test sessions do not, and skip these).
"""

from __future__ import annotations

import importlib.util
import json
import unittest

from globus.cwlogger.testing import LocalDaemon

from .support import run_python, unique_address

GREEN = """\
import os, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # eventlet warns that it is deprecated
if os.environ["GREEN_LIBRARY"] == "gevent":
    from gevent import monkey
    monkey.patch_all()
else:
    import eventlet
    eventlet.monkey_patch()
import json, logging, threading, time
from globus.cwlogger import GlobusQueueHandler, GlobusSocketHandler

cls = GlobusQueueHandler if os.environ["GREEN_HANDLER"] == "queue" else GlobusSocketHandler
handler = cls(timeout=0.3, fallback="off")
log = logging.getLogger()
log.addHandler(handler)
ticks = []

def tick():  # runs only if logging calls yield to the hub while they wait
    while len(ticks) < 1000:
        ticks.append(time.monotonic())
        time.sleep(0.005)

threading.Thread(target=tick, daemon=True).start()
took = []

def work(n):
    for i in range(20):
        start = time.monotonic()
        log.warning("green %d record %d", n, i)
        took.append(time.monotonic() - start)
        time.sleep(0.001)

workers = [threading.Thread(target=work, args=(n,)) for n in range(5)]
start = time.monotonic()
for w in workers:
    w.start()
for w in workers:
    w.join()
time.sleep(0.1)
target = handler if cls is GlobusSocketHandler else handler.target
target.retryTime = None  # the backoff ran out: the next call tries again
again = time.monotonic()
log.warning("after the backoff")
again = time.monotonic() - again
handler.flush()
handler.close()
elapsed = time.monotonic() - start
print(json.dumps({"delivered": target.delivered, "undelivered": target.undelivered,
                  "slowest": max(took), "again": again, "elapsed": elapsed,
                  "ticks": sum(start <= t for t in ticks)}))
"""


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


class GreenTest(unittest.TestCase):
    def run_green(self, library: str, handler: str, behaviour: str) -> dict[str, float]:
        with LocalDaemon(unique_address(), behaviour=behaviour) as daemon:  # type: ignore[arg-type]
            result = run_python(
                GREEN, daemon.address, 60, GREEN_LIBRARY=library, GREEN_HANDLER=handler
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            outcome: dict[str, float] = json.loads(result.stdout.splitlines()[-1])
            if behaviour == "ok":
                daemon.wait_for(101, strict=True)
            return outcome

    def check(self, library: str) -> None:
        for handler in ("socket", "queue"):
            with self.subTest(handler=handler, daemon="answers"):
                outcome = self.run_green(library, handler, "ok")
                self.assertEqual((outcome["delivered"], outcome["undelivered"]), (101, 0))
            with self.subTest(handler=handler, daemon="hung"):
                outcome = self.run_green(library, handler, "hang")
                self.assertEqual((outcome["delivered"], outcome["undelivered"]), (0, 101))
                self.assertLess(outcome["slowest"], 0.3 + 0.15)  # bounded by the timeout
                self.assertLess(outcome["again"], 0.3 + 0.15)  # and the next one too
                # The hub ran other green threads while calls (or the drain) waited.
                self.assertGreater(outcome["elapsed"], 0.3)
                self.assertGreater(outcome["ticks"], outcome["elapsed"] / 0.005 / 3)

    @unittest.skipUnless(installed("gevent"), "nox -s green installs gevent")
    def test_gevent(self) -> None:
        self.check("gevent")

    @unittest.skipUnless(installed("eventlet"), "nox -s green installs eventlet")
    def test_eventlet(self) -> None:
        self.check("eventlet")


if __name__ == "__main__":
    unittest.main()
