"""One job's training over several processes, one per device (TUNERY_WORKER_DEVICES), data
parallel through torch.distributed: gloo on CPUs, NCCL on GPUs.

The worker's own process is rank 0. It builds the recipe as for one process (build()), and when
the recipe sets up, the other ranks start (torch.multiprocessing, spawn), meet it at a TCP store
on a free local port and join one process group. Every rank loads the model and renders every
example (same seed, same shuffled order); each optimizer step's batch is the job's batch, its
examples dealt out to the ranks (rank r takes every r-th one), each rank accumulates its part's
gradients a packed row at a time scaled by the whole batch's loss weight (or pair count), the
gradients are summed across ranks (all-reduce, in buckets) and every rank takes the same step.
The update, the losses and the checkpoints are those of one process training the whole batch,
whatever the number of ranks: a checkpoint resumes on any number of them.

Rank 0 alone deals with the job: its on_step and keep_going decide, and each decision is
broadcast, so every rank stops at the same step (pause, cancel, a lost lease, the worker
stopping); it alone validates, writes checkpoints and publishes. A rank that dies breaks the
group: the collective rank 0 waits in fails at once (gloo: the peer's connection closes), rank 0
raises RankLost, and the worker lets the job go as after a crash of its own.

Several machines (later): the other ranks meet rank 0 at Ranks.address, the one thing that changes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tunery import failpoints
from tunery.training.batching import pack
from tunery.training.dpo import DPORecipe, Pair, Preferences
from tunery.training.methods import METHODS, Recipe, RecipeInputs
from tunery.training.sft import SFTRecipe, StepMetrics

RENDEZVOUS_SECONDS = 300  # the other ranks start (imports), and meet rank 0 within this
COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # the longest a rank waits in a collective (rank 0 writing a checkpoint)
FINISH_SECONDS = 60  # ranks that trained to the same end exit within this, or are terminated
BUCKET_BYTES = 32 << 20  # gradients summed across ranks this many bytes at a time
LOCAL_HOST = "127.0.0.1"
RANK_STEP = "rank_step"  # failpoint: a rank other than 0 SIGKILLs itself at that step (tests)


class RankLost(RuntimeError):
    """A training process of the run stopped (killed, out of memory): the run cannot go on, and
    the job is to continue from its last checkpoint."""


@dataclass(frozen=True)
class Ranks:
    """A run's processes: rank r computes on devices[r]; they meet at address (rank 0's TCP store)."""
    devices: tuple[str, ...]
    rank: int = 0
    address: str = ""  # host:port, known once rank 0 starts the run

    @property
    def world(self) -> int:
        return len(self.devices)

    @property
    def backend(self) -> str:
        return "nccl" if self.devices[0].startswith("cuda") else "gloo"


def build(method: str, inputs: RecipeInputs, devices: list[str]) -> Recipe:
    """Rank 0's recipe, in this process: the other ranks start when it sets up, and end when it
    cleans up."""
    ranks = Ranks(tuple(devices))
    return _recipe(method, replace(inputs, device=devices[0]), ranks, launch=(method, inputs))


def _recipe(method: str, inputs: RecipeInputs, ranks: Ranks, launch: tuple[str, RecipeInputs] | None = None) -> Recipe:
    single = METHODS[method].build(inputs)
    parallel = PARALLEL.get(type(single))
    if parallel is None:
        raise ValueError(f"{method} fine-tuning does not train on several processes")
    return parallel(single.config, ranks, launch)


class DataParallel:
    """What a recipe does differently as one rank of several (mixed in before the recipe's class):
    setup starts the run (rank 0) and gives every rank rank 0's trainable weights, train follows
    rank 0's decisions, the gradients are summed across ranks before each optimizer step, and only
    rank 0 validates."""

    def __init__(self, config, ranks: Ranks, launch: tuple[str, RecipeInputs] | None = None):
        super().__init__(config)
        self.ranks = ranks
        self._launch = launch  # rank 0: the method and inputs the other ranks build their recipes from
        self._processes: list = []
        self._threads: int | None = None  # rank 0 on a CPU: the worker's torch threads, given back at cleanup
        self._together = False  # every rank left train() at the same step

    # setup -----------------------------------------------------------------------------------
    def setup(self, examples: list[dict[str, Any]], valid_examples: list[dict[str, Any]] | None = None) -> None:
        if self.ranks.rank == 0:
            self._start(examples, valid_examples)
        with self._collectives():
            super().setup(examples, valid_examples)
            for parameter in self.trainable:  # the same seed made them equal; rank 0's are the run's
                dist.broadcast(parameter.data, 0)

    def _start(self, examples: list[dict[str, Any]], valid_examples: list[dict[str, Any]] | None) -> None:
        """Start ranks 1.. (spawned), and join them in one process group once each is there."""
        method, inputs = self._launch
        port = _free_port()
        self.ranks = replace(self.ranks, address=f"{LOCAL_HOST}:{port}")
        store = dist.TCPStore(LOCAL_HOST, port, self.ranks.world, is_master=True, wait_for_workers=False,
                              timeout=COLLECTIVE_TIMEOUT)
        threads = None
        if self.ranks.backend == "gloo":  # the CPU's cores shared between the ranks
            self._threads = torch.get_num_threads()
            threads = max(1, self._threads // self.ranks.world)
            torch.set_num_threads(threads)
        context = mp.get_context("spawn")
        for rank in range(1, self.ranks.world):
            process = context.Process(target=_rank_main, name=f"tunery-rank-{rank}", daemon=True, args=(
                method, inputs, replace(self.ranks, rank=rank), threads, examples, valid_examples, os.getpid()))
            process.start()
            self._processes.append(process)
        joined = [f"joined/{rank}" for rank in range(1, self.ranks.world)]
        deadline = time.monotonic() + RENDEZVOUS_SECONDS
        while not store.check(joined):
            if lost := self._lost_rank():
                raise RankLost(lost)
            if time.monotonic() > deadline:
                raise RankLost(f"the training processes did not start within {RENDEZVOUS_SECONDS} s")
            time.sleep(0.05)
        _join(self.ranks, store)

    # train -----------------------------------------------------------------------------------
    def train(self, on_step, on_epoch_end=None, keep_going=None):
        ask = keep_going or (lambda: True)
        with self._collectives():
            result = super().train(lambda m: self._decide(on_step(m)), on_epoch_end, lambda: self._decide(ask()))
        self._together = True
        return result

    def _decide(self, go_on: bool) -> bool:
        """Rank 0's decision, the same on every rank."""
        flag = torch.tensor([int(go_on)], device=self._collective_device())
        dist.broadcast(flag, 0)
        return bool(flag.item())

    def _share(self, items: list) -> list:
        """This rank's part of a batch."""
        return items[self.ranks.rank::self.ranks.world]

    def _sum(self, values: list[float]) -> list[float]:
        """The values summed over the ranks."""
        summed = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(summed)
        return summed.tolist()

    def _optimizer_step(self) -> None:
        self._reduce_gradients()
        super()._optimizer_step()

    def _reduce_gradients(self) -> None:
        """Every trainable weight's gradient summed over the ranks (a rank with no part of this
        batch adds zeros), a bucket of weights of one dtype at a time."""
        buckets: dict[torch.dtype, list[torch.Tensor]] = {}
        filled: dict[torch.dtype, int] = {}
        for parameter in self.trainable:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            grad = parameter.grad
            buckets.setdefault(grad.dtype, []).append(grad)
            filled[grad.dtype] = filled.get(grad.dtype, 0) + grad.numel() * grad.element_size()
            if filled[grad.dtype] >= BUCKET_BYTES:
                _all_reduce(buckets.pop(grad.dtype))
                filled[grad.dtype] = 0
        for grads in buckets.values():
            _all_reduce(grads)

    def _validate(self, metrics, examples, *, whole: bool) -> None:
        if self.ranks.rank == 0:  # only its metrics are reported
            super()._validate(metrics, examples, whole=whole)

    def _collective_device(self) -> torch.device:
        return self.device if self.ranks.backend == "nccl" else torch.device("cpu")

    # a rank lost -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _collectives(self):
        """A failure while other ranks take part: RankLost when one of them has stopped."""
        try:
            yield
        except RankLost:
            raise
        except Exception as exc:
            if self.ranks.rank == 0 and (lost := self._lost_rank(wait=2.0)):
                raise RankLost(lost) from exc
            raise

    def _lost_rank(self, wait: float = 0.0) -> str | None:
        """Which of ranks 1.. has stopped, in words (waiting up to `wait` seconds for one to)."""
        deadline = time.monotonic() + wait
        while True:
            for rank, process in enumerate(self._processes, start=1):
                if process.exitcode is not None:
                    how = (f"was killed by {signal.Signals(-process.exitcode).name}" if process.exitcode < 0
                           else f"exited with status {process.exitcode}")
                    return f"training process {rank} of {self.ranks.world} ({self.ranks.devices[rank]}) {how}"
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    # cleanup ---------------------------------------------------------------------------------
    def cleanup(self) -> None:
        super().cleanup()
        if self.ranks.rank == 0:
            for process in self._processes:  # done at the same step, they exit; otherwise they are stopped
                process.join(FINISH_SECONDS if self._together else 0)
                if process.is_alive():
                    process.terminate()
                    process.join(5)
                if process.is_alive():
                    process.kill()
                    process.join()
            self._processes = []
            if self._threads is not None:
                torch.set_num_threads(self._threads)
        if dist.is_initialized():
            dist.destroy_process_group()


class ParallelSFTRecipe(DataParallel, SFTRecipe):
    def _train_batch(self, examples, step: int, epoch: int) -> tuple[StepMetrics, int]:
        mine = self._share(examples)
        batch = pack(mine, self.pad_id, self.row_tokens, share_prefix=True).to(self.device) if mine else None
        total = self._sum([float(batch.loss_weight()) if batch else 0.0])[0]
        sums = self._backward(batch, total) if batch else (0.0, 0.0, 0.0)
        self._optimizer_step()
        loss_sum, correct, counted, tokens = self._sum([*sums, batch.tokens if batch else 0])
        return StepMetrics(step, self.total_steps, epoch, loss_sum / total, correct / max(1.0, counted)), int(tokens)


class ParallelDPORecipe(DataParallel, DPORecipe):
    def _compute_references(self, pairs: list[Pair]) -> None:
        """Each rank computes its part of the pairs' references; every rank gets them all."""
        mine = self._share(pairs)
        if mine:
            super()._compute_references(mine)
        parts: list = [None] * self.ranks.world
        dist.all_gather_object(parts, [p.reference for p in mine])
        for rank, references in enumerate(parts):
            for pair, reference in zip(pairs[rank::self.ranks.world], references, strict=True):
                pair.reference = tuple(reference)

    def _train_batch(self, examples: list[Pair], step: int, epoch: int):
        mine = self._share(examples)
        sums = self._preference_sums(mine, len(examples), backward=True) if mine else (0.0,) * 5
        self._optimizer_step()
        figures = Preferences(*(total / max(1, len(examples)) for total in self._sum(list(sums))))
        return self._step_metrics(figures, step, epoch), sum(p.tokens for p in examples)


PARALLEL: dict[type, type] = {SFTRecipe: ParallelSFTRecipe, DPORecipe: ParallelDPORecipe}


def _rank_main(method: str, inputs: RecipeInputs, ranks: Ranks, threads: int | None,
               examples: list[dict[str, Any]], valid_examples: list[dict[str, Any]] | None, parent: int) -> None:
    """A rank other than 0, in its own spawned process: join the run, set up, and train following
    rank 0's decisions until they say stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which stops every rank
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
    if threads is not None:
        torch.set_num_threads(threads)
    host, _, port = ranks.address.rpartition(":")
    store = dist.TCPStore(host, int(port), ranks.world, is_master=False, timeout=COLLECTIVE_TIMEOUT)
    store.set(f"joined/{ranks.rank}", "1")
    _join(ranks, store)
    recipe = _recipe(method, replace(inputs, device=ranks.devices[ranks.rank]), ranks)
    try:
        recipe.setup(examples, valid_examples)
        recipe.train(_follow)
    except Exception as exc:  # rank 0 went first (its connection closed): nothing to say beyond that
        print(f"tunery training process {ranks.rank}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
              file=sys.stderr)
        os._exit(1)
    finally:
        recipe.cleanup()


def _follow(metrics) -> bool:
    failpoints.reach(RANK_STEP, metrics.step)
    return True  # what counts is rank 0's decision


def _join(ranks: Ranks, store) -> None:
    device = ranks.devices[ranks.rank]
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(ranks.backend, store=store, rank=ranks.rank, world_size=ranks.world,
                            timeout=COLLECTIVE_TIMEOUT)


def _exit_with(parent: int) -> None:
    """Exit once the process that started this rank is gone (rank 0 killed: nothing to follow)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _all_reduce(grads: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL_HOST, 0))
        return sock.getsockname()[1]
