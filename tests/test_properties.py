"""Property tests of the encoder (hypothesis, driven from unittest)."""

from __future__ import annotations

import json
import unittest
from typing import ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from globus.cwlogger.protocol import (
    EMPTY_MESSAGE,
    MAX_MESSAGE_BYTES,
    Ok,
    decode_reply,
    encode_event,
    fit_message,
)
from globus.cwlogger.testing import LocalDaemon

from .support import exchange, unique_address

# Any code point, lone surrogates included.
any_char = st.characters(exclude_categories=())
messages = st.one_of(
    st.text(any_char),
    st.text(any_char, min_size=1, max_size=8).flatmap(
        lambda unit: st.integers(60_000, 300_000).map(lambda n: (unit * n)[:n])
    ),
)
timestamps = st.integers(min_value=0, max_value=2**63)


class EncoderProperties(unittest.TestCase):
    daemon: ClassVar[LocalDaemon]

    @classmethod
    def setUpClass(cls) -> None:
        cls.daemon = LocalDaemon(unique_address()).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.daemon.stop()

    def test_one_line_within_the_limit_accepted_and_faithful(self) -> None:
        settings(max_examples=150, deadline=None)(given(messages, timestamps)(self.check))()

    def check(self, text: str, ts: int) -> None:
        request, cut = encode_event(text, ts)
        self.assertTrue(request.endswith(b"\n"))
        self.assertEqual(request.count(b"\n"), 1)
        body = json.loads(request)
        self.assertEqual(body["timestamp"], ts)
        sent = body["message"]
        self.assertLessEqual(len(sent.encode("utf-8")), MAX_MESSAGE_BYTES)
        self.assertNotEqual(sent, "")
        # the message itself, or its documented repaired or cut form
        self.assertEqual((sent, cut), fit_message(text))
        repaired = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        if cut:
            self.assertTrue(sent.endswith(f"... [{cut} bytes cut]"))
            head = sent[: -len(f"... [{cut} bytes cut]")]
            self.assertTrue(repaired.startswith(head))
            self.assertEqual(len(head.encode()) + cut, len(repaired.encode()))
        else:
            self.assertEqual(sent, repaired or EMPTY_MESSAGE)
        self.assertIsInstance(decode_reply(exchange(self.daemon.address, request)), Ok)

    def test_invalid_timestamps_and_types_raise_the_documented_errors(self) -> None:
        @given(st.one_of(st.floats(), st.text(), st.none(), st.booleans(), st.binary()))
        def other_type(ts: object) -> None:
            with self.assertRaisesRegex(TypeError, "timestamp must be an int"):
                encode_event("m", ts)  # type: ignore[arg-type]

        @given(st.integers(max_value=-1))
        def negative(ts: int) -> None:
            with self.assertRaisesRegex(ValueError, "timestamp must be non-negative"):
                encode_event("m", ts)

        @given(st.one_of(st.binary(), st.integers(), st.none(), st.lists(st.text())))
        def not_text(message: object) -> None:
            with self.assertRaisesRegex(TypeError, "message must be a str"):
                encode_event(message, 0)  # type: ignore[arg-type]

        other_type()
        negative()
        not_text()


if __name__ == "__main__":
    unittest.main()
