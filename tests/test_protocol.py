"""The wire format, byte for byte, and the address forms."""

from __future__ import annotations

import json
import pathlib
import re
import unittest

from globus.cwlogger import protocol
from globus.cwlogger.protocol import (
    EMPTY_MESSAGE,
    MAX_MESSAGE_BYTES,
    Error,
    Ok,
    ProtocolError,
    decode_reply,
    encode_event,
    parse_address,
)
from globus.cwlogger.testing import LocalDaemon

from .support import exchange, unique_address


def message_of(request: bytes) -> str:
    body = json.loads(request)
    assert isinstance(body["message"], str)
    return body["message"]


class EncodeTest(unittest.TestCase):
    def test_exact_bytes(self) -> None:
        request, cut = encode_event("Something bad happened!", 1764090000123)
        self.assertEqual(
            request, b'{"message": "Something bad happened!", "timestamp": 1764090000123}\n'
        )
        self.assertEqual(cut, 0)

    def test_quotes_and_backslashes_escaped_as_json_does(self) -> None:
        for text in ('say "hi" \\ there', '"', "\\", 'a\\"b', "tab\there", "\x7f del"):
            with self.subTest(text=text):
                request, _ = encode_event(text, 7)
                quoted = json.dumps(text, ensure_ascii=False)
                expected = f'{{"message": {quoted}, "timestamp": 7}}\n'
                self.assertEqual(request, expected.encode())

    def test_escapes_keep_one_line(self) -> None:
        text = 'line one\nline "two"\ttab\\ \r\x00 end'
        request, _ = encode_event(text, 0)
        self.assertEqual(request.count(b"\n"), 1)
        self.assertTrue(request.endswith(b"}\n"))
        self.assertEqual(message_of(request), text)
        self.assertIn(b"\\n", request)
        self.assertIn(b'\\"two\\"', request)

    def test_non_ascii_is_utf8_on_the_wire(self) -> None:
        request, _ = encode_event("Grüße 日本 \U0001f680", 5)
        self.assertEqual(request, '{"message": "Grüße 日本 \U0001f680", "timestamp": 5}\n'.encode())

    def test_lone_surrogates_become_replacement_characters(self) -> None:
        request, cut = encode_event("a\udc80b\ud800", 1)
        self.assertEqual(request, '{"message": "a\ufffdb\ufffd", "timestamp": 1}\n'.encode())
        self.assertEqual(cut, 0)

    def test_surrogate_pair_is_joined(self) -> None:
        request, _ = encode_event("\ud83d\ude80", 1)
        self.assertEqual(message_of(request), "\U0001f680")

    def test_empty_message_is_never_sent_empty(self) -> None:
        request, _ = encode_event("", 1)
        self.assertEqual(request, f'{{"message": "{EMPTY_MESSAGE}", "timestamp": 1}}\n'.encode())

    def test_message_at_the_limit_is_sent_whole(self) -> None:
        text = "é" * (MAX_MESSAGE_BYTES // 2)  # exactly the limit in UTF-8 bytes
        request, cut = encode_event(text, 1)
        self.assertEqual(cut, 0)
        self.assertEqual(message_of(request), text)

    def test_oversized_message_is_cut_with_a_marker(self) -> None:
        text = "x" * (MAX_MESSAGE_BYTES + 1)
        request, cut = encode_event(text, 1)
        sent = message_of(request)
        self.assertLessEqual(len(sent.encode()), MAX_MESSAGE_BYTES)
        marker = re.search(r"\.\.\. \[(\d+) bytes cut\]$", sent)
        assert marker is not None
        self.assertEqual(int(marker.group(1)), cut)
        self.assertEqual(len(sent) - len(marker.group(0)) + cut, len(text))
        self.assertTrue(text.startswith(sent[: marker.start()]))

    def test_cut_falls_on_a_character_boundary(self) -> None:
        for char in ("é", "日", "\U0001f680"):
            with self.subTest(char=char):
                text = char * 300_000
                request, cut = encode_event(text, 1)
                sent = message_of(request)
                head = sent[: sent.index("...")]
                self.assertEqual(head, char * len(head))
                self.assertLessEqual(len(sent.encode()), MAX_MESSAGE_BYTES)
                self.assertEqual(len(head.encode()) + cut, len(text.encode()))
                # little more could have been kept (the marker's count may
                # have fewer digits than the budget allowed for)
                slack = len(char.encode()) + len(str(len(text.encode())))
                self.assertGreater(len(sent.encode()) + slack, MAX_MESSAGE_BYTES)

    def test_oversized_with_surrogates(self) -> None:
        request, cut = encode_event("\udc80" * 100_000, 1)
        sent = message_of(request)
        self.assertLessEqual(len(sent.encode()), MAX_MESSAGE_BYTES)
        self.assertTrue(sent.startswith("\ufffd"))
        self.assertGreater(cut, 0)

    def test_timestamps(self) -> None:
        self.assertTrue(encode_event("m", 0)[0].endswith(b'"timestamp": 0}\n'))
        for bad in (True, 1.5, None, "1", 10**3 + 0j):
            with self.subTest(bad=bad), self.assertRaisesRegex(TypeError, "timestamp"):
                encode_event("m", bad)  # type: ignore[arg-type]
        with self.assertRaisesRegex(ValueError, "non-negative: -1"):
            encode_event("m", -1)

    def test_every_control_character_is_escaped(self) -> None:
        for code in range(0x20):
            with self.subTest(code=hex(code)):
                request = encode_event(f"a{chr(code)}b", 0)[0]
                self.assertEqual(json.loads(request), {"message": f"a{chr(code)}b", "timestamp": 0})
                self.assertNotIn(bytes([code]), request[:-1])  # escaped, not raw

    def test_cloudwatchs_window_less_its_margins(self) -> None:
        # 14 days less one hour back, 2 hours less ten minutes ahead; the
        # bounds themselves are outside.
        now = 1_764_090_000.0
        back, ahead = 14 * 86400 - 3600, 2 * 3600 - 600
        for created, restamped in [
            (now - back, True),
            (now - back + 0.001, False),
            (now + ahead - 0.001, False),
            (now + ahead, True),
        ]:
            with self.subTest(created=created - now):
                expected = int((now if restamped else created) * 1000)
                self.assertEqual(protocol.stamp(created, now), (expected, restamped))

    def test_message_must_be_str(self) -> None:
        for bad in (b"bytes", None, 3):
            with self.subTest(bad=bad), self.assertRaisesRegex(TypeError, "message must be a str"):
                encode_event(bad, 1)  # type: ignore[arg-type]


class DecodeTest(unittest.TestCase):
    def test_ok(self) -> None:
        line = b'{"status": "ok", "health": {"queue_length": 12, "queue_percent_full": 0.012}}\n'
        self.assertEqual(decode_reply(line), Ok(queue_length=12, queue_percent_full=0.012))
        self.assertEqual(decode_reply(line.rstrip()), Ok(12, 0.012))

    def test_error(self) -> None:
        line = b'{"status": "error", "message": "InvalidMessage(\'message too large\')"}\n'
        self.assertEqual(decode_reply(line), Error("InvalidMessage('message too large')"))

    def test_malformed(self) -> None:
        for bad in (
            b"",
            b"\n",
            b"not json\n",
            b"[]\n",
            b'{"status": "ok"}\n',
            b'{"status": "ok", "health": {"queue_length": "1", "queue_percent_full": 0}}\n',
            b'{"status": "error"}\n',
            b'{"status": "error", "message": 3}\n',
            b'{"status": "maybe"}\n',
            b"\xff\n",
        ):
            with self.subTest(bad=bad), self.assertRaisesRegex(ProtocolError, "not a reply"):
                decode_reply(bad)


class AddressTest(unittest.TestCase):
    def test_forms(self) -> None:
        for given in ("\0org.globus.cwlogs", "\\0org.globus.cwlogs", "@org.globus.cwlogs"):
            with self.subTest(given=given):
                self.assertEqual(parse_address(given), "\0org.globus.cwlogs")
        self.assertEqual(parse_address("/tmp/org.globus.cwlogs"), "/tmp/org.globus.cwlogs")
        self.assertEqual(parse_address(pathlib.Path("/run/x.sock")), "/run/x.sock")

    def test_display(self) -> None:
        self.assertEqual(protocol.display_address("\0name"), "@name")
        self.assertEqual(protocol.display_address("/tmp/x"), "/tmp/x")

    def test_bad_addresses_name_the_value(self) -> None:
        for bad in (
            "",
            "\0",
            "\0\0",
            "\\0",
            "@",
            "relative/path",
            "org.globus.cwlogs",
            "/tmp/a\0b",
            "/" + "x" * 200,
            "@" + "x" * 108,
        ):
            with self.subTest(bad=bad), self.assertRaises(ValueError) as caught:
                parse_address(bad)
            self.assertIn(repr(bad), str(caught.exception))
        for wrong in (3, b"\0name", None):
            with self.subTest(wrong=wrong), self.assertRaisesRegex(TypeError, "address must be"):
                parse_address(wrong)  # type: ignore[arg-type]

    def test_longest_abstract_name_fits(self) -> None:
        name = "@" + "n" * 107
        with LocalDaemon(name) as daemon:
            self.assertEqual(daemon.address, "\0" + "n" * 107)


class StandInAcceptsEveryEncodingTest(unittest.TestCase):
    """What the encoder produces, the daemon's rules accept."""

    def test_round_trip(self) -> None:
        cases = ["plain", "", "a\udc80", "é" * 300_000, 'q"\n\\', "\U0001f680" * 70_000]
        with LocalDaemon(unique_address()) as daemon:
            for text in cases:
                request, _ = encode_event(text, 42)
                self.assertEqual(
                    protocol.decode_reply(exchange(daemon.address, request)).__class__, Ok
                )
            events = daemon.wait_for(len(cases))
        expected = [protocol.fit_message(text)[0] for text in cases]
        self.assertEqual([e.message for e in events], expected)
        self.assertFalse(daemon.wedged)


if __name__ == "__main__":
    unittest.main()
