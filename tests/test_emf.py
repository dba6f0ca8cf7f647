"""emf(): Embedded Metric Format fields for ``extra=``, checked when built."""

from __future__ import annotations

import logging
import re
import time
import unittest
import uuid
from typing import Any

from globus.cwlogger._emf import UNITS, emf
from globus.cwlogger._json import JSONFormatter
from globus.cwlogger.protocol import MAX_MESSAGE_BYTES

from .support import DaemonTestCase
from .test_json_formatter import LinesHandler, cut_count, parse


def assert_extractable(test: unittest.TestCase, event: dict[str, Any]) -> None:
    """What CloudWatch requires to extract metrics from ``event``."""
    meta = event["_aws"]
    test.assertIsInstance(meta["Timestamp"], int)
    for directive in meta["CloudWatchMetrics"]:
        test.assertTrue(1 <= len(directive["Namespace"]) <= 255)
        test.assertLessEqual(len(directive["Metrics"]), 100)
        for metric in directive["Metrics"]:
            value = event[metric["Name"]]  # a top-level member
            test.assertIsInstance(value, (int, float))
            test.assertNotIsInstance(value, bool)
            test.assertIn(metric["Unit"], UNITS)
        for dimension_set in directive["Dimensions"]:
            test.assertLessEqual(len(dimension_set), 30)
            for name in dimension_set:
                test.assertIsInstance(event[name], str)


class ShapeTest(unittest.TestCase):
    def test_shape(self) -> None:
        before = int(time.time() * 1000)
        fields = emf(
            "MyService",
            {"Latency": (12.5, "Milliseconds"), "Retries": 2, "Size": [3, "Bytes"]},  # type: ignore[dict-item]
            dimensions={"Operation": "upload", "Region": "us-east-1"},
        )
        after = int(time.time() * 1000)
        meta = fields["_aws"]
        assert isinstance(meta, dict)
        self.assertTrue(before <= meta["Timestamp"] <= after)
        self.assertEqual(
            fields,
            {
                "_aws": {
                    "Timestamp": meta["Timestamp"],
                    "CloudWatchMetrics": [
                        {
                            "Namespace": "MyService",
                            "Dimensions": [["Operation", "Region"]],
                            "Metrics": [
                                {"Name": "Latency", "Unit": "Milliseconds"},
                                {"Name": "Retries", "Unit": "None"},
                                {"Name": "Size", "Unit": "Bytes"},
                            ],
                        }
                    ],
                },
                "Latency": 12.5,
                "Retries": 2,
                "Size": 3,
                "Operation": "upload",
                "Region": "us-east-1",
            },
        )

    def test_without_dimensions_the_set_is_empty(self) -> None:
        fields = emf("NS", {"Hits": 1})
        self.assertEqual(fields["_aws"]["CloudWatchMetrics"][0]["Dimensions"], [[]])  # type: ignore[index]

    def test_every_unit_and_the_limits(self) -> None:
        metrics = {f"m{i}": (float(i), unit) for i, unit in enumerate(sorted(UNITS))}
        self.assertEqual(len(metrics), 27)
        emf("NS", metrics)
        emf("N" * 255, {f"m{i}": i for i in range(100)})
        emf("NS", {"M" * 1024: 1}, dimensions={f"d{i}": "v" * 1024 for i in range(30)})
        emf("NS", {"Big": 10**300, "Small": -1e-300, "Zero": 0})


class ValidationTest(unittest.TestCase):
    def check(self, error: type[Exception], shown: str, *args: Any, **kwargs: Any) -> None:
        with self.subTest(args=args, kwargs=kwargs), self.assertRaises(error) as caught:
            emf(*args, **kwargs)
        self.assertIn(shown, str(caught.exception))

    def test_namespace(self) -> None:
        self.check(ValueError, "''", "", {"M": 1})
        self.check(ValueError, "256", "N" * 256, {"M": 1})
        self.check(TypeError, "b'NS'", b"NS", {"M": 1})

    def test_metric_count(self) -> None:
        self.check(ValueError, "not 0", "NS", {})
        self.check(ValueError, "not 101", "NS", {f"m{i}": i for i in range(101)})
        self.check(TypeError, "[('M', 1)]", "NS", [("M", 1)])

    def test_metric_names(self) -> None:
        self.check(ValueError, "''", "NS", {"": 1})
        self.check(ValueError, "1025", "NS", {"M" * 1025: 1})
        self.check(TypeError, "7", "NS", {7: 1})

    def test_metric_values(self) -> None:
        self.check(TypeError, "True", "NS", {"M": True})
        self.check(TypeError, "'12'", "NS", {"M": "12"})
        self.check(TypeError, "None", "NS", {"M": None})
        self.check(ValueError, "nan", "NS", {"M": float("nan")})
        self.check(ValueError, "inf", "NS", {"M": (float("inf"), "Count")})
        self.check(ValueError, "1000000", "NS", {"M": 10**400})
        self.check(ValueError, "(1, 'Count', 60)", "NS", {"M": (1, "Count", 60)})

    def test_units(self) -> None:
        self.check(ValueError, "'Millisecond'", "NS", {"M": (1, "Millisecond")})
        self.check(ValueError, "'count'", "NS", {"M": (1, "count")})
        self.check(ValueError, "None", "NS", {"M": (1, None)})
        self.check(ValueError, "['Count']", "NS", {"M": (1, ["Count"])})

    def test_dimensions(self) -> None:
        self.check(
            ValueError, "not 31", "NS", {"M": 1}, dimensions={f"d{i}": "v" for i in range(31)}
        )
        self.check(TypeError, "'Operation'", "NS", {"M": 1}, dimensions=["Operation"])
        self.check(TypeError, "int: 3", "NS", {"M": 1}, dimensions={"Shard": 3})
        self.check(ValueError, "''", "NS", {"M": 1}, dimensions={"Operation": ""})
        self.check(ValueError, "1025", "NS", {"M": 1}, dimensions={"Operation": "v" * 1025})
        self.check(ValueError, "256", "NS", {"M": 1}, dimensions={"D" * 256: "v"})
        self.check(TypeError, "b'Op'", "NS", {"M": 1}, dimensions={b"Op": "v"})

    def test_names_must_not_collide(self) -> None:
        self.check(ValueError, "'M'", "NS", {"M": 1}, dimensions={"M": "v"})
        for name in ("message", "asctime", "msg", "args", "levelname", "taskName", "_aws"):
            self.check(ValueError, repr(name), "NS", {name: 1})
            self.check(ValueError, repr(name), "NS", {"M": 1}, dimensions={name: "v"})
        for name in ("time", "level", "logger", "exception", "stack"):  # JSONFormatter's
            self.check(ValueError, repr(name), "NS", {name: 1})

    def test_error_names_the_metric(self) -> None:
        with self.assertRaisesRegex(ValueError, re.escape("metric 'Latency'")):
            emf("NS", {"Latency": (1, "ms")})


class LoggingTest(unittest.TestCase):
    def setUp(self) -> None:
        self.log = logging.getLogger(f"test.emf.{uuid.uuid4().hex}")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)

    def collect(self, formatter: JSONFormatter) -> LinesHandler:
        handler = LinesHandler()
        handler.setFormatter(formatter)
        self.log.addHandler(handler)
        self.addCleanup(self.log.removeHandler, handler)
        self.addCleanup(handler.close)
        return handler

    def test_through_json_formatter(self) -> None:
        handler = self.collect(JSONFormatter())
        fields = emf(
            "MyService",
            {"Latency": (12.5, "Milliseconds"), "Retries": 2},
            dimensions={"Operation": "upload"},
        )
        self.log.info("request done", extra={**fields, "request_id": "r-1"})
        (line,) = handler.lines
        event = parse(self, line)
        assert_extractable(self, event)
        self.assertEqual(event["_aws"], fields["_aws"])  # unchanged
        self.assertEqual(event["message"], "request done")
        self.assertEqual(event["request_id"], "r-1")
        self.assertEqual((event["Latency"], event["Retries"]), (12.5, 2))
        self.assertEqual(event["Operation"], "upload")

    def test_with_renamed_fields(self) -> None:
        handler = self.collect(JSONFormatter(fields={"time": "@timestamp", "message": "msg"}))
        self.log.info("done", extra=emf("NS", {"Count": (1, "Count")}, dimensions={"Op": "x"}))
        assert_extractable(self, parse(self, handler.lines[0]))


class DaemonTest(DaemonTestCase):
    def test_the_daemon_receives_an_extractable_event(self) -> None:
        self.handler.setFormatter(JSONFormatter())
        self.log.info(
            "request done Grüße \udc80",
            extra=emf("MyService", {"Latency": (12.5, "Milliseconds")}, dimensions={"Op": "up"}),
        )
        (event,) = self.daemon.wait_for(1)
        body = parse(self, event.message)
        assert_extractable(self, body)
        self.assertEqual(body["message"], "request done Grüße \ufffd")

    def test_an_oversized_message_keeps_the_metrics(self) -> None:
        self.handler.setFormatter(JSONFormatter())
        fields = emf("MyService", {"Latency": (12.5, "Milliseconds")}, dimensions={"Op": "up"})
        self.log.info("Grüße " * 60000, extra={**fields, "request_id": "r-1"})
        (event,) = self.daemon.wait_for(1)
        self.assertLessEqual(len(event.message.encode("utf-8")), MAX_MESSAGE_BYTES)
        body = parse(self, event.message)  # cut inside the document, not after it
        assert_extractable(self, body)
        self.assertEqual(body["_aws"], fields["_aws"])
        self.assertEqual((body["Latency"], body["request_id"]), (12.5, "r-1"))
        head, count = cut_count(body["message"])
        self.assertTrue(("Grüße " * 60000).startswith(head))
        self.assertGreater(count, 0)


if __name__ == "__main__":
    unittest.main()
