"""Load: 50 concurrent clients of the official `openai` SDK against a real `tunery serve` (the API
and its worker process) while the worker trains a fine-tuning job on the embedded
SmolLM2-135M-Instruct, once on SQLite and once on PostgreSQL (a throwaway server started from
PostgreSQL's own binaries, as the tests start one; skipped, with the reason, where it is not installed).

    python bench/load.py [--database sqlite|postgresql|both] [--seconds N] [--clients N] [--think-ms N]
                         [--skip OPERATION ...]

Each client repeats, for --seconds, one operation drawn at random from a fixed mix (the weights in
MIX): uploading a small JSONL file, creating a job (cancelled at once, so that the queue does not
grow and the active-jobs limit is never reached: its 429 would be a real error), listing and
retrieving jobs, polling the training job's events, listing and retrieving files, and a short chat
(8 tokens) with the base model; then waits --think-ms (uniform between 0 and twice that) before
the next. The training job (orders_train.jsonl, 50 epochs: far longer than a run) is checked to
be training before the clients start (its first step done) and still running when they stop; the
steps it trained in between are printed (how much CPU the load left it). A run where it was not
running at the end reads training=no, goal not met. It is then cancelled, and its worker waited
for, so that the next database's run has the machine (and PostgreSQL its server) to itself.

Every request counts: latencies are from the client's send to its parsed answer, errors are any
non-2xx answer or exception (no retries). The clients are AsyncOpenAI instances on one event loop
in this process (50 threads would time the GIL as much as the server); on a 2-core machine they
share the cores with the server and the training job, so the event loop's lag (how late a 10 ms
timer fires) and this process's CPU time are printed beside the results: a lag near the
latencies would mean the client, not the server, was measured. For the same reason each client
opens its connection (one untimed models.list) before the clock starts, and this process's garbage
collector is off while the clients run: measured, its full collections stalled the event loop for
120 ms twice a minute, and every request in flight then counted that against the server (p99 of
list/retrieve on PostgreSQL 207 ms with them, 164 ms without).

Per database: per operation count, requests/s, p50 and p99 latency and errors (with the first
answers of each kind of error), then the overall requests/s and errors. The last lines read
`load database=sqlite rps=X errors=N p99_list_retrieve_ms=Y ... goal=met|not met`, one per
database; the goal: no errors, and p99 under 200 ms over every list and retrieve request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
from openai import AsyncOpenAI, OpenAI

from server import serve

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers import PostgresCluster  # noqa: E402  (the tests' throwaway PostgreSQL server)
from tunery.services.fine_tuning import MAX_ACTIVE_JOBS  # noqa: E402

DATA = REPO / "examples" / "data"
BASE = "SmolLM2-135M-Instruct"
TRAINING_EPOCHS = 50  # the most a job may ask for: about 20 minutes on a 2-core CPU, longer than any run
# The clients' uploads and jobs: a few guide examples (what a job is created on, never trained).
SMALL_JSONL = b"".join((DATA / "marv.jsonl").read_bytes().splitlines(keepends=True)[:10])  # the fewest a file may hold
CHAT_MESSAGES = [{"role": "user", "content": "Name a colour."}]
CHAT_TOKENS = 8
REQUEST_TIMEOUT = 120.0  # seconds: a request slower than this counts as an error
GOAL_P99_MS = 200.0
# Created jobs not yet cancelled, at most: the training job plus these stay under the limit.
JOBS_IN_FLIGHT = MAX_ACTIVE_JOBS - 2
LIST_RETRIEVE = ("list jobs", "retrieve job", "list events", "list files", "retrieve file")
# Relative frequency of each operation: mostly reads, as dashboards and scripts polling a job do.
MIX = {"list jobs": 3, "retrieve job": 3, "list events": 4, "list files": 2, "retrieve file": 2,
       "upload file": 1, "create job": 1, "chat": 2}  # "cancel job" follows every job created


@dataclass
class Outcomes:
    """What the clients saw, per operation: the latency (ms) of every request sent before the
    deadline, how many were answered by then (requests per second: over the fixed duration, not
    the drain after it, when slow chats finish alone), and errors."""
    deadline: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    answered_in_time: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    async def timed(self, operation: str, call):
        started = time.perf_counter()
        try:
            return await call
        except openai.APIStatusError as exc:  # any non-2xx answer
            self.errors[operation].append(f"{exc.status_code} {_body(exc)}")
        except Exception as exc:  # connection refused or reset, timeout, an unparseable answer
            self.errors[operation].append(f"{type(exc).__name__}: {exc}")
        finally:
            answered = time.perf_counter()
            self.latencies[operation].append((answered - started) * 1000)
            self.answered_in_time[operation] += answered <= self.deadline
        return None


def _body(exc: openai.APIStatusError) -> str:
    with contextlib.suppress(Exception):
        return json.dumps(exc.response.json())[:300]
    return exc.response.text[:300]


@dataclass
class Shared:
    """What every client reads: the training job, and the files uploaded so far."""
    training_job: str
    job_file: str
    files: list[str]
    jobs: list[str]
    creating: asyncio.Semaphore | None = None  # made on the clients' event loop


async def one_operation(client: AsyncOpenAI, operation: str, shared: Shared, outcomes: Outcomes,
                        draw: random.Random) -> None:
    timed = outcomes.timed
    if operation == "list jobs":
        await timed(operation, client.fine_tuning.jobs.list())  # the first page of 20
    elif operation == "retrieve job":
        await timed(operation, client.fine_tuning.jobs.retrieve(draw.choice(shared.jobs)))
    elif operation == "list events":
        await timed(operation, client.fine_tuning.jobs.list_events(shared.training_job, limit=20))
    elif operation == "list files":  # as the SDK's default asks: the first page, OpenAI's 10,000
        await timed(operation, client.files.list())
    elif operation == "retrieve file":
        await timed(operation, client.files.retrieve(draw.choice(shared.files)))
    elif operation == "upload file":
        uploaded = await timed(operation, client.files.create(file=("small.jsonl", io.BytesIO(SMALL_JSONL)),
                                                              purpose="fine-tune"))
        if uploaded is not None:
            shared.files.append(uploaded.id)
    elif operation == "create job":
        async with shared.creating:  # waiting here is not timed: it is the bench's own limit
            job = await timed(operation, client.fine_tuning.jobs.create(training_file=shared.job_file, model=BASE))
            if job is not None:
                shared.jobs.append(job.id)
                await timed("cancel job", client.fine_tuning.jobs.cancel(job.id))
    elif operation == "chat":
        await timed(operation, client.chat.completions.create(model=BASE, messages=CHAT_MESSAGES,
                                                              max_tokens=CHAT_TOKENS, temperature=0))
    else:
        raise ValueError(operation)


async def one_client(client: AsyncOpenAI, mix: dict[str, int], shared: Shared, outcomes: Outcomes, think_ms: float,
                     seed: int) -> None:
    draw = random.Random(seed)
    operations, weights = list(mix), list(mix.values())
    await asyncio.sleep(draw.uniform(0, 0.5))  # not all 50 at the same instant
    while time.perf_counter() < outcomes.deadline:
        await one_operation(client, draw.choices(operations, weights)[0], shared, outcomes, draw)
        if think_ms:
            await asyncio.sleep(draw.uniform(0, 2 * think_ms) / 1000)


async def loop_lag(deadline: float, lags: list[float]) -> None:
    """How late a 10 ms timer fires on the clients' event loop, in ms, until the deadline."""
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append((time.perf_counter() - started - 0.01) * 1000)


async def drive(base_url: str, key: str, mix: dict[str, int], shared: Shared, clients: int, seconds: float,
                think_ms: float) -> tuple[Outcomes, float, list[float], float]:
    """(outcomes, seconds from the first request to the last answer, loop lags, client CPU seconds)."""
    lags = []
    shared.creating = asyncio.Semaphore(JOBS_IN_FLIGHT)
    # A client of its own per user, as 50 separate programs would have (the SDK's default
    # connection limits, 1,000, are far above the one connection each keeps), made before the
    # clock starts: each builds an SSL context, ~50 ms of CPU that would stall the event loop.
    sdk_clients = [AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=REQUEST_TIMEOUT)
                   for _ in range(clients)]
    await asyncio.gather(*(client.models.list() for client in sdk_clients))  # each opens its connection
    gc.disable()  # a full collection here stops every client at once: see the module's docstring
    cpu = time.process_time()
    started = time.perf_counter()
    outcomes = Outcomes(deadline=started + seconds)
    try:
        await asyncio.gather(loop_lag(outcomes.deadline, lags),
                             *(one_client(client, mix, shared, outcomes, think_ms, seed)
                               for seed, client in enumerate(sdk_clients)))
    finally:
        gc.enable()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    for client in sdk_clients:
        await client.close()
    return outcomes, elapsed, lags, cpu


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (of a sorted copy)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else float("nan")


def last_step(client: OpenAI, job_id: str) -> int | None:
    """The step of the training job's newest metrics event, if any."""
    for event in client.fine_tuning.jobs.list_events(job_id, limit=50):
        if event.type == "metrics":
            return event.data["step"]
    return None


def start_training(client: OpenAI, timeout: float = 900) -> str:
    """The id of a job that is training (its first step done), on the orders set."""
    file = client.files.create(file=open(DATA / "orders_train.jsonl", "rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=file.id, model=BASE, method={
        "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": TRAINING_EPOCHS}}})
    deadline = time.time() + timeout
    while (status := client.fine_tuning.jobs.retrieve(job.id).status) != "running" or last_step(client, job.id) is None:
        if status in ("succeeded", "failed", "cancelled") or time.time() > deadline:
            raise RuntimeError(f"the training job {job.id} is {status}, not training")
        time.sleep(1)
    return job.id


def stop_training(client: OpenAI, job_id: str, timeout: float = 600) -> None:
    """Cancels the job and waits until its worker has stopped training: a worker still finishing
    its step would take CPU from the next database's run."""
    client.fine_tuning.jobs.cancel(job_id)
    deadline = time.time() + timeout
    while client.fine_tuning.jobs.retrieve(job_id).status != "cancelled" and time.time() < deadline:
        time.sleep(1)


def worker_pid(data_dir: Path) -> int | None:
    """The process id of the worker that `tunery serve` started on data_dir (Linux's /proc)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if b"worker" in args and str(data_dir).encode() in args:
                return int(cmdline.parent.name)
    return None


def wait_gone(pid: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.2)


@contextlib.contextmanager
def environment(**variables: str) -> Iterator[None]:
    """os.environ with these set, for the server process that bench/server.py starts from it."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def database_url(database: str) -> Iterator[str | None]:
    """TUNERY_DATABASE_URL for the run: none for SQLite (the data directory's file), a new
    database of a throwaway PostgreSQL server otherwise (stopped after)."""
    if database == "sqlite":
        yield None
        return
    # Not under root: as root the server runs as the postgres user, who cannot enter a 0700 folder of root's.
    folder = Path(tempfile.mkdtemp(prefix="tunery-pg-"))
    cluster = PostgresCluster.find(folder)
    if cluster is None:
        shutil.rmtree(folder)
        raise LookupError("PostgreSQL is not installed (no initdb and pg_ctl on PATH or in /usr/lib/postgresql)")
    try:
        yield cluster.new_database()
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def run(database: str, root: Path, args: argparse.Namespace) -> dict:
    data_dir = root / f"data-{database}"
    with database_url(database) as url, environment(**({"TUNERY_DATABASE_URL": url} if url else {})):
        with serve(data_dir) as client:
            training_job = start_training(client)
            client.chat.completions.create(model=BASE, messages=CHAT_MESSAGES, max_tokens=1)  # loads the model to serve
            job_file = client.files.create(file=("small.jsonl", io.BytesIO(SMALL_JSONL)), purpose="fine-tune").id
            shared = Shared(training_job, job_file, files=[job_file], jobs=[training_job])
            step_before, load_before = last_step(client, training_job), os.getloadavg()[0]
            outcomes, elapsed, lags, client_cpu = asyncio.run(drive(
                str(client.base_url), client.api_key, args.mix, shared, args.clients, args.seconds, args.think_ms))
            step_after = last_step(client, training_job)
            status_after = client.fine_tuning.jobs.retrieve(training_job).status
            stop_training(client, training_job)
            worker = worker_pid(data_dir)
        if worker is not None:  # it sees its parent gone only at its next poll: it must not outlive the database
            wait_gone(worker)
    log = data_dir.parent / f"{data_dir.name}-server.log"
    return {"database": database, "outcomes": outcomes, "elapsed": elapsed, "lags": lags, "client_cpu": client_cpu,
            "training": (step_before, step_after, status_after), "load": (load_before, os.getloadavg()[0]),
            "log": log, "log_errors": sum(1 for line in log.open(errors="replace")
                                          if " ERROR " in line or line.startswith("Traceback"))}


def row(name: str, latencies: list[float], answered_in_time: int, seconds: float, errors: int | str) -> str:
    return (f"  {name:<14}{len(latencies):>7}{answered_in_time / seconds:>8.1f}{percentile(latencies, 0.5):>9.1f}"
            f"{percentile(latencies, 0.99):>9.1f}{errors:>8}")


def report(result: dict, args: argparse.Namespace) -> str:
    """Prints a database's results; returns its machine-readable line."""
    outcomes, seconds = result["outcomes"], args.seconds
    step_before, step_after, status_after = result["training"]
    skipped = f"; without {', '.join(args.skip)}" if args.skip else ""
    print(f"\n{result['database']}: {args.clients} clients for {seconds:g} s (the last answer after "
          f"{result['elapsed']:.1f} s), think {args.think_ms:g} ms{skipped}; load average "
          f"{result['load'][0]:.1f} before, {result['load'][1]:.1f} after")
    print(f"  training job: steps {step_before} -> {step_after} during the run, {status_after} at its end")
    print(f"  clients' event loop lag p50 {percentile(result['lags'], 0.5):.1f} ms, "
          f"p99 {percentile(result['lags'], 0.99):.1f} ms; client CPU {result['client_cpu'] / result['elapsed']:.0%} "
          "of a core")
    print(f"  server log {result['log']} ({result['log_errors']} ERROR or Traceback lines)")
    print(f"  {'operation':<14}{'count':>7}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for operation in [*args.mix, "cancel job"] if "create job" in args.mix else args.mix:
        print(row(operation, outcomes.latencies.get(operation, []), outcomes.answered_in_time[operation], seconds,
                  len(outcomes.errors.get(operation, []))))
    every = [t for times in outcomes.latencies.values() for t in times]
    errors = sum(len(e) for e in outcomes.errors.values())
    rps = sum(outcomes.answered_in_time.values()) / seconds
    reads = [t for operation in LIST_RETRIEVE for t in outcomes.latencies.get(operation, [])]
    print(row("all", every, sum(outcomes.answered_in_time.values()), seconds, errors))
    print(row("list/retrieve", reads, sum(outcomes.answered_in_time[o] for o in LIST_RETRIEVE), seconds,
              sum(len(outcomes.errors.get(o, [])) for o in LIST_RETRIEVE)))
    for operation, found in outcomes.errors.items():
        kinds = defaultdict(int)
        for error in found:
            kinds[error] += 1
        for error, count in sorted(kinds.items(), key=lambda k: -k[1])[:5]:
            print(f"  error {operation} x{count}: {error}")
    p99 = percentile(reads, 0.99)
    # The job was training when the clients started (its first step done); still running at the end
    # means it trained throughout. Its steps in between say how much CPU the load left it.
    trained = status_after == "running"
    steps = step_after - step_before if None not in (step_before, step_after) else 0
    met = errors == 0 and p99 < GOAL_P99_MS and trained and not args.skip
    return (f"load database={result['database']} rps={rps:.1f} errors={errors} p99_list_retrieve_ms={p99:.0f} "
            f"clients={args.clients} think_ms={args.think_ms:g} training={'yes' if trained else 'no'} "
            f"training_steps={steps}"
            f"{' skipped=' + ','.join(args.skip) if args.skip else ''} goal={'met' if met else 'not met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the clients send requests, per database")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="mean pause of a client between its requests (0: each always has one in flight)")
    parser.add_argument("--skip", action="append", default=[], choices=list(MIX), metavar="OPERATION",
                        help="leave an operation out of the mix, to see what the others cost without it "
                             "(repeatable; the goal then reads not met)")
    args = parser.parse_args()
    args.mix = {operation: weight for operation, weight in MIX.items() if operation not in args.skip}
    root = Path(tempfile.mkdtemp(prefix="tunery-load-"))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; data under {root}")
    lines = []
    for database in (["sqlite", "postgresql"] if args.database == "both" else [args.database]):
        try:
            result = run(database, root, args)
        except LookupError as missing:
            print(f"\n{database}: not run: {missing}")
            continue
        lines.append(report(result, args))
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
