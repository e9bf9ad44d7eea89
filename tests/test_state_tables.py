"""The transition tables of a pool member and of a connection
(bridge.upstream.member_states, bridge.upstream.connection_states).

Three layers: each table alone (every row moves, then runs its action; every
other pair fails loudly, naming the state and the event), a real connection
taken through every (state, event) pair by its public methods, and real
members (ClientService, connector, protocol over a fake endpoint, on a Clock)
driven through scenarios that together take every row of the member's table.
Transitions are observed as Twisted log events (debug level), the way an
operator sees them with ``--log-level debug``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Callable

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bridge.config import Config
from bridge.upstream import connection_states, member_states
from bridge.upstream.connection_states import ConnectionEvent, ConnectionState
from bridge.upstream.machine import StateMachine, Table, UndefinedTransitionError
from bridge.upstream.member import UpstreamMember
from bridge.upstream.member_states import (
    ATTEMPT,
    CONNECTED,
    CONNECTING,
    DRAIN,
    DRAINING,
    GRACE_OVER,
    LOST,
    READY,
    REPLACING,
    REPLACING_CONNECTING,
    REPLACING_WAITING,
    RETIRE,
    RETRY,
    STOP,
    STOPPED,
    WAITING,
    MemberEvent,
    MemberState,
)
from bridge.upstream.protocol import Counters, UpstreamProtocol
from tests.fakes_upstream import (
    CONNECT,
    HANG,
    REFUSE,
    FakeEndpoint,
    LineLog,
    line_framing,
    make_member,
)

Transition = tuple[Enum, Enum, Enum]
TABLES: list[tuple[Table[Any, Any], type[Enum], type[Enum], type[StateMachine]]] = [
    (member_states.TABLE, MemberState, MemberEvent, UpstreamMember),
    (connection_states.TABLE, ConnectionState, ConnectionEvent, UpstreamProtocol),
]


#: Each machine's (states, events), to read the names its transitions are logged with.
MACHINES: dict[str, tuple[type[Enum], type[Enum]]] = {
    "member": (MemberState, MemberEvent),
    "connection": (ConnectionState, ConnectionEvent),
}


class Transitions:
    """The transitions logged while a test runs, per machine."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self._seen: list[tuple[str, Transition]] = []
        globalLogPublisher.addObserver(self)
        case.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict[str, Any]) -> None:
        machine = MACHINES.get(event.get("machine", ""))
        if machine is not None and "before" in event:
            states, events = machine
            self._seen.append((event["machine"], (
                states[event["before"]], events[event["upon"]], states[event["after"]])))

    def take(self, machine: str) -> list[Transition]:
        """The transitions of ``machine`` since the last take()."""
        taken = [transition for name, transition in self._seen if name == machine]
        self._seen = [(name, t) for name, t in self._seen if name != machine]
        return taken


def stub_owner(table: Table[Any, Any], state: Enum) -> Any:
    """An owner of ``table`` in ``state`` whose every action records its name,
    its arguments and the state when it ran."""

    class Stub(StateMachine):
        log = Logger()
        _table = table
        name = "stub"

        def __init__(self) -> None:
            self._state = state
            self.ran: list[tuple[str, tuple[Any, ...], Enum]] = []

        def __getattr__(self, action: str) -> Callable[..., str]:
            def run(*args: Any) -> str:
                self.ran.append((action, args, self._state))
                return action
            return run

    return Stub()


class TableTests(SynchronousTestCase):
    def test_every_row_moves_then_runs_its_action(self) -> None:
        for table, _states, _events, _owner in TABLES:
            for state, event, after, action in table:
                with self.subTest(table=table.machine, state=state, event=event):
                    owner = stub_owner(table, state)
                    returned = owner._fire(event, "argument")
                    self.assertIs(owner._state, after)
                    if action is None:
                        self.assertEqual((returned, owner.ran), (None, []))
                    else:
                        # The action runs once the state has moved.
                        self.assertEqual(owner.ran, [(action, ("argument",), after)])
                        self.assertEqual(returned, action)

    def test_every_other_pair_fails_loudly(self) -> None:
        for table, states, events, _owner in TABLES:
            defined = {(state, event) for state, event, _after, _action in table}
            for state in states:
                for event in events:
                    if (state, event) in defined:
                        continue
                    with self.subTest(table=table.machine, state=state, event=event):
                        owner = stub_owner(table, state)
                        error = self.assertRaises(UndefinedTransitionError, owner._fire, event)
                        self.assertEqual(
                            str(error),
                            f"{table.machine}: no transition for event {event.name} in state "
                            f"{state.name}",
                        )
                        self.assertEqual((error.state, error.event), (state, event))
                        self.assertIs(owner._state, state)  # nothing moved, nothing ran
                        self.assertEqual(owner.ran, [])

    def test_every_action_is_a_method_of_its_owner(self) -> None:
        for table, _states, _events, owner in TABLES:
            for state, event, _after, action in table:
                if action is not None:
                    with self.subTest(table=table.machine, state=state, event=event):
                        self.assertTrue(callable(getattr(owner, action, None)), action)

    def test_every_state_and_event_is_in_some_row(self) -> None:
        for table, states, events, _owner in TABLES:
            rows = list(table)
            self.assertEqual({row[0] for row in rows} | {row[2] for row in rows}, set(states))
            self.assertEqual({row[1] for row in rows}, set(events))


class HalfClosing(StringTransport):
    """A transport that never delivers connectionLost by itself, and half-closes."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


C = ConnectionState
CE = ConnectionEvent

#: Each event of a connection, by the public method that fires it.
FIRE: dict[ConnectionEvent, Callable[[UpstreamProtocol], None]] = {
    CE.MADE: lambda protocol: protocol.makeConnection(HalfClosing()),
    CE.ACCEPTED: lambda protocol: protocol.accept(),
    CE.DRAIN: lambda protocol: protocol.drain(),
    CE.CLOSE: lambda protocol: protocol.close(),
    CE.ABORT: lambda protocol: protocol.abort("test", quiet=True),
    CE.OUT_OF_STEP: lambda protocol: protocol.out_of_step("test"),
    CE.HEARTBEAT_FAILED: lambda protocol: protocol.heartbeat_failed("test"),
    CE.LOST: lambda protocol: protocol.connectionLost(Failure(ConnectionDone("test"))),
}

#: How a new connection reaches each state.
PATH: dict[ConnectionState, list[ConnectionEvent]] = {
    C.NEW: [],
    C.OPEN: [CE.MADE],
    C.READY: [CE.MADE, CE.ACCEPTED],
    C.DRAINING: [CE.MADE, CE.ACCEPTED, CE.DRAIN],
    C.CLOSING: [CE.MADE, CE.ACCEPTED, CE.ABORT],
    C.CLOSED: [CE.MADE, CE.ACCEPTED, CE.ABORT, CE.LOST],
}


class ConnectionTransitionTests(SynchronousTestCase):
    def connection_in(self, state: ConnectionState, seen: Transitions) -> UpstreamProtocol:
        protocol = UpstreamProtocol(clock=Clock(), counters=Counters(), stale_timeout=15.0,
                                    on_frame=LineLog(), framing=line_framing())
        for event in PATH[state]:
            FIRE[event](protocol)
        seen.take("connection")
        return protocol

    def test_every_pair_through_the_public_methods(self) -> None:
        seen = Transitions(self)
        rows = {(state, event): after for state, event, after, _action in connection_states.TABLE}
        for state in ConnectionState:
            for event in ConnectionEvent:
                with self.subTest(state=state, event=event):
                    protocol = self.connection_in(state, seen)
                    after = rows.get((state, event))
                    if after is None:
                        error = self.assertRaises(UndefinedTransitionError, FIRE[event],
                                                  protocol)
                        self.assertIn(f"event {event.name} in state {state.name}", str(error))
                        self.assertEqual(seen.take("connection"), [])
                    else:
                        FIRE[event](protocol)
                        self.assertEqual(seen.take("connection"), [(state, event, after)])

    def test_what_each_close_does_to_the_transport(self) -> None:
        seen = Transitions(self)
        drained = self.connection_in(C.DRAINING, seen)
        transport = drained.transport
        assert isinstance(transport, HalfClosing)
        self.assertEqual((transport.write_closed, transport.disconnecting), (True, False))
        drained.heartbeat_failed("late")  # the drain waits for the server
        self.assertEqual((transport.disconnecting, drained.counters.heartbeat_failures),
                         (False, 0))
        drained.abort("shutdown_grace is over", quiet=True)
        self.assertTrue(transport.disconnected)  # StringTransport's word for aborted
        self.assertEqual(drained.close_reason, "shutdown_grace is over")
        closed = drained.when_closed()
        self.assertNoResult(closed)
        drained.out_of_step("too late")  # already closing: not counted again
        self.assertEqual(drained.counters.desyncs, 0)
        drained.connectionLost(Failure(ConnectionDone("bye")))
        self.successResultOf(closed)
        self.successResultOf(drained.when_closed())


CONFIG = Config().with_values(backoff_initial=1.0, backoff_factor=2.0, backoff_max=8.0)


class MemberScenarios:
    """Real members driven through every row of their table.  Each scenario
    ends stopped, with no delayed call left."""

    def start(self, *outcomes: str, default: str = CONNECT) -> tuple[UpstreamMember,
                                                                      FakeEndpoint, Clock]:
        endpoint = FakeEndpoint(*outcomes, default=default, half_close=True)
        member, _, clock, _ = make_member(CONFIG, endpoint)
        member.start()
        return member, endpoint, clock

    def finish(self, member: UpstreamMember, clock: Clock) -> None:
        assert isinstance(self, SynchronousTestCase)
        self.successResultOf(member.stop())
        self.assertEqual(clock.getDelayedCalls(), [])

    def scenario_connects_loses_reconnects(self) -> None:
        member, endpoint, clock = self.start()
        clock.advance(10.0)
        endpoint.last.peer_closes()
        clock.advance(0)  # up for a while: the retry is at once
        self.finish(member, clock)

    def scenario_refused(self) -> None:
        member, _, clock = self.start(default=REFUSE)
        self.finish(member, clock)

    def scenario_stopped_while_connecting(self) -> None:
        member, _, clock = self.start(default=HANG)
        self.finish(member, clock)

    def scenario_never_started(self) -> None:
        member, _, clock, _ = make_member(CONFIG)
        assert isinstance(self, SynchronousTestCase)
        self.successResultOf(member.drain())
        member.abort()
        self.finish(member, clock)
        self.finish(member, clock)

    def scenario_moves(self) -> None:
        member, endpoint, clock = self.start(CONNECT, HANG)
        assert isinstance(self, SynchronousTestCase)
        old = endpoint.last
        self.assertTrue(member.retire("test"))
        self.assertFalse(member.retire("again"))  # a move is under way
        clock.advance(0)
        self.assertFalse(member.retire("again"))
        endpoint.finish_hanging()
        self.assertTrue(old.transport.write_closed)  # type: ignore[attr-defined]
        old.peer_closes()  # the departures' news, not the member's
        self.finish(member, clock)

    def scenario_the_replacement_is_refused(self) -> None:
        member, endpoint, clock = self.start(CONNECT, REFUSE)
        assert isinstance(self, SynchronousTestCase)
        old = endpoint.last
        member.retire("test")
        clock.advance(0)
        self.assertIsNotNone(member.protocol)  # the old one still serves
        self.finish(member, clock)
        self.assertFalse(old.open)  # stop closes it: ClientService no longer counts it

    def scenario_old_lost_while_the_successor_connects(self) -> None:
        member, endpoint, clock = self.start(CONNECT, HANG)
        old = endpoint.last
        member.retire("test")
        clock.advance(0)
        old.peer_closes()
        endpoint.finish_hanging()
        self.finish(member, clock)

    def scenario_old_lost_before_the_successors_attempt(self) -> None:
        member, endpoint, clock = self.start()
        old = endpoint.last
        member.retire("test")
        old.peer_closes()
        clock.advance(0)
        self.finish(member, clock)

    def scenario_stopped_during_a_move(self) -> None:
        member, _, clock = self.start(CONNECT, HANG)
        member.retire("test")
        clock.advance(0)
        self.finish(member, clock)

    def scenario_drained(self) -> None:
        member, endpoint, clock = self.start()
        assert isinstance(self, SynchronousTestCase)
        first = member.drain()
        second = member.drain()
        self.assertNoResult(first)
        endpoint.last.peer_closes()
        self.successResultOf(first)
        self.successResultOf(second)
        clock.advance(60.0)
        self.assertEqual(endpoint.attempts, 1)  # no reconnect while draining
        self.finish(member, clock)

    def scenario_grace_over(self) -> None:
        member, endpoint, clock = self.start()
        assert isinstance(self, SynchronousTestCase)
        drained = member.drain()
        member.abort()
        self.assertTrue(endpoint.last.transport.aborted)
        self.successResultOf(drained)
        self.finish(member, clock)

    def scenario_ready_after_the_drain_began(self) -> None:
        member, endpoint, clock = self.start(default=HANG)
        assert isinstance(self, SynchronousTestCase)
        self.successResultOf(member.drain())
        endpoint.finish_hanging()
        self.assertFalse(endpoint.last.open)
        self.assertIsNone(member.protocol)
        self.finish(member, clock)

    def scenario_attempt_scheduled_before_the_drain(self) -> None:
        member, _, clock = self.start(REFUSE, default=HANG)
        member.drain()
        clock.advance(1.0)
        self.finish(member, clock)

    def scenario_drained_while_the_move_waits(self) -> None:
        member, endpoint, clock = self.start(CONNECT, HANG)
        old = endpoint.last
        member.retire("test")
        member.drain()
        old.peer_closes()
        clock.advance(0)
        self.finish(member, clock)

    def scenario_drained_while_the_move_connects(self) -> None:
        member, endpoint, clock = self.start(CONNECT, HANG)
        old = endpoint.last
        member.retire("test")
        clock.advance(0)
        member.drain()
        endpoint.finish_hanging()
        old.peer_closes()
        self.finish(member, clock)


class MemberTransitionTests(MemberScenarios, SynchronousTestCase):
    def run_scenario(self, scenario: Callable[[], None]) -> list[Transition]:
        seen = Transitions(self)
        scenario()
        return seen.take("member")

    def test_connects_loses_reconnects(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_connects_loses_reconnects), [
            (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, READY, CONNECTED),
            (CONNECTED, LOST, WAITING), (WAITING, RETRY, WAITING),
            (WAITING, ATTEMPT, CONNECTING), (CONNECTING, READY, CONNECTED),
            (CONNECTED, STOP, STOPPED), (STOPPED, LOST, STOPPED),
        ])

    def test_refused(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_refused), [
            (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, RETRY, WAITING),
            (WAITING, STOP, STOPPED),
        ])

    def test_stopped_while_connecting(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_stopped_while_connecting), [
            (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, STOP, STOPPED),
        ])

    def test_never_started(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_never_started), [
            (STOPPED, DRAIN, STOPPED), (STOPPED, GRACE_OVER, STOPPED),
            (STOPPED, STOP, STOPPED), (STOPPED, STOP, STOPPED),
        ])

    def test_moves(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_moves), [
            (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, READY, CONNECTED),
            (CONNECTED, RETIRE, REPLACING), (REPLACING, RETRY, REPLACING_WAITING),
            (REPLACING_WAITING, RETIRE, REPLACING_WAITING),
            (REPLACING_WAITING, ATTEMPT, REPLACING_CONNECTING),
            (REPLACING_CONNECTING, RETIRE, REPLACING_CONNECTING),
            (REPLACING_CONNECTING, READY, CONNECTED),
            (CONNECTED, STOP, STOPPED), (STOPPED, LOST, STOPPED),
        ])

    def test_the_replacement_is_refused(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_the_replacement_is_refused), [
            (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, READY, CONNECTED),
            (CONNECTED, RETIRE, REPLACING), (REPLACING, RETRY, REPLACING_WAITING),
            (REPLACING_WAITING, ATTEMPT, REPLACING_CONNECTING),
            (REPLACING_CONNECTING, RETRY, REPLACING_WAITING),
            (REPLACING_WAITING, STOP, STOPPED), (STOPPED, LOST, STOPPED),
        ])

    def test_old_lost_while_the_successor_connects(self) -> None:
        self.assertEqual(
            self.run_scenario(self.scenario_old_lost_while_the_successor_connects), [
                (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, READY, CONNECTED),
                (CONNECTED, RETIRE, REPLACING), (REPLACING, RETRY, REPLACING_WAITING),
                (REPLACING_WAITING, ATTEMPT, REPLACING_CONNECTING),
                (REPLACING_CONNECTING, LOST, CONNECTING), (CONNECTING, READY, CONNECTED),
                (CONNECTED, STOP, STOPPED), (STOPPED, LOST, STOPPED),
            ])

    def test_old_lost_before_the_successors_attempt(self) -> None:
        self.assertEqual(
            self.run_scenario(self.scenario_old_lost_before_the_successors_attempt), [
                (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, READY, CONNECTED),
                (CONNECTED, RETIRE, REPLACING), (REPLACING, RETRY, REPLACING_WAITING),
                (REPLACING_WAITING, LOST, WAITING),
                (WAITING, ATTEMPT, CONNECTING), (CONNECTING, READY, CONNECTED),
                (CONNECTED, STOP, STOPPED), (STOPPED, LOST, STOPPED),
            ])

    def test_stopped_during_a_move(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_stopped_during_a_move), [
            (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, READY, CONNECTED),
            (CONNECTED, RETIRE, REPLACING), (REPLACING, RETRY, REPLACING_WAITING),
            (REPLACING_WAITING, ATTEMPT, REPLACING_CONNECTING),
            (REPLACING_CONNECTING, STOP, STOPPED), (STOPPED, LOST, STOPPED),
        ])

    def test_drained(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_drained), [
            (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, READY, CONNECTED),
            (CONNECTED, DRAIN, DRAINING), (DRAINING, DRAIN, DRAINING),
            (DRAINING, LOST, DRAINING), (DRAINING, RETRY, DRAINING),
            (DRAINING, STOP, STOPPED),
        ])

    def test_grace_over(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_grace_over), [
            (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, READY, CONNECTED),
            (CONNECTED, DRAIN, DRAINING), (DRAINING, GRACE_OVER, DRAINING),
            (DRAINING, LOST, DRAINING), (DRAINING, RETRY, DRAINING),
            (DRAINING, STOP, STOPPED),
        ])

    def test_ready_after_the_drain_began(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_ready_after_the_drain_began), [
            (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, DRAIN, DRAINING),
            (DRAINING, READY, DRAINING), (DRAINING, RETRY, DRAINING),
            (DRAINING, STOP, STOPPED),
        ])

    def test_attempt_scheduled_before_the_drain(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_attempt_scheduled_before_the_drain), [
            (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, RETRY, WAITING),
            (WAITING, DRAIN, DRAINING), (DRAINING, ATTEMPT, DRAINING),
            (DRAINING, STOP, STOPPED),
        ])

    def test_drained_while_the_move_waits(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_drained_while_the_move_waits), [
            (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, READY, CONNECTED),
            (CONNECTED, RETIRE, REPLACING), (REPLACING, RETRY, REPLACING_WAITING),
            (REPLACING_WAITING, DRAIN, DRAINING), (DRAINING, LOST, DRAINING),
            (DRAINING, ATTEMPT, DRAINING), (DRAINING, STOP, STOPPED),
        ])

    def test_drained_while_the_move_connects(self) -> None:
        self.assertEqual(self.run_scenario(self.scenario_drained_while_the_move_connects), [
            (STOPPED, ATTEMPT, CONNECTING), (CONNECTING, READY, CONNECTED),
            (CONNECTED, RETIRE, REPLACING), (REPLACING, RETRY, REPLACING_WAITING),
            (REPLACING_WAITING, ATTEMPT, REPLACING_CONNECTING),
            (REPLACING_CONNECTING, DRAIN, DRAINING),
            (DRAINING, READY, DRAINING), (DRAINING, RETRY, DRAINING),
            (DRAINING, LOST, DRAINING), (DRAINING, STOP, STOPPED),
        ])

    def test_the_scenarios_take_every_row(self) -> None:
        taken: set[Transition] = set()
        for name in dir(self):
            if name.startswith("scenario_"):
                taken.update(self.run_scenario(getattr(self, name)))
        rows = {(state, event, after) for state, event, after, _ in member_states.TABLE}
        self.assertEqual(rows - taken, set())

    def test_an_undefined_transition_of_a_real_member_fails_loudly(self) -> None:
        member, _, clock = self.start()
        seen = Transitions(self)
        error = self.assertRaises(UndefinedTransitionError, member.abort)
        self.assertEqual(str(error),
                         "member: no transition for event GRACE_OVER in state CONNECTED")
        error = self.assertRaises(UndefinedTransitionError, member.attempt_started)
        self.assertEqual(str(error),
                         "member: no transition for event ATTEMPT in state CONNECTED")
        self.assertEqual(seen.take("member"), [])
        self.assertEqual(member.state, "connected")
        self.finish(member, clock)
