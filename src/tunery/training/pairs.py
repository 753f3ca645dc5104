"""Packing DPO's preference pairs into rows: each pair's prompt once, then its chosen and its
rejected output, several pairs to a row, no padding between them.

A pair's two sequences begin alike (the input, the assistant turn's opening): that beginning is
held once, and each output's tokens see it and themselves only (an attention mask per row), with
positions going on from it, so each output's log-probabilities are those of its sequence alone.
The beginning held stops one token before the first trained token of either output, so that
each output's first trained token is predicted from a token of its own segment. Pairs are placed
first-fit from the longest down into rows of at most max_tokens (a longer pair gets a row of its
own) and never split: a row's loss depends on its pairs only, so a step back-propagates row by
row, holding one row's activations."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunery.data.render import IGNORE, Rendered

PADDING = -1


@dataclass
class PairRow:
    input_ids: torch.Tensor  # [1, width]
    position_ids: torch.Tensor  # [1, width]
    labels: torch.Tensor  # [1, width], IGNORE where no loss
    owner: torch.Tensor  # [width]: 2k for the chosen output of the row's k-th pair, 2k + 1 for its rejected, -1 else
    segments: torch.Tensor  # [width]: a segment id per token (a prompt, an output), PADDING for padding
    parents: torch.Tensor  # [width]: the segment each token sees besides its own (an output: its prompt)
    pairs: list[int]  # the indices of the row's pairs, in the order of `owner`

    def to(self, device: torch.device) -> PairRow:
        return PairRow(self.input_ids.to(device), self.position_ids.to(device), self.labels.to(device),
                       self.owner.to(device), self.segments.to(device), self.parents.to(device), self.pairs)

    def attention_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """The additive [1, 1, width, width] mask: causal, each token seeing its own segment and
        its parent's (padding only itself)."""
        query_segment, query_parent = self.segments[:, None], self.parents[:, None]
        key = self.segments[None, :]
        width = self.segments.shape[0]
        causal = torch.ones(width, width, dtype=torch.bool, device=self.segments.device).tril()
        seen = causal & ((key == query_segment) | (key == query_parent)) & (query_segment != PADDING)
        seen |= torch.eye(width, dtype=torch.bool, device=self.segments.device)
        mask = torch.zeros(seen.shape, dtype=dtype, device=self.segments.device)
        return mask.masked_fill_(~seen, torch.finfo(dtype).min)[None, None]


def shared_beginning(chosen: Rendered, rejected: Rendered) -> int:
    """How many first tokens the two sequences share and neither trains, ending one token before
    the first trained token of either."""
    common = 0
    for a, b in zip(chosen.input_ids, rejected.input_ids):
        if a != b:
            break
        common += 1
    for rendered in (chosen, rejected):
        trained = next((i for i, label in enumerate(rendered.labels) if label != IGNORE), len(rendered.labels))
        common = min(common, trained - 1)
    return max(0, common)


def pack_pairs(pairs: list[tuple[Rendered, Rendered]], pad_id: int, max_tokens: int) -> list[PairRow]:
    """The (chosen, rejected) pairs in rows of at most max_tokens (or the longest pair)."""
    shared = [shared_beginning(c, r) for c, r in pairs]
    sizes = [len(c.input_ids) + len(r.input_ids) - s for (c, r), s in zip(pairs, shared)]
    capacity = max(max_tokens, max(sizes))
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(pairs)), key=lambda i: sizes[i], reverse=True):
        row = next((r for r, free in enumerate(room) if free >= sizes[index]), None)
        if row is None:
            rows.append([])
            room.append(capacity)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= sizes[index]
    return [_row([pairs[i] for i in members], [shared[i] for i in members], members, pad_id,
                 width=capacity - free) for members, free in zip(rows, room)]


def _row(pairs: list[tuple[Rendered, Rendered]], shared: list[int], members: list[int], pad_id: int,
         width: int) -> PairRow:
    ids = torch.full((width,), pad_id, dtype=torch.long)
    positions = torch.zeros(width, dtype=torch.long)
    labels = torch.full((width,), IGNORE, dtype=torch.long)
    owner = torch.full((width,), -1, dtype=torch.long)
    segments = torch.full((width,), PADDING, dtype=torch.long)
    parents = torch.full((width,), PADDING, dtype=torch.long)
    start = segment = 0
    for k, ((chosen, rejected), begin) in enumerate(zip(pairs, shared)):
        prompt = segment
        if begin:
            ids[start:start + begin] = torch.tensor(chosen.input_ids[:begin])
            positions[start:start + begin] = torch.arange(begin)
            segments[start:start + begin] = parents[start:start + begin] = prompt
            start += begin
        for side, rendered in enumerate((chosen, rejected)):
            segment += 1
            n = len(rendered.input_ids) - begin
            ids[start:start + n] = torch.tensor(rendered.input_ids[begin:])
            positions[start:start + n] = torch.arange(begin, begin + n)
            labels[start:start + n] = torch.tensor(rendered.labels[begin:])
            labels[start] = IGNORE  # predicted by nothing of its own segment (untrained: see shared_beginning)
            owner[start:start + n] = 2 * k + side
            segments[start:start + n] = segment
            parents[start:start + n] = prompt if begin else segment
            start += n
        segment += 1
    positions[start:] = torch.arange(width - start)
    return PairRow(ids[None], positions[None], labels[None], owner, segments, parents, members)
