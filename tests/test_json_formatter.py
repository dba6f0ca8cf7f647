"""JSONFormatter: one valid, UTF-8-encodable JSON object per record, on one line."""

from __future__ import annotations

import calendar
import copy
import datetime
import decimal
import enum
import json
import logging
import logging.config
import pathlib
import re
import sys
import textwrap
import types
import unittest
import uuid
from typing import Any
from unittest import mock

import yaml

from globus.cwlogger import protocol
from globus.cwlogger._json import JSONFormatter

LIMIT = protocol.MAX_MESSAGE_BYTES

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


#: The cut marker at the end of a text; MarkerTest checks protocol's is the same.
MARKER = re.compile(r"\.\.\. \[(\d+) bytes cut\]\Z")


def cut_count(text: str) -> tuple[str, int]:
    """The text before the cut marker ending ``text``, and how many bytes
    the marker says were cut."""
    found = MARKER.search(text)
    assert found is not None, f"no cut marker at the end of {text[-60:]!r}"
    return text[: found.start()], int(found.group(1))


def to_json(value: object) -> object:
    """A `default` hook, named from dictConfig as ext://tests.test_json_formatter.to_json."""
    if isinstance(value, complex):
        return {"real": value.real, "imag": value.imag}
    msg = f"not mine: {value!r}"
    raise TypeError(msg)


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
        self.handler = handler = LinesHandler()
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

    def test_values_json_has_no_type_for_are_converted(self) -> None:
        class Color(enum.Enum):
            RED = "red"
            DEEP = ("deep", datetime.date(2026, 1, 2))  # a value converted in turn

        class Level(enum.IntEnum):
            HIGH = 3

        aware = datetime.datetime(2026, 11, 25, 19, 58, 19, 123456, tzinfo=datetime.timezone.utc)
        members = {100, 3, 17}
        extra = {
            "aware": aware,
            "naive": datetime.datetime(2026, 11, 25, 19, 58, 19),
            "date": datetime.date(2026, 11, 25),
            "clock": datetime.time(19, 58, 19, 5000),
            "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "amount": decimal.Decimal("10.10"),
            "path": pathlib.Path("/var/log/app.log"),
            "pure": pathlib.PureWindowsPath("C:/logs"),
            "color": Color.RED,
            "deep": Color.DEEP,
            "level_enum": Level.HIGH,
            "set": members,
            "frozen": frozenset({"b", "a"}),
            "mixed": {1, "a"},
            "tuple": (1, (2, 3)),
            "bytes": b"caf\xc3\xa9 \xff",
            "bytearray": bytearray(b"ok"),
            "nested": {"when": [datetime.date(2026, 1, 1)], "ids": {uuid.UUID(int=1)}},
        }
        self.log.info("x", extra=extra)
        event = self.event()
        self.assertEqual(event["aware"], "2026-11-25T19:58:19.123456+00:00")
        self.assertEqual(event["naive"], "2026-11-25T19:58:19")  # no zone is invented
        self.assertEqual(event["date"], "2026-11-25")
        self.assertEqual(event["clock"], "19:58:19.005000")
        self.assertEqual(event["id"], "12345678-1234-5678-1234-567812345678")
        self.assertEqual(event["amount"], "10.10")  # exact, not a float
        self.assertEqual(event["path"], "/var/log/app.log")
        self.assertEqual(event["pure"], "C:\\logs")
        self.assertEqual(event["color"], "red")
        self.assertEqual(event["deep"], ["deep", "2026-01-02"])
        self.assertEqual(event["level_enum"], 3)
        self.assertNotEqual(list(members), [3, 17, 100])  # as a set iterates
        self.assertEqual(event["set"], [3, 17, 100])  # sorted
        self.assertEqual(event["frozen"], ["a", "b"])
        self.assertEqual(sorted(map(str, event["mixed"])), ["1", "a"])  # cannot be sorted
        self.assertEqual(event["tuple"], [1, [2, 3]])
        self.assertEqual(event["bytes"], "café \\xff")
        self.assertEqual(event["bytearray"], "ok")
        self.assertEqual(
            event["nested"],
            {"when": ["2026-01-01"], "ids": ["00000000-0000-0000-0000-000000000001"]},
        )

    def test_other_values_are_written_with_repr(self) -> None:
        marker = object()
        self.log.info("x", extra={"obj": marker, "complex": 1j, "span": datetime.timedelta(1)})
        event = self.event()
        self.assertEqual(event["obj"], repr(marker))
        self.assertEqual(event["complex"], "1j")
        self.assertEqual(event["span"], "datetime.timedelta(days=1)")
        self.assertEqual(event["message"], "x")


class DefaultHookTest(FormatterTestCase):
    def test_the_hook_converts_what_is_left(self) -> None:
        seen: list[object] = []

        def hook(value: object) -> object:
            seen.append(value)
            if isinstance(value, complex):
                return {"real": value.real, "when": datetime.date(2026, 1, 2)}
            return f"hooked {type(value).__name__}"

        self.use(JSONFormatter(default=hook))
        self.log.info("x", extra={"z": 2 + 3j, "o": object(), "d": datetime.date(2026, 1, 1)})
        event = self.event()
        self.assertEqual(event["z"], {"real": 2.0, "when": "2026-01-02"})  # converted in turn
        self.assertEqual(event["o"], "hooked object")
        self.assertEqual(event["d"], "2026-01-01")  # built-in conversions come first
        self.assertEqual([type(value) for value in seen], [complex, object])

    def test_a_failing_hook_means_repr(self) -> None:
        def hook(value: object) -> object:
            raise RuntimeError

        self.use(JSONFormatter(default=hook))
        self.log.info("x", extra={"z": 1j, "fine": 1})
        self.assertEqual(self.event()["z"], "1j")
        self.assertEqual(self.event()["fine"], 1)

    def test_a_hook_that_gives_back_what_it_got_means_repr(self) -> None:
        self.use(JSONFormatter(default=lambda value: value))
        self.log.info("x", extra={"z": 1j, "fine": 1})
        event = self.event()
        self.assertEqual((event["z"], event["fine"]), ("1j", 1))

    def test_a_hook_that_never_gives_json(self) -> None:
        self.use(JSONFormatter(default=lambda value: [value]))
        self.log.info("x", extra={"z": 1j, "fine": 1})
        event = self.event()
        self.assertEqual(event["fine"], 1)
        self.assertIn("1j", json.dumps(event["z"]))

    def test_a_hook_returning_what_json_refuses(self) -> None:
        self.use(JSONFormatter(default=lambda value: {("a",): float("nan")}))
        self.log.info("x", extra={"z": 1j})
        self.assertEqual(self.event()["z"], {"('a',)": "nan"})

    def test_a_broken_conversion_means_repr(self) -> None:
        class Odd(datetime.date):
            def isoformat(self) -> str:
                raise RuntimeError

        self.log.info("x", extra={"odd": Odd(2026, 1, 2)})
        self.assertEqual(self.event()["odd"], "Odd(2026, 1, 2)")

    def test_without_the_c_encoder(self) -> None:
        extra: dict[str, Any] = {"d": datetime.date(2026, 1, 1), "z": 1j, "nan": float("nan")}
        record = logging.makeLogRecord({"msg": "x Grüße \udc80", "created": CREATED, **extra})
        with_c = JSONFormatter(default=to_json).format(record)
        with mock.patch("json.encoder.c_make_encoder", None):
            formatter = JSONFormatter(default=to_json)
        self.assertIsInstance(formatter._encode, types.FunctionType)  # not the C encoder
        self.assertEqual(formatter.format(record), with_c)
        self.assertEqual(parse(self, with_c)["z"], {"real": 0.0, "imag": 1.0})  # the hook, not repr


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
            (ValueError, "'asctime'", {"fields": {"asctime": "t"}}),
            (ValueError, "'message'", {"fields": {"message": "m", "color_message": "m"}}),
            (ValueError, "'lvl'", {"fields": {"level": "lvl", "color_message": "lvl"}}),
            (ValueError, "'x'", {"fields": {"request": "x", "color_message": "x"}}),
            (TypeError, "1", {"fields": {1: "x"}}),
            (TypeError, "ext://module.function.*'json.dumps'", {"default": "json.dumps"}),
            (TypeError, "'yes'", {"dict_message_text": "yes"}),
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

    def test_extras_renamed_or_left_out(self) -> None:
        self.use(JSONFormatter(fields={"color_message": None, "request": "http_request"}))
        self.log.info(
            "GET / 200",
            extra={"color_message": "\x1b[32mGET\x1b[0m / 200", "request": "<r>", "user": 1},
        )
        event = self.event()
        self.assertEqual(
            list(event), ["time", "level", "logger", "message", "http_request", "user"]
        )
        self.assertEqual(event["http_request"], "<r>")
        self.log.info("without those extras")  # a name in fields that a record lacks
        self.assertEqual(list(parse(self, self.handler.lines[1]))[3:], ["message"])

    def test_an_extra_renamed_onto_another_extra_keeps_both(self) -> None:
        self.use(JSONFormatter(fields={"color_message": "text"}))
        self.log.info("x", extra={"text": "mine", "color_message": "colored"})
        event = self.event()
        self.assertEqual((event["text"], event["extra.text"]), ("mine", "colored"))

    def test_dictconfig_hook_and_extras_from_yaml(self) -> None:
        text = f"""
            (): {FORMATTER}
            fields: {{color_message: null, request: http_request}}
            default: ext://{__name__}.to_json
            dict_message_text: true
        """
        self.dictconfig(yaml.safe_load(textwrap.dedent(text)))
        self.log.info("x", extra={"color_message": "c", "request": 2j})
        self.log.info({"event": "login"})
        first, second = (parse(self, line) for line in self.handler.lines)
        self.assertNotIn("color_message", first)
        self.assertEqual(first["http_request"], {"real": 0.0, "imag": 2.0})
        self.assertEqual((second["event"], second["message"]), ("login", "{'event': 'login'}"))

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


class DictMessageTest(FormatterTestCase):
    def test_merged_without_message(self) -> None:
        self.log.info({"event": "login", "user": 1, "ok": True}, extra={"request_id": "r-1"})
        event = self.event()
        self.assertEqual(
            list(event), ["time", "level", "logger", "event", "user", "ok", "request_id"]
        )
        self.assertEqual((event["event"], event["user"], event["ok"]), ("login", 1, True))

    def test_its_text_in_message_when_asked(self) -> None:
        self.use(JSONFormatter(dict_message_text=True))
        self.log.info({"event": "login"})
        event = self.event()
        self.assertEqual(list(event), ["time", "level", "logger", "message", "event"])
        self.assertEqual(event["message"], "{'event': 'login'}")

    def test_asked_but_message_left_out(self) -> None:
        self.use(JSONFormatter(dict_message_text=True, fields={"message": None}))
        self.log.info({"event": "login"})
        self.assertEqual(list(self.event()), ["time", "level", "logger", "event"])

    def test_keys_taken_renamed_or_left_out(self) -> None:
        self.use(JSONFormatter(fields={"level": "lvl", "password": None, "who": "user"}))
        message = {"level": "mine", "lvl": "also", "password": "x", "who": "ana", "ts": 1}
        self.log.warning(message, extra={"ts": 2})
        event = self.event()
        self.assertEqual(event["lvl"], "WARNING")
        self.assertEqual((event["level"], event["extra.lvl"]), ("mine", "also"))
        self.assertEqual((event["user"], event["ts"], event["extra.ts"]), ("ana", 1, 2))
        self.assertNotIn("password", event)
        self.assertEqual(message["password"], "x")  # the caller's dict is left alone

    def test_values_and_keys_json_refuses(self) -> None:
        self.log.info({"when": datetime.date(2026, 1, 2), 1: "one", ("t",): 2})
        event = self.event()
        self.assertEqual((event["when"], event["1"], event["('t',)"]), ("2026-01-02", "one", 2))

    def test_with_arguments_it_stays_text(self) -> None:
        self.log.info({"a": 1}, {"b": 2})  # logging's "%(b)s" style: a mapping argument
        event = self.event()
        self.assertEqual(event["message"], "{'a': 1}")
        self.assertNotIn("a", event)


class TimeTest(unittest.TestCase):
    def test_each_second_is_its_own(self) -> None:
        formatter = JSONFormatter()
        record = logging.makeLogRecord({"msg": "x"})
        for offset, expected in [
            (0.5, "2026-11-25T19:58:19.500Z"),
            (1.25, "2026-11-25T19:58:20.250Z"),
            (1.75, "2026-11-25T19:58:20.750Z"),
            (0.0, "2026-11-25T19:58:19.000Z"),  # back in time
            (86400 * 366, "2027-11-26T19:58:19.000Z"),
        ]:
            record.created = CREATED + offset
            self.assertEqual(formatter.formatTime(record), expected)

    def test_a_time_that_is_not_one_never_raises(self) -> None:
        formatter = JSONFormatter()
        for created in (float("nan"), float("inf"), 1e20, "soon"):
            record = logging.makeLogRecord({"msg": "x", "created": created})
            with self.subTest(created=created):
                self.assertEqual(parse(self, formatter.format(record))["time"], repr(created))


class StandInTest(unittest.TestCase):
    def test_a_record_that_could_not_be_formatted(self) -> None:
        # The handler formats, in place of such a record, a copy of it
        # whose message says what failed, and args=None.
        record = logging.getLogger("svc").makeRecord(
            "svc", logging.ERROR, "app.py", 7, "%d items", ("many",), None, extra={"user": "ana"}
        )
        with self.assertRaises(TypeError):
            JSONFormatter().format(record)
        stand_in = copy.copy(record)
        stand_in.msg, stand_in.args = "could not format '%d items' % ('many',)", None
        event = parse(self, JSONFormatter().format(stand_in))
        self.assertEqual(event["message"], "could not format '%d items' % ('many',)")
        self.assertEqual((event["level"], event["logger"], event["user"]), ("ERROR", "svc", "ana"))


class SizeTest(unittest.TestCase):
    """The event stays one JSON object within the daemon's limit."""

    def format(self, msg: object, **extra: Any) -> str:
        record = logging.makeLogRecord(
            {"name": "svc", "levelname": "INFO", "msg": msg, "created": CREATED, **extra}
        )
        line = JSONFormatter().format(record)
        self.assertLessEqual(len(line.encode("utf-8")), LIMIT)
        return line

    def test_the_marker_is_protocols(self) -> None:
        cut, count = protocol.fit_message("x" * (LIMIT + 100))
        self.assertEqual(cut_count(cut), ("x" * (LIMIT + 100 - count), count))

    def test_the_message_is_cut_inside_the_document(self) -> None:
        aws = {"Timestamp": 1, "CloudWatchMetrics": [{"Namespace": "NS", "Metrics": []}]}
        extra = {"_aws": aws, "Latency": 12.5, "user": "ana", "tags": ["a", "b"]}
        # Quotes, newlines and control characters take more room escaped
        # than in UTF-8; the non-ASCII ones take several bytes each.
        message = 'say "hi"\n\x01\t Grüße 日本 \U0001f680 ' * 20000
        line = self.format(message, **extra)
        self.assertGreater(
            len(line.encode("utf-8")), LIMIT - 8
        )  # all that fits, but an escape or a digit
        event = parse(self, line)
        for key, value in extra.items():
            self.assertEqual(event[key], value)
        self.assertEqual(event["level"], "INFO")
        head, count = cut_count(event["message"])
        self.assertTrue(message.startswith(head))
        self.assertEqual(count, len(message.encode("utf-8")) - len(head.encode("utf-8")))

    def test_exactly_at_the_limit_nothing_is_cut(self) -> None:
        overhead = len(self.format("").encode("utf-8"))
        whole = "é" * ((LIMIT - overhead) // 2) + "x" * ((LIMIT - overhead) % 2)
        self.assertEqual(len(self.format(whole).encode("utf-8")), LIMIT)
        self.assertEqual(parse(self, self.format(whole))["message"], whole)
        longer = parse(self, self.format(whole + "x"))["message"]
        head, count = cut_count(longer)
        self.assertTrue(whole.startswith(head))
        self.assertEqual(count, len((whole + "x").encode("utf-8")) - len(head.encode("utf-8")))

    def test_lone_surrogates_in_a_cut_message(self) -> None:
        message = "a\udc80" * 200000
        head, count = cut_count(parse(self, self.format(message))["message"])
        self.assertEqual(head, ("a\ufffd" * 200000)[: len(head)])
        self.assertEqual(count, 4 * 200000 - len(head.encode("utf-8")))

    def test_the_other_values_over_the_limit(self) -> None:
        big = "v" * 300000
        line = self.format("small", big=big, bigger=[big], other="kept", Latency=1.5)
        event = parse(self, line)
        self.assertEqual(
            (event["message"], event["other"], event["Latency"]), ("small", "kept", 1.5)
        )
        self.assertEqual(cut_count(event["bigger"]), ("", len(json.dumps([big]))))  # largest first
        head, count = cut_count(event["big"])
        self.assertEqual(head + "v" * count, big)
        self.assertGreater(len(line.encode("utf-8")), LIMIT - 8)

    def test_the_message_is_cut_before_any_other_value(self) -> None:
        line = self.format("m" * 150000, big="v" * 150000)
        event = parse(self, line)
        self.assertEqual(event["big"], "v" * 150000)
        head, count = cut_count(event["message"])
        self.assertEqual(head + "m" * count, "m" * 150000)

    def test_aws_is_cut_last(self) -> None:
        aws = {"CloudWatchMetrics": [{"Namespace": "n" * 200000}]}
        event = parse(self, self.format("small", _aws=aws, other="o" * 100000))
        self.assertEqual(event["_aws"], aws)
        self.assertEqual(cut_count(event["other"])[0], "o" * len(cut_count(event["other"])[0]))

    def test_a_huge_exception(self) -> None:
        def fail() -> None:
            raise ValueError("y" * 300000)

        try:
            fail()
        except ValueError:
            exc_info = sys.exc_info()
        line = self.format("failed", exc_info=exc_info)
        event = parse(self, line)
        self.assertEqual(event["message"], "failed")  # too short to gain anything by a cut
        head, _ = cut_count(event["exception"])
        self.assertTrue(head.startswith("Traceback (most recent call last):"))

    def test_keys_alone_over_the_limit(self) -> None:
        line = self.format("hi", **{"k" * 300000: 1})
        event = parse(self, line)
        self.assertEqual(list(event), ["message"])
        head, count = cut_count(event["message"])
        whole = {"time": "2026-11-25T19:58:19.000Z", "level": "INFO", "logger": "svc"}
        text = json.dumps({**whole, "message": "hi", "k" * 300000: 1}, separators=(",", ":"))
        self.assertTrue(text.startswith(head))
        self.assertEqual(count, len(text) - len(head))


if __name__ == "__main__":
    unittest.main()
