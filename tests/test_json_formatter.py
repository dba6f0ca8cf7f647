"""JSONFormatter: one valid, UTF-8-encodable JSON object per record, on one line."""

from __future__ import annotations

import calendar
import datetime
import json
import logging
import logging.config
import textwrap
import unittest
import uuid
from typing import Any
from unittest import mock

import yaml

from globus.cwlogger._json import JSONFormatter

# The dotted path users write in dictConfig.
FORMATTER = "globus.cwlogger.JSONFormatter"

# 2026-11-25T19:58:19Z
CREATED = calendar.timegm((2026, 11, 25, 19, 58, 19, 0, 0, 0))


class LinesHandler(logging.Handler):
    """Keeps each formatted record."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _strict(constant: str) -> object:
    msg = f"not JSON: {constant}"
    raise ValueError(msg)


def parse(test: unittest.TestCase, line: str) -> dict[str, Any]:
    """Check that ``line`` is one line of strict JSON, encodable as UTF-8."""
    test.assertNotIn("\n", line)
    test.assertNotIn("\r", line)
    line.encode("utf-8")  # no lone surrogates
    event = json.loads(line, parse_constant=_strict)  # no NaN or Infinity
    assert isinstance(event, dict)
    return event


def configure(config: dict[str, Any]) -> None:
    """dictConfig, without closing or forgetting other tests' handlers.

    dictConfig shuts down every handler in the process before it builds new
    ones; here it sees empty registries instead of the real ones.
    """
    full: dict[str, Any] = {"version": 1, "disable_existing_loggers": False, **config}
    with mock.patch.multiple(logging, _handlers={}, _handlerList=[]):
        logging.config.dictConfig(full)


class FormatterTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.log = logging.getLogger(f"test.json.{uuid.uuid4().hex}")
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)
        self.handler = self.use(JSONFormatter())

    def use(self, formatter: logging.Formatter) -> LinesHandler:
        handler = LinesHandler()
        handler.setFormatter(formatter)
        for old in list(self.log.handlers):
            self.log.removeHandler(old)
        self.log.addHandler(handler)
        self.addCleanup(self.log.removeHandler, handler)
        self.addCleanup(handler.close)
        return handler

    def event(self) -> dict[str, Any]:
        """The one event logged so far."""
        (line,) = self.handler.lines
        return parse(self, line)


class FieldsTest(FormatterTestCase):
    def test_exact_line(self) -> None:
        record = logging.makeLogRecord(
            {"name": "svc", "levelname": "WARNING", "msg": "hi %s", "args": ("there",)}
        )
        record.created = CREATED + 0.1234
        self.assertEqual(
            JSONFormatter().format(record),
            '{"time":"2026-11-25T19:58:19.123Z","level":"WARNING","logger":"svc",'
            '"message":"hi there"}',
        )

    def test_time_is_utc_and_never_rounds_up(self) -> None:
        record = logging.makeLogRecord({"msg": "x"})
        record.created = CREATED + 0.9999
        self.assertEqual(JSONFormatter().formatTime(record), "2026-11-25T19:58:19.999Z")
        record.created = CREATED
        self.assertEqual(JSONFormatter().formatTime(record), "2026-11-25T19:58:19.000Z")

    def test_every_field_in_order(self) -> None:
        try:
            int("boom")
        except ValueError:
            self.log.exception("failed %d", 3, extra={"user": "ana"}, stack_info=True)
        event = self.event()
        self.assertEqual(
            list(event), ["time", "level", "logger", "message", "user", "exception", "stack"]
        )
        self.assertEqual(event["level"], "ERROR")
        self.assertEqual(event["logger"], self.log.name)
        self.assertEqual(event["message"], "failed 3")
        self.assertTrue(event["exception"].startswith("Traceback (most recent call last):"))
        self.assertTrue(
            event["exception"].endswith(
                "ValueError: invalid literal for int() with base 10: 'boom'"
            )
        )
        self.assertTrue(event["stack"].startswith("Stack (most recent call last):"))
        self.assertIn("test_every_field_in_order", event["stack"])

    def test_no_exception_or_stack_keys_when_absent(self) -> None:
        self.log.info("plain")
        self.assertEqual(list(self.event()), ["time", "level", "logger", "message"])

    def test_json_values_are_kept(self) -> None:
        extra = {
            "user": "ana",
            "count": 3,
            "ratio": 0.5,
            "ok": True,
            "nothing": None,
            "tags": ["a", "b"],
            "nested": {"k": [1, 2, {"deep": "yes"}]},
            "pair": (1, 2),
            "ints": {1: "one"},
        }
        self.log.info("x", extra=extra)
        event = self.event()
        for key in ("user", "count", "ratio", "ok", "nothing", "tags", "nested"):
            self.assertEqual(event[key], extra[key], key)
        self.assertEqual(event["pair"], [1, 2])
        self.assertEqual(event["ints"], {"1": "one"})

    def test_other_values_are_written_with_repr(self) -> None:
        when = datetime.datetime(2026, 11, 25, 19, 58, 19, tzinfo=datetime.timezone.utc)
        marker = object()
        extra = {"obj": marker, "set": {3}, "bytes": b"\xff\x00", "when": when}
        self.log.info("x", extra=extra)
        event = self.event()
        for key, value in extra.items():
            self.assertEqual(event[key], repr(value), key)
        self.assertEqual(event["message"], "x")


class BadValuesTest(FormatterTestCase):
    def test_values_json_refuses_never_raise(self) -> None:
        loop: list[object] = [1]
        loop.append(loop)
        deep: list[object] = []
        for _ in range(100_000):
            deep = [deep]

        class BadRepr:
            def __repr__(self) -> str:
                raise RuntimeError

        extra = {
            "nan": float("nan"),
            "inf": float("-inf"),
            "tuple_key": {("a", 1): 1, None: 2},
            "loop": loop,
            "deep": deep,
            "bad": BadRepr(),
            "fine": "still here",
        }
        self.log.info("survives", extra=extra)
        event = self.event()
        self.assertEqual(event["message"], "survives")
        self.assertEqual(event["fine"], "still here")
        self.assertEqual(event["nan"], "nan")
        self.assertEqual(event["inf"], "-inf")
        self.assertEqual(event["tuple_key"], {"('a', 1)": 1, "None": 2})
        self.assertEqual(event["loop"], [1, "[1, [...]]"])
        self.assertIsInstance(event["deep"], list)
        self.assertIn("BadRepr object at", event["bad"])

    def test_quotes_newlines_and_non_ascii(self) -> None:
        text = 'say "hi"\nline two\r\n\ttab \\ back {"not": "json"} Grüße 日本 \U0001f680 \x00'
        self.log.info(text, extra={"text": text, text: "as a key"})
        event = self.event()
        self.assertEqual(event["message"], text)
        self.assertEqual(event["text"], text)
        self.assertEqual(event[text], "as a key")
        self.assertIn("Grüße 日本 \U0001f680", self.handler.lines[0])  # readable, not \\u escapes

    def test_lone_surrogates_become_replacement_characters(self) -> None:
        self.log.info(
            "a\udc80b\ud800",
            extra={"s": "x\udfff", "k\udc80": "v", "pair": "\ud83d\ude80", "b": b"\xff"},
        )
        event = self.event()
        self.assertEqual(event["message"], "a\ufffdb\ufffd")
        self.assertEqual(event["s"], "x\ufffd")
        self.assertEqual(event["k\ufffd"], "v")
        self.assertEqual(event["pair"], "\U0001f680")  # a pair is joined, not replaced

    def test_surrogates_in_a_repr(self) -> None:
        class Odd:
            def __repr__(self) -> str:
                return "odd\udc80"

        self.log.info("x", extra={"odd": Odd()})
        self.assertEqual(self.event()["odd"], "odd\ufffd")


class ConfigurationTest(FormatterTestCase):
    def test_rename_drop_and_add_fields(self) -> None:
        fields = {"time": "@timestamp", "level": "lvl", "message": "msg", "stack": None}
        self.handler = self.use(JSONFormatter(fields={**fields, "lineno": "line"}))
        self.log.info("x", extra={"user": "ana"}, stack_info=True)
        event = self.event()
        self.assertEqual(list(event), ["@timestamp", "lvl", "logger", "msg", "line", "user"])
        self.assertEqual(event["lvl"], "INFO")
        self.assertEqual(event["msg"], "x")
        self.assertIsInstance(event["line"], int)

    def test_extra_never_replaces_a_field(self) -> None:
        self.log.info("x", extra={"level": "mine", "time": 1})
        event = self.event()
        self.assertEqual(event["level"], "INFO")
        self.assertEqual(event["extra.level"], "mine")
        self.assertEqual(event["extra.time"], 1)

    def test_a_renamed_key_is_free_for_extras(self) -> None:
        self.handler = self.use(JSONFormatter(fields={"level": "lvl"}))
        self.log.info("x", extra={"level": "mine"})
        event = self.event()
        self.assertEqual((event["lvl"], event["level"]), ("INFO", "mine"))

    def test_defaults_unless_the_record_has_its_own(self) -> None:
        self.handler = self.use(JSONFormatter(defaults={"service": "billing", "env": "prod"}))
        self.log.info("x", extra={"env": "dev"})
        event = self.event()
        self.assertEqual((event["service"], event["env"]), ("billing", "dev"))

    def test_bad_configuration_is_refused_when_built(self) -> None:
        cases: list[tuple[type[Exception], str, dict[str, Any]]] = [
            (ValueError, "'when'", {"fields": {"when": "t"}}),
            (ValueError, "'asctime'", {"fields": {"asctime": "t"}}),
            (TypeError, "42", {"fields": {"time": 42}}),
            (ValueError, "'message'", {"fields": {"message": ""}}),
            (ValueError, "'msg'", {"fields": {"time": "msg", "message": "msg"}}),
            (ValueError, "'lvl'", {"fields": {"levelname": "lvl", "level": "lvl"}}),
            (TypeError, "'time'", {"fields": ["time"]}),
            (ValueError, "'level'", {"defaults": {"level": "x"}}),
            (TypeError, "'x'", {"defaults": "x"}),
            (ValueError, "'%\\(message\\)s'", {"fmt": "%(message)s"}),
            (ValueError, "'%H'", {"datefmt": "%H"}),
        ]
        for error, text, kwargs in cases:
            with self.subTest(kwargs=kwargs), self.assertRaisesRegex(error, text):
                JSONFormatter(**kwargs)

    def test_dictconfig_class(self) -> None:
        self.dictconfig({"class": FORMATTER})
        self.log.info("via class", extra={"user": "ana"})
        event = self.event()
        self.assertEqual(list(event), ["time", "level", "logger", "message", "user"])

    def test_dictconfig_factory_with_fields(self) -> None:
        self.dictconfig(
            {"()": FORMATTER, "fields": {"time": "@timestamp", "lineno": "line"}, "defaults": {}}
        )
        self.log.warning("via ()")
        event = self.event()
        self.assertEqual(list(event), ["@timestamp", "level", "logger", "message", "line"])

    def test_dictconfig_from_yaml(self) -> None:
        text = f"""
            (): {FORMATTER}
            fields: {{time: "@timestamp", level: lvl, logger: logger, message: msg, stack: null}}
            defaults: {{service: billing}}
        """
        self.dictconfig(yaml.safe_load(textwrap.dedent(text)))
        self.log.info("x", stack_info=True)
        event = self.event()
        self.assertEqual(list(event), ["@timestamp", "lvl", "logger", "msg", "service"])

    def test_dictconfig_refuses_a_format(self) -> None:
        for form in ("class", "()"):
            with self.subTest(form=form), self.assertRaises(ValueError) as caught:
                self.dictconfig({form: FORMATTER, "format": "%(message)s"})
            self.assertIn("format='%(message)s'", str(caught.exception.__cause__))

    def dictconfig(self, formatter: dict[str, Any]) -> None:
        configure(
            {
                "formatters": {"json": formatter},
                "handlers": {"lines": {"()": LinesHandler, "formatter": "json"}},
                "loggers": {self.log.name: {"handlers": ["lines"], "propagate": False}},
            }
        )
        (handler,) = self.log.handlers
        self.addCleanup(handler.close)
        self.addCleanup(self.log.removeHandler, handler)
        assert isinstance(handler, LinesHandler)
        self.handler = handler


if __name__ == "__main__":
    unittest.main()
