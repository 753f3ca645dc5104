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

Several machines (TUNERY_NODES, TUNERY_NODE_RANK, TUNERY_RENDEZVOUS): every machine runs a worker
with the same devices; the first machine's claims jobs and its rank 0 opens the TCP store at the
rendezvous address, where it leaves the run's recipe and examples; the workers of the other
machines wait there (join_runs), start their own ranks (node k's are k*local to (k+1)*local - 1)
and every rank joins the one process group. Nothing else changes: the same code runs on one
machine, and on one machine the tests run it with two workers as two machines. A rank lost on
another machine shows as a failed collective, and is RankLost too."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
import time
import uuid
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
RUN_KEY, RUN_ID_KEY = "run", "run_id"  # at the rendezvous: the run starting (its id), and what its ranks start from
_RENDEZVOUS: dict[str, Any] = {}  # the rendezvous store of this worker's process: opened once, kept for every run
JOIN_POLL_SECONDS = 2.0  # how long another machine's worker waits at the rendezvous before looking again


class RankLost(RuntimeError):
    """A training process of the run stopped (killed, out of memory): the run cannot go on, and
    the job is to continue from its last checkpoint."""


@dataclass(frozen=True)
class Ranks:
    """A run's processes: rank r computes on devices[r] (on machine r // local); they meet at
    address (rank 0's TCP store)."""
    devices: tuple[str, ...]
    rank: int = 0
    address: str = ""  # host:port: the rendezvous over machines, or the local port rank 0's store took
    nodes: int = 1  # machines
    run: str = ""  # over machines: the run's id, its keys' prefix in the rendezvous store
    sharded: bool = False  # full fine-tuning sharded over the ranks (sharded.py), not a copy on each

    @property
    def world(self) -> int:
        return len(self.devices)

    @property
    def local(self) -> int:
        """Ranks per machine."""
        return self.world // self.nodes

    @property
    def backend(self) -> str:
        return "nccl" if self.devices[0].startswith("cuda") else "gloo"


def build(method: str, inputs: RecipeInputs, devices: list[str], nodes: int = 1, rendezvous: str | None = None,
          sharding: str = "auto") -> Recipe:
    """Rank 0's recipe, in this process: the other ranks start when it sets up (this machine's
    devices[1:], then each other machine's devices), and end when it cleans up. sharding "auto"
    (TUNERY_SHARDING): supervised full fine-tuning is sharded (sharded.py); "off": every rank
    keeps all of the weights and the optimizer's state."""
    ranks = Ranks(tuple(devices) * nodes, nodes=nodes, address=rendezvous if nodes > 1 else "",
                  sharded=is_sharded(method, inputs, sharding))
    return _recipe(method, replace(inputs, device=devices[0]), ranks, launch=(method, inputs))


def is_sharded(method: str, inputs: RecipeInputs, sharding: str = "auto") -> bool:
    """Whether a job trained on several processes shards its model (sharding: TUNERY_SHARDING)."""
    return sharding == "auto" and method == "supervised" and inputs.hyperparameters.training_type == "full"


def _recipe(method: str, inputs: RecipeInputs, ranks: Ranks, launch: tuple[str, RecipeInputs] | None = None) -> Recipe:
    single = METHODS[method].build(inputs)
    if ranks.sharded:
        from tunery.training.sharded import ShardedSFTRecipe  # it builds on this module's DataParallel

        return ShardedSFTRecipe(single.config, ranks, launch)
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
            self._same_weights()

    def _same_weights(self) -> None:
        for parameter in self.trainable:  # the same seed made them equal; rank 0's are the run's
            dist.broadcast(parameter.data, 0)

    def _start(self, examples: list[dict[str, Any]], valid_examples: list[dict[str, Any]] | None) -> None:
        """Start this machine's ranks 1.. (spawned), leave the run for the other machines' workers
        at the rendezvous, and join every rank in one process group once each is there."""
        method, inputs = self._launch
        root = None
        if self.ranks.nodes > 1:  # the other machines' workers look for a run id at the rendezvous
            root = _rendezvous(self.ranks.address)
            self.ranks = replace(self.ranks, run=uuid.uuid4().hex)
            store = _run_store(root, self.ranks.run)
            store.set(RUN_KEY, pickle.dumps((method, inputs, examples, valid_examples, self.ranks.devices[:self.ranks.local])))
            root.set(RUN_ID_KEY, self.ranks.run)
        else:  # port 0: the store binds a free port itself (no window in which another process takes it)
            store = dist.TCPStore(LOCAL_HOST, 0, self.ranks.world, is_master=True, wait_for_workers=False,
                                  timeout=COLLECTIVE_TIMEOUT)
            self.ranks = replace(self.ranks, address=f"{LOCAL_HOST}:{store.port}")
        try:
            self._meet(store, method, inputs, examples, valid_examples)
        finally:
            if root is not None:  # every rank is in, or the run failed to start: no machine is to join it now
                root.delete_key(RUN_ID_KEY)

    def _meet(self, store, method: str, inputs: RecipeInputs, examples: list[dict[str, Any]],
              valid_examples: list[dict[str, Any]] | None) -> None:
        threads = None
        if self.ranks.backend == "gloo":  # the CPU's cores shared between this machine's ranks
            self._threads = torch.get_num_threads()
            threads = max(1, self._threads // self.ranks.local)
            torch.set_num_threads(threads)
        self._processes = _spawn(method, inputs, self.ranks, range(1, self.ranks.local), threads, examples, valid_examples)
        joined = [f"joined/{rank}" for rank in range(1, self.ranks.world)]
        deadline = time.monotonic() + RENDEZVOUS_SECONDS
        while not store.check(joined):
            if lost := self._lost_rank():
                raise RankLost(lost)
            for node in range(1, self.ranks.nodes):
                if store.check([f"refused/{node}"]):
                    raise RankLost(store.get(f"refused/{node}").decode())
            if time.monotonic() > deadline:
                raise RankLost(f"the training processes did not start within {RENDEZVOUS_SECONDS} s" + (
                    "" if self.ranks.nodes == 1 else
                    f" (those of the other machines join at {self.ranks.address}: each runs `tunery worker` with "
                    f"TUNERY_NODES={self.ranks.nodes}, its TUNERY_NODE_RANK and this TUNERY_RENDEZVOUS)"))
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
            if self.ranks.rank == 0 and self.ranks.nodes > 1 and _peer_failure(exc):
                raise RankLost(f"a training process on another machine stopped ({str(exc).splitlines()[0][:200]})") from exc
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


def _spawn(method: str, inputs: RecipeInputs, ranks: Ranks, numbers: range, threads: int | None,
           examples: list[dict[str, Any]], valid_examples: list[dict[str, Any]] | None) -> list:
    """This machine's ranks `numbers`, each in a process of its own, forked from a server process
    that has imported torch and this module and nothing else (no CUDA, no OpenMP threads): a
    rank starts in a second, where a spawned one spent 4 s importing. The server was forked at
    the first run: each rank takes this process's environment as it is now."""
    context = mp.get_context("forkserver")
    context.set_forkserver_preload([__name__, "transformers", "peft"])
    processes = []
    for rank in numbers:
        process = context.Process(target=_rank_main, name=f"tunery-rank-{rank}", daemon=True, args=(
            method, inputs, replace(ranks, rank=rank), threads, examples, valid_examples, os.getpid(), dict(os.environ)))
        process.start()
        processes.append(process)
    return processes


def join_runs(devices: list[str], nodes: int, node: int, rendezvous: str, stopping: threading.Event, log) -> None:
    """The worker of a machine other than the first (node > 0): wait at the rendezvous for the first
    machine's rank 0 to start a run, start this machine's ranks in it, wait for them to end; again,
    until `stopping` is set (the ranks of a run under way are then stopped: rank 0 sees them lost)."""
    host, _, port = rendezvous.rpartition(":")
    root, done = None, None
    while not stopping.is_set():
        try:
            if root is None:
                root = dist.TCPStore(host, int(port), is_master=False, wait_for_workers=False,
                                     timeout=timedelta(seconds=JOIN_POLL_SECONDS))
            run_id = root.get(RUN_ID_KEY).decode() if root.check([RUN_ID_KEY]) else done
        except Exception:  # nobody listens there (the first machine's worker is not up): look again soon
            root = None
            stopping.wait(JOIN_POLL_SECONDS / 2)
            continue
        if run_id == done:  # no run starting now
            stopping.wait(JOIN_POLL_SECONDS / 4)
            continue
        done = run_id
        store = _run_store(root, run_id)
        method, inputs, examples, valid_examples, first = pickle.loads(store.get(RUN_KEY))
        if len(devices) != len(first):
            refusal = (f"machine {node} has {len(devices)} training devices ({', '.join(devices)}), the first machine "
                       f"{len(first)} ({', '.join(first)}): TUNERY_WORKER_DEVICES must be alike on every machine")
            log.error("%s", refusal)
            store.set(f"refused/{node}", refusal)
            continue
        local = len(first)
        ranks = Ranks(tuple(first) * node + tuple(devices) + tuple(first) * (nodes - node - 1), nodes=nodes,
                      address=rendezvous, run=run_id)
        threads = max(1, torch.get_num_threads() // local) if ranks.backend == "gloo" else None
        numbers = range(node * local, (node + 1) * local)
        log.info("joining run %s as ranks %d-%d of %d on %s", run_id, numbers[0], numbers[-1], ranks.world, ", ".join(devices))
        processes = _spawn(method, inputs, ranks, numbers, threads, examples, valid_examples)
        while any(p.is_alive() for p in processes):
            if stopping.is_set():
                for process in processes:
                    process.terminate()
            for process in processes:
                process.join(0.5)
        log.info("run %s ended (exit codes %s)", run_id, [p.exitcode for p in processes])


def _rank_main(method: str, inputs: RecipeInputs, ranks: Ranks, threads: int | None,
               examples: list[dict[str, Any]], valid_examples: list[dict[str, Any]] | None, parent: int,
               environment: dict[str, str]) -> None:
    """A rank other than 0, in its own process: join the run, set up, and train following
    rank 0's decisions until they say stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which stops every rank
    os.environ.clear()
    os.environ.update(environment)
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
    if threads is not None:
        torch.set_num_threads(threads)
    host, _, port = ranks.address.rpartition(":")
    store = dist.TCPStore(host, int(port), is_master=False, wait_for_workers=False, timeout=COLLECTIVE_TIMEOUT)
    if ranks.run:
        store = _run_store(store, ranks.run)
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
    """Exit once the process that started this rank is gone (rank 0 killed: nothing to follow).
    It is not this process's parent (the fork server is): it is asked after by its id."""
    while True:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass  # a process of another user holds that id: alive
        time.sleep(1.0)


def _rendezvous(address: str):
    """The store at TUNERY_RENDEZVOUS, served by this process (the first machine's worker) from its
    first run on: a store opened and closed for each run could not always listen on the same port
    again at once (the last run's still closing)."""
    if address not in _RENDEZVOUS:
        host, _, port = address.rpartition(":")
        _RENDEZVOUS[address] = dist.TCPStore(host, int(port), None, is_master=True, wait_for_workers=False,
                                             timeout=COLLECTIVE_TIMEOUT)
    return _RENDEZVOUS[address]


def _run_store(root, run_id: str):
    """One run's keys in the rendezvous store (a run's process group among them)."""
    return dist.PrefixStore(f"run/{run_id}/", root)


def _peer_failure(exc: BaseException) -> bool:
    """Whether a collective failed because another rank went away: torch's DistError (NCCL, the
    store), or gloo's transport error (a RuntimeError naming its source: "gloo/transport/...")."""
    return isinstance(exc, dist.DistError) or "/gloo/transport/" in str(exc)


def _all_reduce(grads: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()
