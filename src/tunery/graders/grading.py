"""Grading samples: Grading.grade() runs one grader (any type) on one sample and item and says
what it gave (GraderResult); grade_many() grades many at once, so that the judges' prompts of
model graders reach the engine together and are decoded in one batch. A failure while grading
(a template's variable missing, a judge's unreadable answer, a python grader's error, a formula
without a value) is an error flag of the result with reward 0, never an exception: one bad item
does not stop an eval run. The grader is assumed checked (checks.check)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from tunery.graders import formula, judge, similarity
from tunery.graders.judge import Judge, JudgeFailed, UnreadableAnswer
from tunery.graders.result import GraderResult
from tunery.graders.sandbox import PythonRuntimeError, PythonSandbox, PythonServerError
from tunery.graders.templates import Sample, TemplateError, render
from tunery.protocol.graders import (AnyGrader, LabelModelGrader, MultiGrader, PythonGrader, ScoreModelGrader,
                                     StringCheckGrader, TextSimilarityGrader)

log = logging.getLogger(__name__)
MAX_COMPARED_CHARS = 100_000  # a text text_similarity compares, once its templates are filled in
GRADE_MANY_AT_ONCE = 64  # gradings under way at once in grade_many (the engine batches their judges' prompts)


class Grading:
    """Grades with the given judge (None: model graders fail with model_grader_server_error) and
    python sandbox (None: python graders are off here and fail with python_grader_server_error)."""

    def __init__(self, judge: Judge | None = None, python: PythonSandbox | None = None):
        self.judge = judge
        self.python = python

    async def grade(self, grader: AnyGrader, sample: Sample, item: Any) -> GraderResult:
        started = time.perf_counter()
        result = GraderResult(grader.name, grader.type)
        try:
            await self._grade(grader, sample, item, result)
        except TemplateError as exc:
            result.fail(exc.flag, str(exc))
        except UnreadableAnswer as exc:
            result.fail("model_grader_parse_error", str(exc))
        except JudgeFailed as exc:
            result.fail("model_grader_server_error", str(exc), model_grader_server_error_details=str(exc))
        except PythonRuntimeError as exc:
            result.fail("python_grader_runtime_error", str(exc), python_grader_runtime_error_details=str(exc))
        except PythonServerError as exc:
            result.fail("python_grader_server_error", str(exc), python_grader_server_error_type=exc.kind)
        except formula.FormulaError as exc:
            result.fail("formula_parse_error", str(exc))
        except Exception as exc:  # a fault of ours: this sample's result says so, the others go on
            log.exception("grader %s (%s) failed", grader.name, grader.type)
            result.fail("other_error", f"{type(exc).__name__}: {exc}")
        result.execution_time = time.perf_counter() - started
        return result

    async def grade_many(self, grader: AnyGrader, cases: Iterable[tuple[Sample, Any]]) -> list[GraderResult]:
        """Each (sample, item)'s result, in order; up to GRADE_MANY_AT_ONCE graded at once."""
        slots = asyncio.Semaphore(GRADE_MANY_AT_ONCE)

        async def one(sample: Sample, item: Any) -> GraderResult:
            async with slots:
                return await self.grade(grader, sample, item)

        return await asyncio.gather(*(one(sample, item) for sample, item in cases))

    async def _grade(self, grader: AnyGrader, sample: Sample, item: Any, result: GraderResult) -> None:
        if isinstance(grader, StringCheckGrader):
            result.reward = similarity.string_check(grader.operation, render(grader.input, sample, item),
                                                    render(grader.reference, sample, item))
        elif isinstance(grader, TextSimilarityGrader):
            text, reference = render(grader.input, sample, item), render(grader.reference, sample, item)
            if max(len(text), len(reference)) > MAX_COMPARED_CHARS:
                result.fail("other_error", f"text_similarity compares texts of at most {MAX_COMPARED_CHARS} characters")
                return
            result.reward = await asyncio.to_thread(similarity.similarity, grader.evaluation_metric, text, reference)
        elif isinstance(grader, (ScoreModelGrader, LabelModelGrader)):
            await self._ask_judge(grader, sample, item, result)
        elif isinstance(grader, PythonGrader):
            if self.python is None:
                raise PythonServerError("disabled", "Python graders are off on this server (TUNERY_PYTHON_GRADERS).")
            result.reward = await self.python.run(grader.source, sample.namespace(), item)
        elif isinstance(grader, MultiGrader):
            await self._combine(grader, sample, item, result)

    async def _ask_judge(self, grader: ScoreModelGrader | LabelModelGrader, sample: Sample, item: Any,
                         result: GraderResult) -> None:
        if self.judge is None:
            raise JudgeFailed("No judge model is available to this grading.")
        answer = await self.judge(grader.model, judge.messages(grader, sample, item), judge.params(grader))
        result.count(grader.model, answer.prompt_tokens, answer.completion_tokens)
        result.judge_answer = answer.text
        if isinstance(grader, ScoreModelGrader):
            result.reward = judge.read_score(answer.text, *judge.score_range(grader))
        else:
            result.label = judge.read_label(answer.text, grader.labels)
            result.reward = 1.0 if result.label in grader.passing_labels else 0.0

    async def _combine(self, grader: MultiGrader, sample: Sample, item: Any, result: GraderResult) -> None:
        named = grader.named_graders()
        subs = await asyncio.gather(*(self.grade(sub, sample, item) for sub in named.values()))
        for name, sub in zip(named, subs):
            result.absorb(sub)
            if not sub.failed:
                result.sub_rewards[name] = sub.reward
        if not result.failed:
            result.reward = formula.evaluate(grader.calculate_output, result.sub_rewards)
