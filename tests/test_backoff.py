"""Reconnect delays (bridge.upstream.backoff)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bridge.upstream.backoff import JITTER_FRACTION, Backoff


class BackoffTests(SynchronousTestCase):
    def test_without_jitter_doubles_up_to_the_cap(self) -> None:
        backoff = Backoff(1.0, 2.0, 30.0, jitter=lambda: 0.0)
        self.assertEqual([backoff(n) for n in range(1, 8)], [1, 2, 4, 8, 16, 30, 30])

    def test_base_ignores_jitter(self) -> None:
        backoff = Backoff(1.0, 2.0, 30.0, jitter=lambda: 0.999)
        self.assertEqual([backoff.base(n) for n in range(1, 8)], [1, 2, 4, 8, 16, 30, 30])

    def test_first_delay_is_the_initial_delay(self) -> None:
        self.assertEqual(Backoff(0.5, 3.0, 60.0, jitter=lambda: 0.0)(1), 0.5)
        self.assertEqual(Backoff(0.5, 3.0, 60.0, jitter=lambda: 0.0)(2), 1.5)

    def test_attempt_zero_or_negative_is_the_initial_delay(self) -> None:
        backoff = Backoff(1.0, 2.0, 30.0, jitter=lambda: 0.0)
        self.assertEqual([backoff(0), backoff(-5)], [1.0, 1.0])

    def test_factor_one_is_constant(self) -> None:
        backoff = Backoff(3.0, 1.0, 30.0, jitter=lambda: 0.0)
        self.assertEqual({backoff(n) for n in range(1, 50)}, {3.0})

    def test_factor_one_is_constant_even_for_huge_attempts(self) -> None:
        # 1.0 ** (10 ** 400) overflows converting the exponent to float.
        backoff = Backoff(3.0, 1.0, 30.0, jitter=lambda: 0.0)
        self.assertEqual(backoff(10**400), 3.0)

    def test_jitter_is_the_fraction(self) -> None:
        self.assertEqual(JITTER_FRACTION, 0.2)

    def test_high_jitter_stays_between_80_percent_of_base_and_the_cap(self) -> None:
        backoff = Backoff(1.0, 2.0, 30.0, jitter=lambda: 0.999)
        for attempt in range(1, 100):
            base = backoff.base(attempt)
            delay = backoff(attempt)
            self.assertLessEqual(delay, 30.0)
            self.assertLess(delay, base)
            self.assertGreaterEqual(delay, 0.8 * base)
        self.assertAlmostEqual(backoff(1), 0.8002)
        self.assertAlmostEqual(backoff(10), 24.006)

    def test_full_jitter_is_exactly_80_percent(self) -> None:
        backoff = Backoff(1.0, 2.0, 30.0, jitter=lambda: 1.0)
        self.assertAlmostEqual(backoff(10), 24.0)

    def test_default_jitter_stays_in_bounds(self) -> None:
        backoff = Backoff(1.0, 2.0, 30.0)
        for attempt in range(1, 200):
            delay = backoff(attempt % 10 + 1)
            base = backoff.base(attempt % 10 + 1)
            self.assertTrue(0.8 * base <= delay <= base, (attempt, delay))

    def test_huge_attempt_numbers_do_not_overflow(self) -> None:
        backoff = Backoff(1.0, 2.0, 30.0, jitter=lambda: 0.0)
        for attempt in (1_024, 1_025, 10**6, 10**100):
            self.assertEqual(backoff(attempt), 30.0)

    def test_large_factor_does_not_overflow(self) -> None:
        backoff = Backoff(1.0, 1000.0, 30.0, jitter=lambda: 0.0)
        for attempt in (200, 1_001, 10**9):
            self.assertEqual(backoff(attempt), 30.0)

    def test_large_initial_times_huge_power_is_capped(self) -> None:
        backoff = Backoff(1e300, 2.0, 30.0, jitter=lambda: 0.0)
        self.assertEqual(backoff(1_000), 30.0)
