"""Explicit state machines: one state attribute, one table of transitions.

A pool member (:mod:`bridge.upstream.member_states`) and each of its
connections (:mod:`bridge.upstream.connection_states`) keep their state in one
attribute, ``_state``, changed in one place, :meth:`StateMachine._fire`, by
looking the (state, event) pair up in a literal table: the new state and the
name of the owner's method that does the work.  A pair the table does not
list is a bug, never a condition to handle: it raises
:class:`UndefinedTransitionError`, naming the machine, the state and the event.

Why a plain table rather than automat's ``TypeMachineBuilder``, on which
ClientService is built (``twisted/application/_client_service.py``)?

* The hot paths ask the state (may this connection take a request? may its
  replies still be read?).  Here that is one attribute read; automat keeps the
  state inside the machine, where only an input (a call through its
  dispatcher) can reach it, and a question per state would be one more input
  declared for every state.
* Every rule of a machine reads as one row of one table in one screen, so the
  drain rules, for instance, are the rows of the ``DRAINING`` state; tests walk
  the rows (``tests/test_state_tables.py``).
* Nothing to learn beyond a dict: the actions are ordinary methods.

The state changes *before* the action runs, so an action that causes another
event (closing a connection whose ``connectionLost`` comes at once, telling
ClientService of a loss, which asks for its retry delay at once) sees the
state it moved to.  Each transition is logged at debug level, with the
names in the fields ``machine``, ``before``, ``upon`` (the event) and
``after``.
"""

from __future__ import annotations

from enum import Enum
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Iterator, Mapping, TypeVar

from twisted.logger import Logger

S = TypeVar("S", bound=Enum)
E = TypeVar("E", bound=Enum)


class UndefinedTransitionError(Exception):
    """An event arrived in a state whose table has no row for it."""

    def __init__(self, machine: str, state: Enum, event: Enum) -> None:
        super().__init__(
            f"{machine}: no transition for event {event.name} in state {state.name}"
        )
        self.machine = machine
        self.state = state
        self.event = event


class Table(Generic[S, E]):
    """(state, event) -> (next state, the owner's method to run or None)."""

    def __init__(self, machine: str, rows: Mapping[tuple[S, E], tuple[S, str | None]]) -> None:
        self.machine = machine
        self._rows = MappingProxyType(dict(rows))

    def step(self, state: S, event: E) -> tuple[S, str | None]:
        row = self._rows.get((state, event))
        if row is None:
            raise UndefinedTransitionError(self.machine, state, event)
        return row

    def __iter__(self) -> Iterator[tuple[S, E, S, str | None]]:
        """Every row as (state, event, next state, action)."""
        for (state, event), (after, action) in self._rows.items():
            yield state, event, after, action


class StateMachine:
    """Mixin: ``_state`` is the one state, moved only by :meth:`_fire`."""

    _table: ClassVar[Table[Any, Any]]
    _state: Any
    name: str
    log: ClassVar[Logger]

    def _fire(self, event: Enum, *args: Any) -> Any:
        """Take the row of (state, event): move, then run its action with
        ``args``; return what the action returns (None without one)."""
        before = self._state
        after, action = self._table.step(before, event)
        self._state = after
        self.log.debug(
            "upstream {name}: {machine} {before} --{upon}--> {after}",
            name=self.name, machine=self._table.machine, before=before.name,
            upon=event.name, after=after.name,
        )
        if action is None:
            return None
        return getattr(self, action)(*args)
