"""Whether a grader can run, beyond its shape (which protocol.graders' types check): templates of
the item and sample namespaces, a multi grader's names and formula, a score range, labels, text-only
judge messages, python graders allowed here and whose source defines grade(sample, item), and no
cosine similarity (no embedding model is configured). A refusal is InvalidRequest (400) whose
param is the field's path under `param` ("grader.graders.exact.operation"). That the judge models
exist is for the caller to check (judge_models() lists them with their params)."""

from __future__ import annotations

import ast
import math

from tunery.errors import InvalidRequest
from tunery.graders import formula, templates
from tunery.graders.judge import reads_text_only
from tunery.protocol.graders import (MAX_SUB_GRADERS, AnyGrader, LabelModelGrader, MultiGrader, PythonGrader,
                                     ScoreModelGrader, StringCheckGrader, TextSimilarityGrader)

PYTHON_GRADERS_OFF = ("Python graders run code on this server, and they are off here: the server's operator turns "
                      "them on with TUNERY_PYTHON_GRADERS=on (each grader then runs in a sandboxed process).")


def check(grader: AnyGrader, *, python_graders: bool, param: str = "grader") -> None:
    """Refuse a grader that cannot run (InvalidRequest naming the field)."""
    if isinstance(grader, (StringCheckGrader, TextSimilarityGrader)):
        templates.check(grader.input, f"{param}.input")
        templates.check(grader.reference, f"{param}.reference")
    if isinstance(grader, TextSimilarityGrader) and grader.evaluation_metric == "cosine":
        raise InvalidRequest("The cosine metric compares embeddings, and no embedding model is configured on this "
                             "server: use fuzzy_match, bleu, gleu, meteor, rouge_1 to rouge_5 or rouge_l.",
                             param=f"{param}.evaluation_metric", code="embedding_model_not_configured")
    if isinstance(grader, (ScoreModelGrader, LabelModelGrader)):
        _check_judge(grader, param)
    if isinstance(grader, PythonGrader):
        _check_python(grader, python_graders, param)
    if isinstance(grader, MultiGrader):
        _check_multi(grader, python_graders, param)


def judge_models(grader: AnyGrader, param: str = "grader") -> list[tuple[str, str]]:
    """(param, model) of every judge model the grader calls."""
    if isinstance(grader, MultiGrader):
        return [found for name, sub in grader.named_graders().items()
                for found in judge_models(sub, _sub_param(grader, name, param))]
    if isinstance(grader, (ScoreModelGrader, LabelModelGrader)):
        return [(f"{param}.model", grader.model)]
    return []


def _check_judge(grader: ScoreModelGrader | LabelModelGrader, param: str) -> None:
    for index, message in enumerate(grader.input):
        where = f"{param}.input.{index}.content"
        if not reads_text_only(message):
            raise InvalidRequest("The judge models tunery serves read text: images and audio cannot be graded.",
                                 param=where)
        parts = message.content if isinstance(message.content, list) else [message.content]
        for text in (p if isinstance(p, str) else p.text for p in parts):
            templates.check(text, where)
    if isinstance(grader, ScoreModelGrader) and grader.range is not None:
        if len(grader.range) != 2 or not all(math.isfinite(x) for x in grader.range) or grader.range[0] >= grader.range[1]:
            raise InvalidRequest(f"range must be two finite numbers [low, high] with low < high, not {grader.range}.",
                                 param=f"{param}.range")
    if isinstance(grader, LabelModelGrader):
        if len(set(grader.labels)) != len(grader.labels):
            raise InvalidRequest("labels must not repeat a label.", param=f"{param}.labels")
        outside = [label for label in grader.passing_labels if label not in grader.labels]
        if outside:
            raise InvalidRequest(f"passing_labels must be among labels: {outside} are not.",
                                 param=f"{param}.passing_labels")


def _check_python(grader: PythonGrader, python_graders: bool, param: str) -> None:
    if not python_graders:
        raise InvalidRequest(PYTHON_GRADERS_OFF, param=f"{param}.type", code="python_graders_disabled")
    try:
        tree = ast.parse(grader.source, filename="grader.py")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise InvalidRequest(f"The grader's source is not Python{where}: {getattr(exc, 'msg', exc)}.",
                             param=f"{param}.source") from None
    if not any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "grade" for node in tree.body):
        raise InvalidRequest("The grader's source must define a function grade(sample, item) that returns a number.",
                             param=f"{param}.source")


def _check_multi(grader: MultiGrader, python_graders: bool, param: str) -> None:
    named = grader.named_graders()
    if not named or len(named) > MAX_SUB_GRADERS:
        raise InvalidRequest(f"graders must hold 1 to {MAX_SUB_GRADERS} graders.", param=f"{param}.graders")
    for name, sub in named.items():
        if not name.isidentifier():
            raise InvalidRequest(f"{name!r} cannot be named in calculate_output: a grader's name there is a word of "
                                 f"letters, digits and underscores.", param=_sub_param(grader, name, param))
        check(sub, python_graders=python_graders, param=_sub_param(grader, name, param))
    try:
        formula.parse(grader.calculate_output, named)
    except formula.FormulaError as exc:
        raise InvalidRequest(str(exc), param=f"{param}.calculate_output") from None


def _sub_param(grader: MultiGrader, name: str, param: str) -> str:
    return f"{param}.graders.{name}" if isinstance(grader.graders, dict) else f"{param}.graders"
