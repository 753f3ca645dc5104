"""`tunery evals`: run, from a JSONL test file and a grader, an eval on one or more models (one
run each, through the Evals API) and print their pass rates and mean scores side by side; list
the evals and show one's runs.

A test file's lines are either chat examples ({"messages": [..., {"role": "assistant", "content":
ANSWER}]}: the model is asked the messages before the last, and the last's content is the item's
`answer`) or items ({"item": {...}}: the model is asked the item's `messages`, or --prompt, a
template over the item)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from tunery.cli.client import ApiKey, AsJson, BaseUrl, api_errors, client, console, emit, table, when
from tunery.cli.common import fail

POLL_SECONDS = 1.0
FINISHED = ("completed", "failed", "canceled")
GRADER_TYPES = ("string_check", "text_similarity")  # --grader by name; any criterion from a JSON file

app = typer.Typer(help="Evals: run one on models and compare them, list, show.", no_args_is_help=True)


def read_items(path: Path) -> list[dict[str, Any]]:
    """The test file's items: chat examples become {"messages": [...before the answer], "answer": ...}."""
    if not path.is_file():
        fail(f"{path}: no such file", 2)
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            fail(f"{path}, line {number}: not JSON ({exc})", 2)
        if isinstance(row, dict) and isinstance(row.get("item"), dict):
            items.append(row["item"])
            continue
        messages = row.get("messages") if isinstance(row, dict) else None
        if not (isinstance(messages, list) and len(messages) > 1 and isinstance(messages[-1], dict)
                and messages[-1].get("role") == "assistant" and isinstance(messages[-1].get("content"), str)):
            fail(f"{path}, line {number}: neither an item ({{\"item\": {{...}}}}) nor chat messages ending with the "
                 "expected assistant answer", 2)
        items.append({"messages": messages[:-1], "answer": messages[-1]["content"]})
    if not items:
        fail(f"{path}: no items", 2)
    return items


def grader_criteria(grader: str, reference: str, operation: str, metric: str, pass_threshold: float | None,
                    sample_input: str) -> list[dict[str, Any]]:
    """The testing criteria: a grader type with its options, or a JSON file of one criterion or a list."""
    path = Path(grader)
    if path.suffix == ".json" or path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            fail(f"--grader {grader}: not a readable JSON file ({exc})", 2)
        criteria = loaded if isinstance(loaded, list) else [loaded]
        if not criteria or not all(isinstance(c, dict) for c in criteria):
            fail(f"--grader {grader}: a grader is a JSON object (or a list of them)", 2)
        return criteria
    if grader == "string_check":
        return [{"type": "string_check", "name": "string_check", "input": sample_input, "reference": reference,
                 "operation": operation}]
    if grader == "text_similarity":
        return [{"type": "text_similarity", "name": "text_similarity", "input": sample_input, "reference": reference,
                 "evaluation_metric": metric, "pass_threshold": 0.5 if pass_threshold is None else pass_threshold}]
    fail(f"--grader must be {' or '.join(GRADER_TYPES)}, or a JSON file of a grader; not {grader!r}", 2)


def _input_messages(items: list[dict[str, Any]], prompt: str | None, system: str | None) -> dict[str, Any]:
    if prompt is not None:
        template = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return {"type": "template", "template": template}
    if system is not None:
        fail("--system goes with --prompt (items with messages bring their own)", 2)
    if not all(isinstance(item.get("messages"), list) for item in items):
        fail("these items hold no chat `messages`: say what the model is asked with --prompt, e.g. "
             "--prompt '{{item.question}}'", 2)
    return {"type": "item_reference", "item_reference": "item.messages"}


@app.command("run")
def evals_run(
    test_file: Annotated[Path, typer.Argument(help="JSONL: chat examples (the last answer expected) or {\"item\": ...}")],
    models: Annotated[list[str], typer.Option("-m", "--model", help="A model to evaluate; repeat to compare")],
    grader: Annotated[str, typer.Option("--grader", help="string_check, text_similarity, or a grader JSON file")] = "string_check",
    reference: Annotated[str, typer.Option("--reference", help="What the answer is compared with")] = "{{item.answer}}",
    operation: Annotated[str, typer.Option("--operation", help="string_check: eq, ne, like, ilike")] = "eq",
    metric: Annotated[str, typer.Option("--metric", help="text_similarity: fuzzy_match, bleu, rouge_l, ...")] = "fuzzy_match",
    pass_threshold: Annotated[float | None, typer.Option("--pass-threshold", help="text_similarity: a pass at least this")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="What the model is asked: a template, e.g. '{{item.q}}'")] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system message before --prompt")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="At most this many tokens an answer")] = 128,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.0,
    name: Annotated[str | None, typer.Option("--name", help="The eval's name [default: the file's]")] = None,
    base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Run an eval of the test file on each model (one run each), wait, and print each model's pass rate and mean scores."""
    items = read_items(test_file)
    criteria = grader_criteria(grader, reference, operation, metric, pass_threshold, "{{sample.output_text}}")
    input_messages = _input_messages(items, prompt, system)
    common = sorted(set.intersection(*(set(item) for item in items)))
    api = client(base_url, api_key)
    with api_errors():
        evaluation = api.evals.create(name=name or test_file.stem, testing_criteria=criteria, data_source_config={
            "type": "custom", "item_schema": {"type": "object", "required": common}, "include_sample_schema": True})
        runs = [api.evals.runs.create(evaluation.id, name=model, data_source={
            "type": "completions", "model": model, "input_messages": input_messages,
            "sampling_params": {"max_completion_tokens": max_tokens, "temperature": temperature},
            "source": {"type": "file_content", "content": [{"item": item} for item in items]}}) for model in models]
    if not as_json:
        console.print(f"Eval {evaluation.id}: {len(items)} items, runs {', '.join(r.id for r in runs)}")
    runs = _wait(api, evaluation.id, runs, as_json)
    if as_json:
        typer.echo(json.dumps([r.model_dump() for r in runs], indent=2))
    else:
        console.print(_comparison(api, evaluation.id, runs))
        _console_link(runs)
    unfinished = [r for r in runs if r.status != "completed"]
    for run in unfinished:
        typer.echo(f"Error: run {run.id} on {run.model} {run.status}"
                   + (f": {run.error.message}" if run.error else ""), err=True)
    if unfinished:
        raise typer.Exit(1)


def _wait(api, eval_id: str, runs: list, as_json: bool) -> list:
    """The runs once each has ended, with a progress bar per model meanwhile."""
    try:
        with api_errors(), Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    console=console, disable=as_json, transient=True) as progress:
            bars = [progress.add_task(run.model, total=run.result_counts.total) for run in runs]
            while True:
                runs = [api.evals.runs.retrieve(run.id, eval_id=eval_id) for run in runs]
                for bar, run in zip(bars, runs):
                    counts = run.result_counts
                    progress.update(bar, completed=counts.passed + counts.failed + counts.errored)
                if all(run.status in FINISHED for run in runs):
                    return runs
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        typer.echo(f"\nStopped waiting; the runs go on. See them with: tunery evals show {eval_id}", err=True)
        raise typer.Exit(130) from None


def _comparison(api, eval_id: str, runs: list):
    """A row per run: its model, counts, pass rate and each criterion's mean score over the items graded."""
    scores: list[dict[str, list[float]]] = []
    with api_errors():
        for run in runs:
            by_criterion: dict[str, list[float]] = {}
            for item in api.evals.runs.output_items.list(run.id, eval_id=eval_id, limit=100):
                for result in item.results:
                    by_criterion.setdefault(result.name, []).append(result.score)
            scores.append(by_criterion)
    names = list(dict.fromkeys(name for found in scores for name in found))
    rows = []
    for run, found in zip(runs, scores):
        counts = run.result_counts
        graded = counts.passed + counts.failed + counts.errored
        rate = f"{counts.passed / graded:.1%}" if graded else "-"
        means = [f"{sum(found[n]) / len(found[n]):.3f}" if found.get(n) else "-" for n in names]
        rows.append([run.model, run.status, counts.total, counts.passed, counts.failed, counts.errored, rate, *means])
    return table(["model", "status", "items", "passed", "failed", "errored", "pass rate",
                  *(f"mean {n}" for n in names)], rows)


def _console_link(runs: list) -> None:
    """Where the console shows these runs side by side, with the items where they differ."""
    if runs and runs[0].report_url:
        console.print(f"Side by side, with the items where the runs differ: {runs[0].report_url}", soft_wrap=True)


@app.command("list")
def evals_list(limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 20,
               base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List the evals, newest first."""
    with api_errors():
        found = client(base_url, api_key).evals.list(limit=limit, order="desc").data
    emit(found, as_json, table(["id", "name", "criteria", "created"],
                               [[e.id, e.name, ", ".join(c.name for c in e.testing_criteria), when(e.created_at)]
                                for e in found]))


@app.command("show")
def evals_show(eval_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """An eval's runs side by side: each model's pass rate and mean scores."""
    api = client(base_url, api_key)
    with api_errors():
        runs = list(api.evals.runs.list(eval_id, limit=100))
    if as_json:
        emit(runs, as_json, None)
    else:
        console.print(_comparison(api, eval_id, runs))
        _console_link(runs)
