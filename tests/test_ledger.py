"""The ledger of undelivered records, on its own: pure, no clock, no I/O."""

from __future__ import annotations

import unittest

from globus.cwlogger._ledger import SUMMARY_EVERY, Ledger, Summary


class LedgerTest(unittest.TestCase):
    def test_a_summary_spans_exactly_the_records_it_claims(self) -> None:
        ledger = Ledger()
        for timestamp in (5000, 1000, 9000, 3000):
            ledger.add(timestamp, unreachable=True)
        self.assertEqual(ledger.claim(0.0), Summary(4, 1000, 9000))
        self.assertEqual(ledger.open, 0)

    def test_nothing_to_claim_without_records(self) -> None:
        ledger = Ledger()
        self.assertIsNone(ledger.claim(100.0))
        self.assertFalse(ledger.owes())

    def test_one_summary_on_its_way_at_a_time(self) -> None:
        ledger = Ledger()
        ledger.add(1, unreachable=True)
        first = ledger.claim(0.0)
        assert first is not None
        ledger.add(2, unreachable=True)  # due at once again, but one is on its way
        self.assertIsNone(ledger.claim(10.0))
        self.assertTrue(ledger.owes())
        ledger.settle(first, delivered=True)
        self.assertEqual(ledger.claim(10.0), Summary(1, 2, 2))  # only the new record

    def test_an_unsettled_summary_counts_again_and_no_record_twice(self) -> None:
        ledger = Ledger()
        ledger.add(10, unreachable=True)
        ledger.add(20, unreachable=True)
        first = ledger.claim(0.0)
        assert first is not None
        ledger.add(5, unreachable=True)
        ledger.settle(first, delivered=False)
        self.assertEqual(ledger.claim(0.0), Summary(3, 5, 20))

    def test_settling_twice_changes_nothing(self) -> None:
        ledger = Ledger()
        ledger.add(1, unreachable=True)
        summary = ledger.claim(0.0)
        assert summary is not None
        ledger.settle(summary, delivered=False)
        ledger.settle(summary, delivered=False)  # a late reply after the fact, say
        self.assertEqual(ledger.open, 1)

    def test_after_refusals_at_most_one_summary_a_second(self) -> None:
        ledger = Ledger()
        ledger.add(1, unreachable=False)
        summary = ledger.claim(100.0)
        assert summary is not None
        ledger.settle(summary, delivered=False)  # refused too
        ledger.add(2, unreachable=False)
        self.assertIsNone(ledger.claim(100.0 + SUMMARY_EVERY - 0.001))
        self.assertEqual(ledger.claim(100.0 + SUMMARY_EVERY), Summary(2, 1, 2))

    def test_after_the_daemon_was_unreachable_the_summary_is_due_at_once(self) -> None:
        ledger = Ledger()
        ledger.add(1, unreachable=False)
        summary = ledger.claim(100.0)
        assert summary is not None
        ledger.settle(summary, delivered=True)
        ledger.add(2, unreachable=True)
        self.assertEqual(ledger.claim(100.001), Summary(1, 2, 2))


if __name__ == "__main__":
    unittest.main()
