"""OpenAI's graders, free of HTTP and SQL: what a grader gives a model's sample of a dataset item.

    from tunery.graders import Grading, Sample, check
    check(grader, python_graders=...)                       # refuse what cannot run (400 naming the field)
    result = await Grading(judge, sandbox).grade(grader, Sample.from_text(text), item)
    results = await Grading(judge, sandbox).grade_many(grader, [(sample, item), ...])  # judges batched

Modules: templates (the item and sample namespaces, {{...}}), similarity (string_check and
text_similarity's measures), judge (score_model and label_model: prompts, sampling, reading the
answer), sandbox (python graders in a limited process), formula (multi's calculate_output),
checks (what validate refuses), result (GraderResult and its error flags), grading (running any
grader on one or many samples)."""

from tunery.graders.checks import check, judge_models
from tunery.graders.grading import Grading
from tunery.graders.judge import Judge, JudgeAnswer, JudgeFailed, JudgeParams
from tunery.graders.result import GraderResult
from tunery.graders.sandbox import PythonSandbox
from tunery.graders.templates import Sample

__all__ = ["Grading", "GraderResult", "Judge", "JudgeAnswer", "JudgeFailed", "JudgeParams", "PythonSandbox", "Sample",
           "check", "judge_models"]
