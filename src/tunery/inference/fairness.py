"""How the engine is shared between owners (the organizations asking): the order in which waiting
sequences are admitted, and which running sequence gives its slot back when a decoder is full and
another owner waits. Policy only, over anything with an `owner`, a `prompt` and what it
`generated`; the engine keeps the mechanism (slots, caches, resuming a sequence)."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator
from typing import Protocol, TypeVar


class Owned(Protocol):
    owner: str
    prompt: list[int]
    generated: list[int]


S = TypeVar("S", bound=Owned)


def admission_order(waiting: list[S], held: Counter[str]) -> Iterator[S]:
    """Round-robin by owner: each next sequence is the earliest waiting one of the owner holding
    the fewest slots (`held`: running, plus the turns this order has given it); ties go to the owner
    that waited first. One owner's burst goes in one sequence at a time between everyone else's."""
    held = Counter(held)
    queues: dict[str, deque[S]] = {}
    for seq in waiting:
        queues.setdefault(seq.owner, deque()).append(seq)
    while queues:
        owner = min(queues, key=lambda o: held[o])
        seq = queues[owner].popleft()
        if not queues[owner]:
            del queues[owner]
        held[owner] += 1
        yield seq


def victim(seq: S, running: list[S]) -> S | None:
    """The sequence of `running` (one decoder's) that gives its slot back for seq: one of the owner
    holding the most, when that is more than one beyond seq's owner (no back and forth between
    owners a slot apart), the one with the least to compute again when it resumes. None: seq waits."""
    held = Counter(s.owner for s in running)
    owner, most = max(held.items(), key=lambda item: item[1], default=(None, 0))
    if owner is None or owner == seq.owner or most <= held[seq.owner] + 1:
        return None
    return min((s for s in running if s.owner == owner), key=lambda s: len(s.prompt) + len(s.generated))
