"""The eval run executor: a worker with no training to do claims a queued eval run
(services/eval_runs.RunQueue: a lease, extended from a thread of its own while the run executes)
and executes it a batch of items at a time. For a `completions` run, a batch's chat requests are
submitted to the engine all at once (services/chat, in this process), so that its continuous
batching decodes them together; a `jsonl` run's items bring their samples. Each testing
criterion then grades the batch (graders.Grading.grade_many: the judges' prompts reach the
engine together too), and the batch's output items and counts are recorded in one transaction,
only while the run is still this worker's and in progress. A cancel (or delete) is seen by the
heartbeat within seconds and stops the batch under way (its generation too), and nothing of it
is recorded; a worker stopping hands the run back, to go on after its recorded items."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import traceback
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tunery.errors import NotFound, TuneryError
from tunery.graders import Grading, Sample, judge_models
from tunery.graders.templates import TemplateError
from tunery.protocol.chat import ChatCompletionRequest
from tunery.protocol.evals import (CompletionsDataSource, CriterionResult, DataSource, EvalError, FileContentSource,
                                   OutputSample, SampleMessage, SampleUsage, SamplingParams)
from tunery.services import eval_items
from tunery.services.container import Container
from tunery.services.eval_runs import ClaimedRun, ItemOutcome

log = logging.getLogger(__name__)
BATCH_ITEMS = 64  # items generated and graded together (twice the engine's slots: a finished one's slot refills)
WATCH_SECONDS = 0.2  # how often a batch under way looks whether its run was canceled or the worker is stopping
DATA_SOURCE = TypeAdapter(DataSource)


class RunFailed(Exception):
    """The run cannot go on: it fails with error {code, message}."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def run_next(container: Container, worker_id: str, stopping: threading.Event) -> bool:
    """Execute the oldest queued eval run, if there is one (False when there is none)."""
    run = container.eval_runs.claim(worker_id)
    if run is None:
        return False
    Execution(container, run, worker_id, stopping).execute()
    return True


class Execution:
    def __init__(self, container: Container, run: ClaimedRun, worker_id: str, stopping: threading.Event):
        self.container = container
        self.queue = container.eval_runs
        self.run = run
        self.worker_id = worker_id
        self.stopping = stopping  # the worker is stopping: hand the run back
        self.lost = threading.Event()  # the run is no longer ours: canceled, deleted or taken over
        self.done = threading.Event()
        self.source = DATA_SOURCE.validate_python(run.data_source)

    def execute(self) -> None:
        beating = threading.Thread(target=self._beat, name=f"heartbeat {self.run.id}", daemon=True)
        beating.start()
        try:
            self._execute()
        except RunFailed as exc:
            self.queue.fail(self.run, self.worker_id, exc.code, exc.message)
        except Exception as exc:  # a fault of ours: the run fails saying so, the worker goes on
            log.error("eval run %s failed:\n%s", self.run.id, traceback.format_exc())
            self.queue.fail(self.run, self.worker_id, "server_error", f"The run failed because of an internal error: {exc}")
        finally:
            self.done.set()
            beating.join()

    def _beat(self) -> None:
        while not self.done.wait(self.container.settings.worker_heartbeat_seconds):
            try:
                if not self.queue.heartbeat(self.run, self.worker_id):
                    self.lost.set()
                    return
            except Exception as exc:  # the database unreachable for a moment: the next beat tries again
                log.warning("eval run %s: heartbeat failed: %s", self.run.id, exc)

    def _execute(self) -> None:
        limit = self.container.settings.job_max_attempts
        if self.run.taken_over_from is not None and self.run.crashes >= limit:
            raise RunFailed("worker_crashed", f"The run's worker stopped {self.run.crashes} times (the last, on "
                            f"{self.run.taken_over_from.rpartition(':')[0] or self.run.taken_over_from}, after "
                            f"{self.run.items_done} items); the run is not tried again (TUNERY_JOB_MAX_ATTEMPTS "
                            f"is {limit}).")
        if self.run.taken_over_from is not None:
            log.warning("eval run %s: its worker %s stopped; going on after %d items (attempt %d of %d)", self.run.id,
                        self.run.taken_over_from, self.run.items_done, self.run.crashes + 1, limit)
        rows = self._rows()
        if isinstance(self.source, CompletionsDataSource):
            try:
                self.container.models.resolve(self.run.organization_id, self.source.model)
            except NotFound:
                raise RunFailed("model_not_found", f"The model {self.source.model} no longer exists.") from None
        if isinstance(self.source, CompletionsDataSource) or any(judge_models(c) for c in self.run.criteria):
            self.container.chat  # the engine, made once here (not by concurrent judges)
        grading = self.container.graders.grading(self.run.organization_id)
        checker = eval_items.ItemChecker(self.run.item_schema)
        # One event loop for the whole run: a cancelled batch's streams, and the chat requests
        # still being submitted from threads, are closed on a loop that is still open.
        with asyncio.Runner() as runner:
            for start in range(self.run.items_done, len(rows), BATCH_ITEMS):
                batch = list(enumerate(rows[start:start + BATCH_ITEMS], start))
                outcomes = runner.run(self._watched(self._batch(batch, checker, grading)))
                if outcomes is None or not self.queue.record(self.run, self.worker_id, outcomes):
                    break
            else:
                self.queue.completed(self.run, self.worker_id)
                return
        if self.stopping.is_set() and not self.lost.is_set():
            self.queue.hand_back(self.run, self.worker_id)

    def _rows(self) -> list[dict[str, Any]]:
        source = self.source.source
        if isinstance(source, FileContentSource):
            return eval_items.content_rows(source.content)
        try:
            path = self.container.files.content_path(self.run.organization_id, source.id)
            return list(eval_items.file_rows(path))
        except NotFound:
            raise RunFailed("file_not_found", f"File {source.id} no longer exists.") from None
        except eval_items.RowError as exc:
            raise RunFailed("invalid_file", f"File {source.id}, {exc}.") from None

    async def _watched(self, work) -> list[ItemOutcome] | None:
        """The batch's outcomes; None when the run was lost or the worker is stopping meanwhile
        (the batch is cancelled: its generation stops)."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=WATCH_SECONDS)
            if done:
                return task.result()
            if self.lost.is_set() or self.stopping.is_set():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return None

    async def _batch(self, batch: list[tuple[int, dict[str, Any]]], checker: eval_items.ItemChecker,
                     grading: Grading) -> list[ItemOutcome]:
        outcomes = [ItemOutcome(index, row["item"], "error", OutputSample()) for index, row in batch]
        samples: list[Sample | None] = [None] * len(batch)
        for position, (index, row) in enumerate(batch):
            if (problem := checker.describe(index, row["item"])) is not None:
                outcomes[position].sample.error = EvalError(code="invalid_item", message=problem)
            elif not isinstance(self.source, CompletionsDataSource):
                samples[position] = eval_items.given_sample(row.get("sample")) or Sample.from_text("")
                outcomes[position].sample = _given(row.get("sample"))
        if isinstance(self.source, CompletionsDataSource):
            wanted = [p for p, o in enumerate(outcomes) if o.sample.error is None]
            answers = await asyncio.gather(*(self._answer(outcomes[p]) for p in wanted))
            for position, sample in zip(wanted, answers):
                samples[position] = sample
        graded = [p for p, sample in enumerate(samples) if sample is not None]
        cases = [(samples[p], outcomes[p].item) for p in graded]
        by_criterion = await asyncio.gather(*(grading.grade_many(c, cases) for c in self.run.criteria))
        for criterion, results in zip(self.run.criteria, by_criterion):
            for position, result in zip(graded, results):
                outcome = outcomes[position]
                outcome.results.append(CriterionResult(
                    name=criterion.name, type=criterion.type, score=result.reward,
                    passed=eval_items.passed(criterion, result), error=result.error,
                    sample={"output_text": result.judge_answer} | ({"label": result.label} if result.label else {})
                    if result.judge_answer is not None else None))
                for model, used in result.usage.items():
                    _count(outcome.usage, model, used.prompt_tokens, used.completion_tokens)
        for position in graded:
            outcome = outcomes[position]
            failed = any(r.error is not None for r in outcome.results)
            outcome.status = "error" if failed else "pass" if all(r.passed for r in outcome.results) else "fail"
        return outcomes

    async def _answer(self, outcome: ItemOutcome) -> Sample | None:
        """The model's answer to the item (its sample set on the outcome); None when there is
        none (the outcome's sample says why)."""
        source: CompletionsDataSource = self.source
        params = source.sampling_params or SamplingParams()
        outcome.sample = OutputSample(model=source.model, temperature=params.temperature, top_p=params.top_p,
                                      seed=params.seed, max_completion_tokens=params.max_completion_tokens)
        try:
            messages = eval_items.messages_for(source.input_messages, outcome.item)
            outcome.sample.input = [SampleMessage(role=m["role"], content=_text(m.get("content"))) for m in messages]
            request = ChatCompletionRequest(model=source.model, messages=messages, temperature=params.temperature,
                                            top_p=params.top_p, seed=params.seed, tools=params.tools,
                                            max_completion_tokens=params.max_completion_tokens)
            chat = self.container.chat
            run = await _started(chat.start_chat, self.run.organization_id, request)
            completion = await chat.chat(run)
        except TemplateError as exc:
            outcome.sample.error = EvalError(code="invalid_item", message=f"Item {outcome.index}: {exc}")
            return None
        except ValidationError as exc:
            error = exc.errors()[0]
            outcome.sample.error = EvalError(code="invalid_item", message=f"Item {outcome.index}: its messages are no "
                                             f"chat messages ({'.'.join(map(str, error['loc']))}: {error['msg']})")
            return None
        except TuneryError as exc:  # a prompt past the model's context, the server stopping
            outcome.sample.error = EvalError(code=exc.code or "generation_failed", message=exc.message)
            return None
        except Exception as exc:  # the chat template or tokenizer failing on this item: it errs, the run goes on
            log.warning("eval run %s, item %s: %s", self.run.id, outcome.index, traceback.format_exc())
            outcome.sample.error = EvalError(code="generation_failed",
                                             message=f"Item {outcome.index}: {type(exc).__name__}: {exc}")
            return None
        choice, usage = completion.choices[0], completion.usage
        text = choice.message.content or ""
        outcome.sample.output = [SampleMessage(role="assistant", content=text)]
        outcome.sample.finish_reason = choice.finish_reason
        outcome.sample.usage = SampleUsage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                                           total_tokens=usage.total_tokens)
        _count(outcome.usage, source.model, usage.prompt_tokens, usage.completion_tokens)
        calls = [c.model_dump() for c in choice.message.tool_calls or []]
        return Sample.from_text(text, calls, choice.finish_reason)


async def _started(start_chat, *args):
    """The chat run that start_chat (run in a thread) submits. When the caller is cancelled while
    the thread is still at it, the thread still submits it: its stream is closed once it is there
    (by whichever comes second, the thread or the cancel), so that its generation stops rather
    than run for nobody."""
    lock, held = threading.Lock(), {"abandoned": False, "run": None}

    def start():
        run = start_chat(*args)
        with lock:
            held["run"] = run
            if held["abandoned"]:
                run.stream.close()
        return run

    try:
        return await asyncio.to_thread(start)
    except asyncio.CancelledError:
        with lock:
            held["abandoned"] = True
            if held["run"] is not None:
                held["run"].stream.close()
        raise


def _count(usage: dict[str, dict[str, int]], model: str, prompt_tokens: int, completion_tokens: int) -> None:
    """One call of the model, with its tokens, counted in usage."""
    total = usage.setdefault(model, {"invocation_count": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                     "total_tokens": 0, "cached_tokens": 0})
    total["invocation_count"] += 1
    total["prompt_tokens"] += prompt_tokens
    total["completion_tokens"] += completion_tokens
    total["total_tokens"] += prompt_tokens + completion_tokens


def _given(sample: dict[str, Any] | None) -> OutputSample:
    """A jsonl row's own sample, as an output item shows it."""
    if sample is None:
        return OutputSample()
    text = eval_items.given_sample(sample).output_text
    model, reason = sample.get("model"), sample.get("finish_reason")
    return OutputSample(output=[SampleMessage(role="assistant", content=text)],
                        model=model if isinstance(model, str) else None,
                        finish_reason=reason if isinstance(reason, str) else None)


def _text(content: Any) -> str | None:
    """A message's content as text (parts joined)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)
