"""Packing a batch of rendered examples into as few rows as possible, with no padding between
examples and attention kept inside each example.

Each example's position ids restart at 0; given position ids and no attention mask,
transformers builds a block-diagonal causal mask, so tokens never see another example. A row
holds at most MAX_PACKED_TOKENS (or the longest example); rows are filled first-fit from the
longest example down, and only the last part of each row can be padding. The recipe runs one
row at a time (accumulating gradients), so a row's size bounds the activations in memory.

A training batch whose examples all begin with the same untrained tokens (a system prompt, the
chat template's opening) can share them: each row holds that beginning once, then each
example's remainder, positions going on from the beginning, and an attention mask lets every
remainder see the beginning and itself only. The losses and gradients are those of the examples
apart (the beginning's activations are the same for each, its gradients their sum), for fewer
tokens computed: 30 of the 77 tokens of an orders example."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunery.data.render import IGNORE, Rendered

MAX_PACKED_TOKENS = 512  # per row at most (a step's many short examples in one matrix product: faster on a CPU)
ROW_ACTIVATION_BYTES = 5 << 28  # ~1.25 GiB: a row's activations kept for the backward pass, at most
ACTIVATION_BYTES = 145  # per token, layer and hidden unit in float32 (SmolLM2-135M: ~2.5 MB a token)
MIN_SHARED_TOKENS = 8  # a shorter common beginning is computed in each example (not worth a mask)
PREFIX, PADDING = 0, -1  # segment ids of a row's shared beginning and of its padding; examples count from 1


@dataclass
class Batch:
    input_ids: torch.Tensor  # [rows, width]
    position_ids: torch.Tensor  # [rows, width], restarting at 0 for each example
    labels: torch.Tensor  # [rows, width], IGNORE where no loss
    weights: torch.Tensor  # [rows, width], the loss weight of each label
    tokens: int  # real tokens (no padding), the shared beginning counted in each example
    spans: list[tuple[int, int, int]]  # (row, start, length) of each example (its remainder when shared)
    segments: torch.Tensor | None = None  # [rows, width] when a beginning is shared: PREFIX, example 1.., PADDING

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.position_ids.to(device), self.labels.to(device),
                     self.weights.to(device), self.tokens, self.spans,
                     None if self.segments is None else self.segments.to(device))

    def rows(self) -> list[Batch]:
        """One batch per row (spans and token counts are the whole batch's)."""
        return [Batch(self.input_ids[r:r + 1], self.position_ids[r:r + 1], self.labels[r:r + 1],
                      self.weights[r:r + 1], self.tokens, self.spans,
                      None if self.segments is None else self.segments[r:r + 1])
                for r in range(self.input_ids.shape[0])]

    def attention_mask(self, dtype: torch.dtype) -> torch.Tensor | None:
        """The additive [rows, 1, width, width] mask of a batch sharing a beginning (None when it
        shares none: position ids say it all): causal, each example seeing the beginning and
        itself, padding only itself."""
        if self.segments is None:
            return None
        query, key = self.segments[:, :, None], self.segments[:, None, :]
        width = self.segments.shape[1]
        causal = torch.ones(width, width, dtype=torch.bool, device=self.segments.device).tril()
        seen = causal & ((key == query) | ((key == PREFIX) & (query != PADDING)))
        seen |= torch.eye(width, dtype=torch.bool, device=self.segments.device)
        mask = torch.zeros(seen.shape, dtype=dtype, device=self.segments.device)
        return mask.masked_fill_(~seen, torch.finfo(dtype).min)[:, None]

    def loss_weight(self) -> torch.Tensor:
        """The summed weight of every label that carries loss (each predicted from the token before)."""
        return self.weights[:, 1:][self.labels[:, 1:] != IGNORE].sum()


def row_tokens(layers: int, hidden: int) -> int:
    """Tokens per row for a model of this depth and width: as many as ROW_ACTIVATION_BYTES allow,
    between 64 and MAX_PACKED_TOKENS (SmolLM2-135M: 512; a 7B model: 92)."""
    return max(64, min(MAX_PACKED_TOKENS, ROW_ACTIVATION_BYTES // (layers * hidden * ACTIVATION_BYTES)))


def pack(examples: list[Rendered], pad_id: int, max_tokens: int = MAX_PACKED_TOKENS, *,
         share_prefix: bool = False) -> Batch:
    """The examples in rows; with share_prefix (training steps), their common untrained beginning
    once per row."""
    shared = _shared_prefix(examples) if share_prefix else 0
    capacity = max(max_tokens, max(len(e.input_ids) for e in examples))
    rows: list[list[int]] = []  # indices into examples
    room: list[int] = []
    for index in sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids), reverse=True):
        size = len(examples[index].input_ids) - shared
        row = next((i for i, free in enumerate(room) if free >= size), None)
        if row is None:
            rows.append([])
            room.append(capacity - shared)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= size
    width = max(capacity - free for free in room)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    weights = torch.zeros((len(rows), width), dtype=torch.float32)
    segments = torch.full((len(rows), width), PADDING, dtype=torch.long)
    spans: list[tuple[int, int, int]] = [(0, 0, 0)] * len(examples)
    for r, row in enumerate(rows):
        ids[r, :shared] = torch.tensor(examples[row[0]].input_ids[:shared], dtype=torch.long)
        positions[r, :shared] = torch.arange(shared)
        segments[r, :shared] = PREFIX
        start = shared
        for number, index in enumerate(row, start=1):
            example = examples[index]
            n = len(example.input_ids) - shared
            spans[index] = (r, start, n)
            ids[r, start:start + n] = torch.tensor(example.input_ids[shared:])
            positions[r, start:start + n] = torch.arange(shared, shared + n)
            labels[r, start:start + n] = torch.tensor(example.labels[shared:])
            weights[r, start:start + n] = torch.tensor(example.weights[shared:]) if example.weights is not None else 1.0
            # The first token has no earlier token of its own example to predict it (when shared,
            # its label is untrained already: _shared_prefix stops before the first trained one).
            labels[r, start] = IGNORE
            segments[r, start:start + n] = number
            start += n
        positions[r, start:] = torch.arange(width - start)  # padding: a block of its own, never trained
    return Batch(ids, positions, labels, weights, tokens=sum(len(e.input_ids) for e in examples), spans=spans,
                 segments=segments if shared else None)


def _shared_prefix(examples: list[Rendered]) -> int:
    """How many first tokens every example has in common and none trains: at least
    MIN_SHARED_TOKENS, else 0. The token after them is untrained too (it is predicted from the
    shared part, which cannot predict a different token for each example)."""
    if len(examples) < 2:
        return 0
    common = min(len(e.input_ids) for e in examples) - 1  # each example keeps a remainder
    first = examples[0].input_ids
    for example in examples[1:]:
        common = next((i for i, (a, b) in enumerate(zip(first[:common], example.input_ids)) if a != b), common)
    for example in examples:
        trained = next((i for i, label in enumerate(example.labels[1:common + 1], start=1) if label != IGNORE), None)
        if trained is not None:
            common = min(common, trained - 1)
    return common if common >= MIN_SHARED_TOKENS else 0
