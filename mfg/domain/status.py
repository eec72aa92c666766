"""Status changes go through one transition table per record type."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import InvalidTransition


class TransitionTable:
    def __init__(self, name: str, allowed: Mapping[str, Mapping[str, str]]) -> None:
        """``allowed[from_status][to_status]`` is the name of the action that makes the move."""
        self.name = name
        self.allowed = allowed

    def check(self, current: str, target: str) -> None:
        if target not in self.allowed.get(current, {}):
            moves = ", ".join(sorted(self.allowed.get(current, {}))) or "none"
            raise InvalidTransition(
                f"{self.name} cannot go from '{current}' to '{target}' (allowed from '{current}': {moves})")


SOP_STATUS = TransitionTable("A master record version", {
    "draft": {"effective": "approve"},
    "effective": {"superseded": "supersede"},
    "superseded": {},
})
