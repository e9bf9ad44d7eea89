"""GET /events against the real bridge process, real line servers and real
sockets: bursts, stuck clients, and resuming with Last-Event-ID."""

from __future__ import annotations

import re

from tests.base import BridgeTestCase
from tests.events_client import RawEventClient, SSEEvent
from tests.waiting import wait_for

BURST = 100_000


def sequence_numbers(events: list[SSEEvent]) -> list[int]:
    """The sequence numbers of the events' ids, which must share one boot."""
    boots = {(event.id or "").rpartition("-")[0] for event in events}
    assert len(boots) == 1, boots
    return [int((event.id or "").rpartition("-")[2]) for event in events]


class EventsTestCase(BridgeTestCase):
    async def events_status(self) -> dict[str, int]:
        assert self.http is not None
        status = await self.http.get("/status")
        events: dict[str, int] = status.json()["events"]
        return events

    async def wait_subscribers(self, count: int) -> None:
        async def subscribed() -> bool:
            return (await self.events_status())["subscribers"] == count

        await wait_for(subscribed, what=f"{count} /events subscribers")

    def raw_client(
        self, last_event_id: str | None = None, receive_buffer: int | None = None
    ) -> RawEventClient:
        assert self.bridge is not None and self.bridge.port is not None
        client = RawEventClient(self.bridge.port, last_event_id, receive_buffer)
        self.addCleanup(client.close)
        return client

    async def wait_events(self, client: RawEventClient, count: int, timeout: float = 10.0) -> None:
        def arrived() -> bool:
            if client.poll() >= count:
                return True
            if client.eof or client.reset:
                raise AssertionError(f"the stream closed before {count} events: "
                                     + client.describe())
            return False

        await wait_for(arrived, timeout=timeout, interval=0.005, what=f"{count} events",
                       context=client.describe)


class EventsTests(EventsTestCase):
    bridge_args = ("--max-event-backlog", "32", "--event-stall-timeout", "2",
                   "--event-replay", "5000")
    timeout = 120

    async def test_two_subscribers_receive_unsolicited_lines(self) -> None:
        server = await self.start_upstream(None)
        first, second = self.raw_client(), self.raw_client()
        await self.wait_subscribers(2)
        for stream in (first, second):
            stream.poll()
            self.assertEqual(stream.status, 200)

        pushed = ["news 1", "news 2 with \\ and \r inside", "news 3"]
        self.assertEqual(server.push(*pushed), 1)
        expected = ["news 1", "news 2 with \\\\ and \\r inside", "news 3"]
        await wait_for(lambda: first.poll() >= 3 and second.poll() >= 3,
                       what="3 events on each stream")
        for stream in (first, second):
            self.assertEqual(stream.data(), expected)
            self.assertEqual(stream.comments[:1], ["connected"])
            numbers = sequence_numbers(stream.events)
            self.assertEqual(numbers, list(range(numbers[0], numbers[0] + 3)))

    async def test_a_reader_that_keeps_up_gets_every_line_of_a_100000_line_burst(self) -> None:
        """The trial's failure, twenty times over and with a backlog of 32:
        one push of 100,000 lines; a client reading a plain socket gets all."""
        server = await self.start_upstream(None)
        dropped_before = (await self.events_status())["dropped"]
        client = self.raw_client()
        await wait_for(lambda: client.poll() == 0 and client.comments == ["connected"],
                       what="the stream to open", context=client.describe)
        lines = [f"burst {number:06d}" for number in range(BURST)]
        self.assertEqual(server.push(*lines), 1)

        await self.wait_events(client, BURST, timeout=90.0)
        self.assertEqual(client.data(), lines)
        numbers = sequence_numbers(client.events)
        self.assertEqual(numbers, list(range(numbers[0], numbers[0] + BURST)))
        self.assertEqual((await self.events_status())["dropped"], dropped_before)
        self.assertFalse(client.ended or client.eof or client.reset, client.describe())

    async def test_reconnect_with_last_event_id_resumes_without_loss(self) -> None:
        server = await self.start_upstream(None)
        published = (await self.events_status())["published"]
        first = self.raw_client()
        await wait_for(lambda: first.poll() == 0 and first.comments, what="the stream to open")
        server.push(*[f"a {number}" for number in range(50)])
        await self.wait_events(first, 50)
        first.close()  # the connection is lost: EventSource reconnects with the last id

        server.push(*[f"b {number}" for number in range(50)])  # published while away
        await wait_for(lambda: self.published_at_least(published + 100),
                       what="100 events published")
        last_id = first.events[-1].id
        assert last_id is not None
        second = self.raw_client(last_id)
        await self.wait_events(second, 50)
        server.push(*[f"c {number}" for number in range(50)])
        await self.wait_events(second, 100)

        self.assertEqual(first.data() + second.data(),
                         [f"{part} {number}" for part in "abc" for number in range(50)])
        self.assertEqual(second.data("gap"), [])
        numbers = sequence_numbers(first.events + second.events)
        self.assertEqual(numbers, list(range(numbers[0], numbers[0] + 150)))

    async def published_at_least(self, count: int) -> bool:
        return (await self.events_status())["published"] >= count

    async def test_a_stuck_subscriber_is_dropped_cleanly_and_resumes_without_loss(self) -> None:
        server = await self.start_upstream(None)
        assert self.bridge is not None
        dropped_before = (await self.events_status())["dropped"]
        healthy = self.raw_client()
        stuck = self.raw_client(receive_buffer=4096)  # asks for /events, then reads nothing
        await self.wait_subscribers(2)

        # Push in batches and let the healthy subscriber catch up after each,
        # until the stuck one has been paused for the stall time and dropped.
        pushed: list[str] = []
        filler = "x" * 16000
        for batch in range(400):
            lines = [f"{batch:03d}.{index:02d} {filler}" for index in range(16)]
            server.push(*lines)
            pushed.extend(lines)
            await wait_for(lambda: healthy.poll() >= len(pushed),
                           what=f"{len(pushed)} events on the healthy stream",
                           context=healthy.describe)
            if (await self.events_status())["dropped"] > dropped_before:
                break
        else:
            self.fail("the stuck subscriber was never dropped")
        events = await self.events_status()
        self.assertEqual((events["subscribers"], events["dropped"]), (1, dropped_before + 1))
        why = "the connection took nothing for 2 s while more than 32 events waited"
        self.assertIn(f"dropping an /events subscriber: {why}", self.bridge.stdout())

        # The stuck client reads at last (within the stall time, before the
        # bridge would abort): its stream ends with the reason, properly.
        await wait_for(lambda: stuck.poll() >= 0 and stuck.eof, timeout=10.0,
                       interval=0.002, what="the end of the dropped stream",
                       context=stuck.describe)
        self.assertEqual((stuck.ended, stuck.reset), (True, False))
        self.assertEqual(stuck.events[-1], SSEEvent("dropped", None, why))
        received = stuck.data()
        self.assertEqual(received, pushed[:len(received)])
        self.assertLess(len(received), len(pushed))

        # EventSource reconnects with the last id it saw and misses nothing.
        last_id = [event.id for event in stuck.events if event.id][-1]
        resumed = self.raw_client(last_id)
        server.push("after the drop")
        await self.wait_events(resumed, len(pushed) + 1 - len(received), timeout=30.0)
        self.assertEqual(resumed.data("gap"), [])
        self.assertEqual(received + resumed.data(), [*pushed, "after the drop"])
        await wait_for(lambda: healthy.poll() > len(pushed),
                       what="the line pushed after the drop")
        self.assertEqual(healthy.data(), [*pushed, "after the drop"])


class RestartTests(EventsTestCase):
    async def test_an_id_from_before_a_restart_gets_a_gap(self) -> None:
        server = await self.start_upstream(None)
        first = self.raw_client()
        await wait_for(lambda: first.poll() == 0 and first.comments, what="the stream to open")
        server.push("before")
        await self.wait_events(first, 1)
        old_id = first.events[0].id
        assert old_id is not None

        # Another bridge process stands for the restarted one: a new boot token.
        assert self.bridge is not None and self.bridge.port is not None
        await self.start_bridge("--listen", "127.0.0.1:0", "--upstream",
                                f"127.0.0.1:{self.upstream_port}")
        resumed = self.raw_client(old_id)
        await self.wait_events(resumed, 1)
        gap = resumed.events[0]
        self.assertEqual(gap.kind, "gap")
        self.assertEqual(gap.data, f"the bridge restarted after event {old_id}; "
                                   "the events that followed it in that run are lost")
        assert gap.id is not None
        self.assertRegex(gap.id, r"^[0-9a-f]{8}-0$")
        self.assertNotEqual(gap.id.rpartition("-")[0], old_id.rpartition("-")[0])
        self.assertTrue(re.fullmatch(r"[0-9a-f]{8}-\d+", old_id), old_id)

