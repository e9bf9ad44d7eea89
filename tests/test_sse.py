"""The event-stream wire format, event ids and the replay log, without any
connection: exact bytes for every case."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bridge.http.replay import MAX_KEPT_BYTES, EventLog
from bridge.http.sse import check_boot, escape, event_id, format_event, parse_event_id


class FormatEventTests(SynchronousTestCase):
    def test_single_line(self) -> None:
        self.assertEqual(
            format_event("unsolicited", "b1-7", ["hello world"]),
            b"event: unsolicited\nid: b1-7\ndata: hello world\n\n",
        )

    def test_several_lines_are_several_data_fields(self) -> None:
        self.assertEqual(
            format_event("unsolicited", "b1-8", ["250-mx.example.org", "250-SIZE 1000", "250 OK"]),
            b"event: unsolicited\nid: b1-8\n"
            b"data: 250-mx.example.org\ndata: 250-SIZE 1000\ndata: 250 OK\n\n",
        )

    def test_json_line(self) -> None:
        self.assertEqual(
            format_event("unsolicited", "b1-9", ['["message","news","hi \\"you\\""]']),
            b'event: unsolicited\nid: b1-9\ndata: ["message","news","hi \\\\"you\\\\""]\n\n',
        )

    def test_json_lines_are_sent_as_they_are(self) -> None:
        # What JSON.parse(event.data) reads back, with no unescaping first.
        self.assertEqual(
            format_event("message", "b1-9", ['["message","news","hi \\"you\\" \\\\"]'],
                         json_lines=True),
            b'event: message\nid: b1-9\ndata: ["message","news","hi \\"you\\" \\\\"]\n\n',
        )

    def test_a_json_line_with_a_raw_cr_is_escaped_all_the_same(self) -> None:
        self.assertEqual(format_event("message", None, ['"a\rb"'], json_lines=True),
                         b'event: message\ndata: "a\\rb"\n\n')

    def test_empty_line(self) -> None:
        self.assertEqual(format_event("late_reply", "b1-1", [""]),
                         b"event: late_reply\nid: b1-1\ndata: \n\n")

    def test_no_lines_is_one_empty_data_field(self) -> None:
        # EventSource dispatches no event without a data field.
        self.assertEqual(format_event("unsolicited", "b1-1", []),
                         b"event: unsolicited\nid: b1-1\ndata: \n\n")

    def test_without_id(self) -> None:
        self.assertEqual(format_event("dropped", None, ["why"]), b"event: dropped\ndata: why\n\n")

    def test_cr_lf_and_backslash_are_escaped_in_each_line(self) -> None:
        self.assertEqual(
            format_event("unsolicited", "b1-1", ["a\rb", "c\\rd\\", "e\nf", "\r\n"]),
            b"event: unsolicited\nid: b1-1\n"
            b"data: a\\rb\ndata: c\\\\rd\\\\\ndata: e\\nf\ndata: \\r\\n\n\n",
        )

    def test_cr_and_lf_cannot_inject_fields_or_events(self) -> None:
        event = format_event("unsolicited", "b1-1",
                             ["x\rdata: evil\r\revent: forged\nid: 99", "\n\nevent: x"])
        self.assertNotIn(b"\r", event)
        self.assertEqual(event.count(b"\n\n"), 1)
        self.assertEqual(
            event.split(b"\n"),
            [
                b"event: unsolicited",
                b"id: b1-1",
                b"data: x\\rdata: evil\\r\\revent: forged\\nid: 99",
                b"data: \\n\\nevent: x",
                b"",
                b"",
            ],
        )

    def test_non_ascii_is_utf8_and_a_lone_surrogate_is_replaced(self) -> None:
        self.assertEqual(
            format_event("unsolicited", "b1-2", ["caf\u00e9 \ufffd", "\udce9"]),
            "event: unsolicited\nid: b1-2\ndata: caf\u00e9 \ufffd\ndata: ?\n\n".encode(),
        )

    def test_kind_must_be_one_line(self) -> None:
        for kind in ("", "a\nb", "a\rb"):
            self.assertRaises(ValueError, format_event, kind, None, ["x"])

    def test_escape(self) -> None:
        self.assertEqual(escape("a\\b\rc\nd"), "a\\\\b\\rc\\nd")


class EventIdTests(SynchronousTestCase):
    def test_format_and_parse(self) -> None:
        self.assertEqual(event_id("9f3ac01b", 17), "9f3ac01b-17")
        self.assertEqual(parse_event_id("9f3ac01b-17"), ("9f3ac01b", 17))
        self.assertEqual(parse_event_id("b1-0"), ("b1", 0))

    def test_malformed_ids(self) -> None:
        for text in ("", "17", "b1", "b1-", "-17", "b1-x", "b1-+1", "b1--1", "b-1-2", "b1-1.5",
                     "b1-\u0663", "b1- 1", "b1-1 ", "b1-" + "9" * 20, "b\u00e9-1", "a" * 33 + "-1"):
            self.assertIsNone(parse_event_id(text), text)

    def test_boot_tokens(self) -> None:
        self.assertEqual(check_boot("b1"), "b1")
        self.assertEqual(check_boot("0123456789abcdef_ABCDEF0123456789"[:32]),
                         "0123456789abcdef_ABCDEF012345678")
        for boot in ("", "a-b", "a b", "a\n", "a" * 33):
            self.assertRaises(ValueError, check_boot, boot)


def log_with(count: int, keep: int = 1000, boot: str = "b1") -> EventLog:
    log = EventLog(boot, keep)
    for number in range(1, count + 1):
        log.record("unsolicited", [f"line {number}"])
    return log


def event(number: int, boot: str = "b1") -> bytes:
    return format_event("unsolicited", f"{boot}-{number}", [f"line {number}"])


def gap(after: int, why: str) -> bytes:
    return f"event: gap\nid: b1-{after}\ndata: {why}\n\n".encode()


class EventLogTests(SynchronousTestCase):
    def test_ids_count_from_one_with_the_boot_token(self) -> None:
        log = EventLog("b1", 10)
        self.assertEqual(log.record("unsolicited", ["line 1"]), event(1))
        self.assertEqual(log.record("unsolicited", ["line 2"]), event(2))
        self.assertEqual(log.sequence, 2)

    def test_no_last_event_id_gets_nothing(self) -> None:
        log = log_with(5)
        for last in (None, ""):
            resume = log.resume(last)
            self.assertEqual((resume.gap, tuple(resume.events)), (None, ()))

    def test_replay_after_a_kept_id(self) -> None:
        resume = log_with(5).resume("b1-2")
        self.assertEqual((resume.gap, tuple(resume.events)), (None, (event(3), event(4), event(5))))

    def test_replay_after_the_newest_is_nothing(self) -> None:
        resume = log_with(5).resume("b1-5")
        self.assertEqual((resume.gap, tuple(resume.events)), (None, ()))

    def test_replay_after_the_event_just_before_the_oldest_kept(self) -> None:
        resume = log_with(10, keep=3).resume("b1-7")
        self.assertEqual((resume.gap, tuple(resume.events)),
                         (None, (event(8), event(9), event(10))))

    def test_replay_from_the_start_of_the_run(self) -> None:
        resume = log_with(3).resume("b1-0")
        self.assertEqual((resume.gap, tuple(resume.events)), (None, (event(1), event(2), event(3))))

    def test_gap_when_events_are_no_longer_kept(self) -> None:
        resume = log_with(10, keep=3).resume("b1-2")
        self.assertEqual(resume.gap, gap(7, "events after b1-2 are no longer kept; 5 were missed"))
        self.assertEqual(tuple(resume.events), (event(8), event(9), event(10)))

    def test_gap_when_nothing_is_kept(self) -> None:
        resume = log_with(10, keep=0).resume("b1-4")
        self.assertEqual(resume.gap, gap(10, "events after b1-4 are no longer kept; 6 were missed"))
        self.assertEqual(tuple(resume.events), ())
        self.assertEqual(log_with(10, keep=0).resume("b1-10").gap, None)

    def test_gap_when_the_bridge_restarted(self) -> None:
        resume = log_with(3).resume("a0-17")
        self.assertEqual(resume.gap, gap(
            0, "the bridge restarted after event a0-17; "
               "the events that followed it in that run are lost"))
        self.assertEqual(tuple(resume.events), (event(1), event(2), event(3)))

    def test_gap_when_restarted_and_early_events_of_this_run_are_gone(self) -> None:
        resume = log_with(10, keep=4).resume("a0-17")
        self.assertEqual(resume.gap, gap(
            6, "the bridge restarted after event a0-17; "
               "the events that followed it in that run are lost, and so are the first 6 "
               "of this run"))
        self.assertEqual(tuple(resume.events), (event(7), event(8), event(9), event(10)))

    def test_gap_when_the_id_is_malformed(self) -> None:
        resume = log_with(2).resume("garbage")
        self.assertEqual(resume.gap, gap(
            0, "Last-Event-ID 'garbage' is not an event id of this bridge; "
               "earlier events may have been missed"))
        self.assertEqual(tuple(resume.events), (event(1), event(2)))

    def test_an_id_of_this_run_from_the_future_is_not_ours(self) -> None:
        resume = log_with(2).resume("b1-3")
        self.assertEqual(resume.gap, gap(
            0, "Last-Event-ID 'b1-3' is not an event id of this bridge; "
               "earlier events may have been missed"))
        self.assertEqual(tuple(resume.events), (event(1), event(2)))

    def test_a_long_malformed_id_is_shortened_in_the_gap(self) -> None:
        resume = log_with(0).resume("x" * 500)
        self.assertEqual(resume.gap, gap(
            0, f"Last-Event-ID '{'x' * 64}...' is not an event id of this bridge; "
               "earlier events may have been missed"))

    def test_a_cr_in_the_id_cannot_break_the_gap_event(self) -> None:
        resume = log_with(0).resume("a\rdata: x")
        assert resume.gap is not None
        self.assertEqual(resume.gap.count(b"\n\n"), 1)
        self.assertNotIn(b"\r", resume.gap)

    def test_keep_only_the_newest(self) -> None:
        log = log_with(1500)
        resume = log.resume("b1-0")
        self.assertEqual(len(resume.events), 1000)
        self.assertEqual(resume.events[0], event(501))
        self.assertEqual(resume.gap, gap(500, "events after b1-0 are no longer kept; "
                                              "500 were missed"))

    def test_kept_events_fit_in_max_bytes(self) -> None:
        self.assertEqual(MAX_KEPT_BYTES, 64 * 1024 * 1024)
        size = len(event(1))  # every event of this test is as long (ids 1 to 9)
        log = EventLog("b1", 1000, max_bytes=3 * size)
        for number in range(1, 10):
            log.record("unsolicited", [f"line {number}"])
        resume = log.resume("b1-5")
        self.assertEqual(resume.gap, gap(6, "events after b1-5 are no longer kept; "
                                            "1 were missed"))
        self.assertEqual(tuple(resume.events), (event(7), event(8), event(9)))
        log.record("unsolicited", ["x" * (4 * size)])  # alone too big: nothing is kept
        self.assertEqual(tuple(log.resume("b1-9").events), ())

    def test_bad_arguments(self) -> None:
        self.assertRaises(ValueError, EventLog, "b1", -1)
        self.assertRaises(ValueError, EventLog, "b-1", 1)
