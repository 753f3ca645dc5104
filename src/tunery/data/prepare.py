"""The legacy `prepare_data` tool: read prompt/completion data from CSV, TSV, XLSX, JSON or
JSONL, find what would make fine-tuning worse, and offer fixes one by one (lower-case column
names, drop extra columns and empty completions, remove duplicates, add a common separator to
prompts, a leading space and a stop sequence to completions). Classification data can be split
into training and validation sets; prompt/completion data can be converted to the chat format.

Framework-free: the CLI decides, through `accept`, which optional fixes to apply."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

FIELDS = ["prompt", "completion"]
SEPARATOR_OPTIONS = ["\n\n###\n\n", "\n\n===\n\n", "\n\n---\n\n", "\n\n===>\n\n", "\n\n--->\n\n", " ->"]
STOP_OPTIONS = ["\n", " END", "***", "+++", "&&&", "$$$", "@@@", "%%%"]
CLASSIFICATION_MIN_PER_CLASS = 3  # classification when completions repeat this often on average
MAX_VALID_EXAMPLES = 1000  # the validation split: 20% of the data, at most this many
SPLIT_SEED = 42
READERS = {".csv": "csv", ".tsv": "tsv", ".xlsx": "xlsx", ".json": "json", ".jsonl": "jsonl"}


class PrepareError(ValueError):
    pass


@dataclass
class Fix:
    name: str  # stable: lower_case_columns, drop_extra_columns, drop_empty_completions, ...
    finding: str  # what is wrong
    action: str  # what the fix does
    necessary: bool  # applied always: the data cannot be used otherwise
    apply: Callable[[pd.DataFrame], pd.DataFrame]


@dataclass
class Prepared:
    data: pd.DataFrame
    task: str  # "classification" | "conditional generation" | "open-ended generation"
    notes: list[str]  # findings that need no fix
    applied: list[Fix]
    separator: str  # common suffix of the prompts ("" when none)
    stop: str  # common suffix of the completions ("" when none)


def read_table(path: Path) -> pd.DataFrame:
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise PrepareError(f"{path.name}: unsupported file type; use one of {', '.join(READERS)}")
    try:
        if kind in ("csv", "tsv"):
            frame = pd.read_csv(path, sep="," if kind == "csv" else "\t", dtype=str, keep_default_na=False)
        elif kind == "xlsx":
            frame = pd.read_excel(path, dtype=str, keep_default_na=False, engine="openpyxl")
        else:
            frame = pd.read_json(path, lines=kind == "jsonl", dtype=False, orient=None if kind == "jsonl" else "records")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise PrepareError(f"{path.name}: cannot be read as {kind.upper()}: {exc}") from None
    return frame.fillna("").astype(str)


Note = Callable[[str], None]
Check = Callable[[pd.DataFrame, Note], "Fix | None"]  # raises PrepareError when the data is unusable


def prepare(frame: pd.DataFrame, decide: Callable[[Fix], bool], *, note: Note = lambda text: None,
            to_chat: bool = False) -> Prepared:
    """Run every check in order, each on the data as the fixes before it left it. `decide` sees
    every fix found; its answer counts for the optional ones (necessary ones always apply).
    `note` receives findings that need no fix as they come. Separator, leading space and stop
    sequence matter only to completion models, so to_chat skips them."""
    notes: list[str] = []

    def noted(text: str) -> None:
        notes.append(text)
        note(text)

    noted(f"Your file contains {len(frame)} prompt-completion pairs")
    applied: list[Fix] = []
    checks: list[Check] = [_lower_case_columns, _extra_columns, _empty_completions, _task_note, _duplicates]
    if not to_chat:
        checks += [_separator, _leading_space, _stop_sequence]
    for check in checks:
        fix = check(frame, noted)
        if fix is not None and (decide(fix) or fix.necessary):
            frame = fix.apply(frame).reset_index(drop=True)
            applied.append(fix)
    return Prepared(frame[FIELDS], infer_task(frame), notes, applied,
                    common_suffix(frame["prompt"]), common_suffix(frame["completion"]))


def infer_task(frame: pd.DataFrame) -> str:
    if frame["prompt"].str.len().sum() == 0:
        return "open-ended generation"
    if frame["completion"].nunique() < len(frame) / CLASSIFICATION_MIN_PER_CLASS:
        return "classification"
    return "conditional generation"


def common_suffix(values: pd.Series) -> str:
    """The ending every value shares, when it looks deliberate: a marker such as `\\n\\n###\\n\\n`,
    ` END` or `.`, not letters that words happen to share ("Fast" and "Bright" end in "t")."""
    return re.sub(r"^\w+", "", _shared_suffix(list(values)))  # drop letters words share: " END" stays, "t" goes


def _shared_suffix(texts: list[str]) -> str:
    if not texts:
        return ""
    suffix = texts[0]
    for text in texts[1:]:
        while suffix and not text.endswith(suffix):
            suffix = suffix[1:]
    return suffix


def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation sets: 20% held out (at most MAX_VALID_EXAMPLES), seeded."""
    n_train = max(len(frame) - MAX_VALID_EXAMPLES, int(len(frame) * 0.8))
    train = frame.sample(n=n_train, random_state=SPLIT_SEED)
    return train, frame.drop(train.index)


def classification_classes(frame: pd.DataFrame) -> tuple[int, str | None]:
    """Number of classes, and the positive class (the most frequent) of a binary task."""
    counts = frame["completion"].value_counts()
    return len(counts), (counts.index[0] if len(counts) == 2 else None)


def output_paths(source: Path, out: Path | None, split_sets: bool) -> list[Path]:
    base = out.with_suffix("") if out else source.with_name(f"{source.stem}_prepared")
    if not split_sets:
        return [base.with_suffix(".jsonl")]
    return [base.with_name(f"{base.name}_train.jsonl"), base.with_name(f"{base.name}_valid.jsonl")]


def write_jsonl(frame: pd.DataFrame, path: Path, *, to_chat: bool = False) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for row in _records(frame, to_chat):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def _records(frame: pd.DataFrame, to_chat: bool) -> Iterator[dict]:
    for prompt, completion in zip(frame["prompt"], frame["completion"]):
        if to_chat:  # the chat template marks where turns start and end: no separators needed
            yield {"messages": [{"role": "user", "content": prompt.strip()},
                                {"role": "assistant", "content": completion.strip()}]}
        else:
            yield {"prompt": prompt, "completion": completion}


# the checks, in the legacy tool's order -----------------------------------------------------------
def _lower_case_columns(frame: pd.DataFrame, note: Note) -> Fix | None:
    renames = {}
    for field in FIELDS:
        if field in frame.columns:
            continue
        matches = [c for c in frame.columns if str(c).strip().lower() == field]
        if not matches:
            raise PrepareError(f"the `{field}` column/key is missing; name your columns `prompt` and `completion`")
        renames[matches[0]] = field
    if not renames:
        return None
    return Fix("lower_case_columns", f"Column/key names should be lower case: {list(renames)}",
               f"Lower-case column names to {list(renames.values())}", True, lambda f: f.rename(columns=renames))


def _extra_columns(frame: pd.DataFrame, note: Note) -> Fix | None:
    extra = [c for c in frame.columns if c not in FIELDS]
    if not extra:
        return None
    return Fix("drop_extra_columns", f"The file should hold exactly the columns `prompt` and `completion`; "
               f"additional ones: {extra}", f"Remove additional columns/keys: {extra}", True, lambda f: f[FIELDS])


def _empty_completions(frame: pd.DataFrame, note: Note) -> Fix | None:
    empty = frame["completion"].str.strip() == ""
    if not empty.any():
        return None
    rows = [int(i) for i in frame.index[empty]]
    return Fix("drop_empty_completions", f"`completion` should not be empty; these rows are: {rows}",
               f"Remove {len(rows)} rows with empty completions", True, lambda f: f[f["completion"].str.strip() != ""])


def _task_note(frame: pd.DataFrame, note: Note) -> None:
    task = infer_task(frame)
    if task == "classification":
        n, positive = classification_classes(frame)
        note(f"Based on your data it seems like you're fine-tuning a model for classification "
                     f"({n} classes{f', positive class {positive!r}' if positive else ''}); splitting it into "
                     "training and validation sets lets you measure how well the model does")
    else:
        note(f"Based on your data it seems like you're fine-tuning a model for {task}")
    return None


def _duplicates(frame: pd.DataFrame, note: Note) -> Fix | None:
    duplicated = frame.duplicated(subset=FIELDS)
    if not duplicated.any():
        return None
    rows = [int(i) for i in frame.index[duplicated]]
    return Fix("remove_duplicates", f"There are {len(rows)} duplicated prompt-completion pairs; these rows are: {rows}",
               f"Remove {len(rows)} duplicate rows", False, lambda f: f.drop_duplicates(subset=FIELDS))


def _separator(frame: pd.DataFrame, note: Note) -> Fix | None:
    if infer_task(frame) == "open-ended generation":
        return None
    suffix = common_suffix(frame["prompt"])
    if suffix:
        note(f"All prompts end with the separator `{shown(suffix)}`")
        return None
    separator = next((s for s in SEPARATOR_OPTIONS if not frame["prompt"].str.contains(s, regex=False).any()),
                     "\n\n### =>\n\n")
    return Fix("add_separator", "The prompts do not end with a common separator, which tells the model where "
               "the completion starts", f"Add the separator `{shown(separator)}` to all prompts", False,
               lambda f: f.assign(prompt=f["prompt"] + separator))


def _leading_space(frame: pd.DataFrame, note: Note) -> Fix | None:
    if frame["completion"].str.startswith(" ").all():
        return None
    return Fix("add_leading_space", "Completions should start with a space, which tokenizes better",
               "Add a space to the beginning of completions", False,
               lambda f: f.assign(completion=f["completion"].map(lambda c: c if c.startswith(" ") else " " + c)))


def _stop_sequence(frame: pd.DataFrame, note: Note) -> Fix | None:
    if infer_task(frame) != "conditional generation":  # a class needs no stop: max_tokens=1 ends it
        return None
    suffix = common_suffix(frame["completion"])
    if suffix:
        note(f"All completions end with the stop sequence `{shown(suffix)}`")
        return None
    stop = next((s for s in STOP_OPTIONS if not frame["completion"].str.contains(s, regex=False).any()), " [END]")
    return Fix("add_stop_sequence", "The completions do not end with a common stop sequence, which tells the "
               "model where to stop", f"Add the stop sequence `{shown(stop)}` to all completions", False,
               lambda f: f.assign(completion=f["completion"] + stop))


def shown(text: str) -> str:
    """Text with its newlines written as \\n, as people type separators."""
    return text.replace("\n", "\\n")
