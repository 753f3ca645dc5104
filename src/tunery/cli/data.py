"""`tunery validate` (the training-file report) and `tunery prepare-data` (the legacy tool)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from tunery.catalog import EMBEDDED_MODEL, Catalog
from tunery.cli.common import DataDir, fail, settings
from tunery.data.formats import FORMAT_NAMES, Problem
from tunery.data.prepare import (
    Fix,
    PrepareError,
    classification_classes,
    output_paths,
    prepare,
    read_table,
    shown,
    split,
    write_jsonl,
)
from tunery.data.stats import Distribution, TokenStats
from tunery.data.validate import Report
from tunery.training.estimate import FileCheck

SHOWN_PROBLEMS = 50  # rows per table; --json gives all that were kept


def validate(
    file: Annotated[Path, typer.Argument(help="A JSONL training file")],
    model: Annotated[str, typer.Option("--model", "-m", help="Base model whose tokenizer counts the tokens")] = EMBEDDED_MODEL,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    estimate: Annotated[bool, typer.Option(help="Measure training speed here to estimate the time")] = True,
    data_dir: DataDir = None,
) -> None:
    """Check a training file as a fine-tuning job would, with token statistics; exit 1 on errors."""
    catalog = Catalog.from_settings(settings(data_dir=data_dir))
    if not catalog.exists(model):
        fail(f"unknown base model {model!r}; known: {', '.join(catalog.names())}")
    report = check_file(file, model, catalog, measure=estimate, as_json=as_json)
    raise typer.Exit(0 if report.ok else 1)


def check_file(file: Path, model: str, catalog: Catalog, *, measure: bool = False, as_json: bool = False,
               console: Console | None = None) -> Report:
    """The `tunery validate` report on a file, printed (to `console`: `tunery jobs create --json`
    keeps its standard output for JSON)."""
    if not file.is_file():
        fail(f"{file}: no such file")
    checked = catalog.check_file(model, file, measure=measure)
    if as_json:
        typer.echo(json.dumps(checked.as_dict(model), indent=2))
    else:
        _print_report(file, model, checked, console or Console())
    return checked.report


def prepare_data(
    file: Annotated[Path, typer.Argument(help="CSV, TSV, XLSX, JSON or JSONL with prompt and completion columns")],
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Output file [default FILE_prepared.jsonl]")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Accept every recommended fix without asking")] = False,
    to_chat: Annotated[bool, typer.Option("--to-chat", help="Write the chat format (messages) instead")] = False,
) -> None:
    """Analyse prompt/completion data, offer fixes, and write it as JSONL ready for fine-tuning."""
    if not file.is_file():
        fail(f"{file}: no such file")

    def accept(fix: Fix) -> bool:
        question = f"- [Recommended] {fix.action}"
        if yes:
            typer.echo(f"{question} [Y/n]: Y")
            return True
        return typer.confirm(question, default=True)

    try:
        frame = read_table(file)
        typer.echo("Analyzing...")
        prepared = prepare(frame, _announce(accept), note=lambda text: typer.echo(f"- {text}"), to_chat=to_chat)
    except PrepareError as exc:
        fail(str(exc))
    wants_split = prepared.task == "classification" and accept(
        Fix("split", "", "Split into training and validation sets", False, lambda f: f))
    paths = output_paths(file, out, wants_split)
    sets = split(prepared.data) if wants_split else (prepared.data,)
    for data, path in zip(sets, paths):
        write_jsonl(data, path, to_chat=to_chat)
    typer.echo(f"\nWrote {' and '.join(f'`{p}`' for p in paths)} ({len(prepared.data)} examples).")
    _print_usage(paths, prepared, to_chat)


def _announce(accept):
    """Print each finding (and each necessary fix) before asking about it."""

    def announce(fix: Fix) -> bool:
        typer.echo(f"- {fix.finding}")
        if fix.necessary:
            typer.echo(f"- [Necessary] {fix.action}")
            return True
        return accept(fix)

    return announce


def _print_usage(paths: list[Path], prepared, to_chat: bool) -> None:
    valid = f" -v {paths[1]}" if len(paths) > 1 else ""
    typer.echo(f"\nCheck it with:\n> tunery validate {paths[0]}\n\nNow use it when fine-tuning:\n"
               f"> tunery jobs create -t {paths[0]}{valid} -m {EMBEDDED_MODEL} --follow")
    if len(paths) > 1:
        n_classes, positive = classification_classes(prepared.data)
        typer.echo(f"\nThis is a classification task with {n_classes} classes"
                   + (f" (positive class {positive!r})" if positive else "")
                   + "; ask the model with max_tokens=1 and read the class from the first token.")
    if not to_chat and prepared.separator:
        typer.echo(f"\nAfter you've fine-tuned a model, end every prompt with the separator `{shown(prepared.separator)}` "
                   "so that the model starts the completion rather than continuing the prompt.")
    if not to_chat and prepared.stop:
        typer.echo(f"Pass stop=[{json.dumps(prepared.stop)}] so that generated text ends at the expected place.")


def _print_report(file: Path, model: str, checked: FileCheck, console: Console) -> None:
    report, stats, cost = checked.report, checked.stats, checked.cost
    pairs = report.format == "preference"
    if pairs:
        console.print(f"[bold]{file}[/]: {FORMAT_NAMES['preference']} data, {report.examples} valid pairs "
                      f"(tokens counted with {model}, context {stats.context_length})")
        console.print("Each pair trains on both outputs, each after the input; train it with "
                      "`tunery jobs create --method dpo`.")
    else:
        console.print(f"[bold]{file}[/]: {report.format or 'unknown'} format, {report.examples} valid examples "
                      f"(tokens counted with {model}, context {stats.context_length})")
    for title, problems, count, style in (("Errors", report.errors, report.error_count, "red"),
                                          ("Warnings", report.warnings, report.warning_count, "yellow")):
        if count:
            console.print(_problem_table(f"{title} ({count})", problems, style))
    if stats.examples:
        console.print(_stats_table(stats, pairs))
        console.print(f"{'Pairs' if pairs else 'Examples'} over the context (truncated): {stats.too_long}")
        console.print(f"Default epochs (auto): {cost.n_epochs}; billed tokens: {cost.billed_tokens:,} "
                      f"({stats.tokens:,} tokens x {cost.n_epochs} epochs)")
    if cost.estimated_seconds is not None:
        console.print(f"Estimated training time on this machine: {_duration(cost.estimated_seconds)}")
    console.print("[green]The file is valid.[/]" if report.ok else f"[red]The file has {report.error_count} errors.[/]")


def _problem_table(title: str, problems: list[Problem], style: str) -> Table:
    table = Table(title=title, title_style=style, title_justify="left")
    for column in ("line", "code", "message"):
        table.add_column(column, overflow="fold")
    for problem in problems[:SHOWN_PROBLEMS]:
        table.add_row(str(problem.line or "-"), problem.code, problem.message)
    return table


def _stats_table(stats: TokenStats, pairs: bool = False) -> Table:
    table = Table(title="Per pair" if pairs else "Per example", title_justify="left")
    for column in ("", "min", "max", "mean", "median", "p5", "p95"):
        table.add_column(column, justify="right")
    rows: list[tuple[str, Distribution | None]]
    if pairs:
        rows = [("input messages", stats.messages_per_example),
                ("input tokens", stats.input_tokens_per_example),
                ("preferred output tokens", stats.preferred_tokens_per_example),
                ("non-preferred output tokens", stats.non_preferred_tokens_per_example),
                ("tokens (both sequences)", stats.tokens_per_example),
                ("trained tokens (both outputs)", stats.trained_tokens_per_example)]
    else:
        rows = [("messages", stats.messages_per_example), ("tokens", stats.tokens_per_example),
                ("trained tokens", stats.trained_tokens_per_example)]
    for name, dist in rows:
        if dist is not None:
            table.add_row(name, *(str(v) for v in (dist.min, dist.max, dist.mean, dist.median, dist.p5, dist.p95)))
    return table


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"
