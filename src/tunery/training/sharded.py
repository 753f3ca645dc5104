"""Sharded full fine-tuning (FSDP2: torch.distributed.fsdp.fully_shard) over a run's processes:
each process keeps 1/N of the weights, of their gradients and of the optimizer's state, so a
model whose full fine-tuning does not fit one device trains on several. The run is
distributed.py's (launch, rendezvous, rank 0's decisions, a lost rank, the batch dealt out to
the ranks, the same update as one process); what differs:

- each decoder layer, and the model around them (embeddings, final norm, head), is a unit whose
  weights are gathered for its forward and backward and freed after; gradients are
  reduce-scattered, summed (each row's loss is already divided by the whole batch's weight);
- gathering weights is a collective, so every process runs every forward: one with fewer packed
  rows in a step or a validation runs empty rows (zero loss) beside the others, and validation
  is shared out as training is;
- the model runs through its own forward (the outer unit's hooks gather the embeddings and the
  head), projecting to the vocabulary only where the loss is (logits_to_keep);
- what rank 0 does with the model between steps (write a checkpoint; the classification
  scorer's log-probabilities at an epoch's end) the other processes do with it: rank 0 sends them
  each such order, at an epoch's end and after training, then says there is no more;
- a checkpoint holds the whole model as an ordinary Hugging Face folder (gathered on rank 0 in
  CPU memory: a checkpoint is a model the API serves, and the last one is the published model)
  and the optimizer's state as one shard per process (checkpoints.save_optimizer_shards): it
  resumes on any number of processes, one included, and a checkpoint of one process resumes here.

Only rank 0 reads the weights (in CPU memory, with what _load adds: the adapter merged for a job
continued from a LoRA model); the other ranks build the model's skeleton on the meta device (no
memory), shard it, allocate their parts and receive them from rank 0 (set_model_state_dict's
broadcast_from_rank0), buffers (rotary frequencies) broadcast whole: a machine needs memory for
one copy of the model, the devices room for a part each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tunery.training.batching import Batch, pack
from tunery.training.checkpoints import TRAINER_SHARDS, load_optimizer_shards, save_optimizer_shards
from tunery.training.distributed import DataParallel
from tunery.training.sft import SFTRecipe, StepMetrics

NO_MORE_ORDERS = None


class ShardedSFTRecipe(DataParallel, SFTRecipe):
    _gathered: dict[str, torch.Tensor] | None = None  # rank 0: the whole model, for the checkpoint being written

    # setup -----------------------------------------------------------------------------------
    def _load(self, source, dtype, attention):
        if self.ranks.rank == 0:
            return super()._load(source, dtype, attention)
        from transformers import AutoConfig, AutoModelForCausalLM

        with torch.device("meta"):  # shapes only: the weights come from rank 0 once sharded (_place)
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=dtype,
                                                    attn_implementation=attention)

    def _place(self, model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import FSDPModule, fully_shard

        whole = model.state_dict() if self.ranks.rank == 0 else {}
        mesh = init_device_mesh(self.device.type, (self.ranks.world,))
        for layer in _decoder_layers(model):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.set_gradient_divide_factor(1.0)  # summed, not averaged over the ranks
                module.set_force_sum_reduction_for_comms(True)  # a plain sum (gloo has no pre-multiplied one)
        if self.ranks.rank != 0:
            model.to_empty(device=self.device)
        set_model_state_dict(model, whole, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        for buffer in model.buffers():  # not in the state dictionary (non-persistent): rank 0's, computed
            dist.broadcast(buffer, 0)
        return model

    def _same_weights(self) -> None:
        pass  # every rank read the same files: its part of the weights is already the run's

    def _load_optimizer(self, state: dict[str, Any], folder: Path) -> None:
        if "optimizer" not in state:
            return load_optimizer_shards(self.model, self.optimizer, folder / TRAINER_SHARDS)
        # A checkpoint of unsharded training: the whole state, by parameter index in the model's order.
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = [name for name, parameter in self.model.named_parameters() if parameter.requires_grad]
        saved = state["optimizer"]
        whole = {"state": {names[index]: value for index, value in saved["state"].items()},
                 "param_groups": [{**group, "params": [names[i] for i in group["params"]]} for group in saved["param_groups"]]}
        set_optimizer_state_dict(self.model, self.optimizer, whole, options=StateDictOptions(full_state_dict=True))

    # train -----------------------------------------------------------------------------------
    def train(self, on_step, on_epoch_end=None, keep_going=None):
        if self.ranks.rank == 0:
            def at_epoch_end(metrics: StepMetrics) -> None:
                if on_epoch_end is not None:
                    on_epoch_end(metrics)
                self._order(NO_MORE_ORDERS)

            return super().train(on_step, at_epoch_end, keep_going)
        result = super().train(on_step, lambda metrics: self._follow_orders(), keep_going)
        with self._collectives():
            self._follow_orders()  # rank 0's after training (a checkpoint to go on from), until it cleans up
        return result

    def _train_batch(self, examples, step: int, epoch: int) -> tuple[StepMetrics, int]:
        mine = self._share(examples)
        batch = pack(mine, self.pad_id, self.row_tokens, share_prefix=True).to(self.device) if mine else None
        rows = len(batch.rows()) if batch else 0
        total, most = self._sum([float(batch.loss_weight()) if batch else 0.0])[0], self._most(rows)
        sums = self._backward(batch, total) if batch else (0.0, 0.0, 0.0)
        self._empty_rows(most - rows, backward=True)
        self._optimizer_step()
        loss_sum, correct, counted, tokens = self._sum([*sums, batch.tokens if batch else 0])
        return StepMetrics(step, self.total_steps, epoch, loss_sum / total, correct / max(1.0, counted)), int(tokens)

    def _reduce_gradients(self) -> None:
        pass  # reduce-scattered during the backward

    def _logits_at(self, batch: Batch, positions: torch.Tensor) -> torch.Tensor:
        mask = batch.attention_mask(self.model.dtype)
        logits = []
        for row in range(batch.input_ids.shape[0]):
            out = self.model(input_ids=batch.input_ids[row:row + 1], position_ids=batch.position_ids[row:row + 1],
                             attention_mask=None if mask is None else mask[row:row + 1],
                             logits_to_keep=positions[row].nonzero().squeeze(-1), use_cache=False)
            logits.append(out.logits[0].float())
        return torch.cat(logits)

    def _empty_rows(self, count: int, *, backward: bool) -> None:
        """Forwards (and backwards) of a 2-token row that changes nothing, beside the other
        processes' rows: each gathers the weights with them."""
        ids = torch.full((1, 2), self.pad_id, device=self.device)
        for _ in range(count):
            logits = self.model(input_ids=ids, logits_to_keep=1, use_cache=False).logits
            if backward:
                (logits.float().sum() * 0.0).backward()

    def _most(self, value: int) -> int:
        """The largest of the ranks' values."""
        most = torch.tensor([value], device=self._collective_device())
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        return int(most.item())

    # validate --------------------------------------------------------------------------------
    def _validate(self, metrics, examples, *, whole: bool) -> None:
        SFTRecipe._validate(self, metrics, examples, whole=whole)  # every rank: each takes its share

    @torch.no_grad()
    def evaluate(self, examples) -> tuple[float, float]:
        was_training = self.model.training
        self.model.eval()
        loss_sum = weight_sum = correct = counted = 0.0
        for start in range(0, len(examples), self.config.batch_size):
            mine = self._share(examples[start:start + self.config.batch_size])
            batch = pack(mine, self.pad_id).to(self.device) if mine else None
            rows = batch.rows() if batch else []
            most = self._most(len(rows))  # before any forward: each one is a collective
            for row in rows:
                row_loss, row_correct, row_counted = self._loss_sum(row)
                loss_sum += row_loss.item()
                correct += row_correct
                counted += row_counted
            weight_sum += float(batch.loss_weight()) if batch else 0.0
            self._empty_rows(most - len(rows), backward=False)
        self.model.train(was_training)
        loss_sum, weight_sum, correct, counted = self._sum([loss_sum, weight_sum, correct, counted])
        return loss_sum / max(weight_sum, 1e-9), correct / max(1, counted)

    # what rank 0 does with the model between steps, every rank does --------------------------
    def next_token_logprobs(self, prompts: list[list[int]]) -> torch.Tensor:
        if self.ranks.rank == 0:
            self._order(("_run_next_token_logprobs", (prompts,)))
        return self._run_next_token_logprobs(prompts)

    def _run_next_token_logprobs(self, prompts: list[list[int]]) -> torch.Tensor:
        return SFTRecipe.next_token_logprobs(self, prompts)

    def save_checkpoint(self, folder: Path, metrics: StepMetrics, *, with_state: bool = True) -> None:
        """Rank 0 (the worker's): the whole model gathered and written, the optimizer's state
        written by every rank, its part each."""
        self._order(("_gather_checkpoint", (str(folder), with_state)))
        self._gathered = self._gather_checkpoint(str(folder), with_state)
        try:
            super().save_checkpoint(folder, metrics, with_state=with_state)
        finally:
            self._gathered = None

    def _gather_checkpoint(self, folder: str, with_state: bool) -> dict[str, torch.Tensor]:
        """The whole model's weights (on rank 0; empty on the others), and, with_state, every
        rank's part of the optimizer's state written into the checkpoint."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        weights = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if with_state:
            save_optimizer_shards(self.model, self.optimizer, Path(folder) / TRAINER_SHARDS)
        return weights

    def _save_weights(self, folder: Path) -> None:
        # A weight two modules share (tied embeddings) is saved once, under its first name, as
        # save_pretrained does: the gathered dictionary holds a copy under each name.
        names: dict[int, list[str]] = {}
        for name, parameter in self.model.named_parameters(remove_duplicate=False):
            names.setdefault(id(parameter), []).append(name)
        tied = {name for shared in names.values() for name in shared[1:]}
        self.model.save_pretrained(folder, state_dict={k: v for k, v in self._gathered.items() if k not in tied})

    def _optimizer_state(self) -> dict[str, Any]:
        return {}  # in its shards

    def _order(self, order) -> None:
        dist.broadcast_object_list([order], src=0)

    def _follow_orders(self) -> None:
        """Do what rank 0 does with the model, order after order, until it sends NO_MORE_ORDERS."""
        while True:
            box = [NO_MORE_ORDERS]
            dist.broadcast_object_list(box, src=0)
            if box[0] is NO_MORE_ORDERS:
                return
            name, args = box[0]
            getattr(self, name)(*args)

    # cleanup ---------------------------------------------------------------------------------
    def cleanup(self) -> None:
        if self.ranks.rank == 0 and self._together and dist.is_initialized():
            self._order(NO_MORE_ORDERS)  # the other ranks, done following, leave
        super().cleanup()


def _decoder_layers(model) -> list[torch.nn.Module]:
    """The model's transformer blocks: its decoder's layers (or the longest list of modules in it)."""
    layers = getattr(model.get_decoder(), "layers", None) if hasattr(model, "get_decoder") else None
    if isinstance(layers, torch.nn.ModuleList):
        return list(layers)
    lists = [module for module in model.modules() if isinstance(module, torch.nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no list of layers to shard")
    return list(max(lists, key=len))

