"""Packing a batch of rendered examples into as few rows as possible, with no padding between
examples and attention kept inside each example.

Each example's position ids restart at 0; given position ids and no attention mask,
transformers builds a block-diagonal causal mask, so tokens never see another example. A row
holds at most MAX_PACKED_TOKENS (or the longest example); rows are filled first-fit from the
longest example down, and only the last part of each row can be padding. The recipe runs one
row at a time (accumulating gradients), so a row's size bounds the activations in memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunery.data.render import IGNORE, Rendered

MAX_PACKED_TOKENS = 256  # per row: ~2.5 MB of activations a token on SmolLM2-135M in float32


@dataclass
class Batch:
    input_ids: torch.Tensor  # [rows, width]
    position_ids: torch.Tensor  # [rows, width], restarting at 0 for each example
    labels: torch.Tensor  # [rows, width], IGNORE where no loss
    weights: torch.Tensor  # [rows, width], the loss weight of each label
    tokens: int  # real tokens (no padding)
    spans: list[tuple[int, int, int]]  # (row, start, length) of each example, in the order given

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.position_ids.to(device), self.labels.to(device),
                     self.weights.to(device), self.tokens, self.spans)

    def rows(self) -> list[Batch]:
        """One batch per row (spans and token counts are the whole batch's)."""
        return [Batch(self.input_ids[r:r + 1], self.position_ids[r:r + 1], self.labels[r:r + 1],
                      self.weights[r:r + 1], self.tokens, self.spans) for r in range(self.input_ids.shape[0])]

    def loss_weight(self) -> torch.Tensor:
        """The summed weight of every label that carries loss (each predicted from the token before)."""
        return self.weights[:, 1:][self.labels[:, 1:] != IGNORE].sum()


def pack(examples: list[Rendered], pad_id: int, max_tokens: int = MAX_PACKED_TOKENS) -> Batch:
    capacity = max(max_tokens, max(len(e.input_ids) for e in examples))
    rows: list[list[int]] = []  # indices into examples
    room: list[int] = []
    for index in sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids), reverse=True):
        size = len(examples[index].input_ids)
        row = next((i for i, free in enumerate(room) if free >= size), None)
        if row is None:
            rows.append([])
            room.append(capacity)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= size
    width = max(capacity - free for free in room)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    weights = torch.zeros((len(rows), width), dtype=torch.float32)
    spans: list[tuple[int, int, int]] = [(0, 0, 0)] * len(examples)
    for r, row in enumerate(rows):
        start = 0
        for index in row:
            example = examples[index]
            n = len(example.input_ids)
            spans[index] = (r, start, n)
            ids[r, start:start + n] = torch.tensor(example.input_ids)
            positions[r, start:start + n] = torch.arange(n)
            labels[r, start:start + n] = torch.tensor(example.labels)
            weights[r, start:start + n] = torch.tensor(example.weights) if example.weights is not None else 1.0
            labels[r, start] = IGNORE  # the first token has no earlier token of its own example to predict it
            start += n
        positions[r, start:] = torch.arange(width - start)  # padding: a block of its own, never trained
    return Batch(ids, positions, labels, weights, tokens=sum(len(e.input_ids) for e in examples), spans=spans)
