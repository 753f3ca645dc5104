"""A multi grader's `calculate_output`: a formula over its sub-graders' rewards, read by a small
evaluator of Python's syntax tree (never eval()). It allows what OpenAI's multi grader documents:
numbers, the sub-graders' names, + - * / and powers (** or ^), parentheses, unary minus, and the
functions min, max, abs, sqrt, log, exp, floor, ceil and clip(x, low, high). Anything else is
refused when the grader is checked; arithmetic that has no value (a division by zero, the log of
a negative number, an overflow) fails when it is computed."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Iterable, Mapping

BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: math.pow,
}
UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def _clip(x: float, low: float, high: float) -> float:
    return min(max(x, low), high)


FUNCTIONS: dict[str, tuple[Callable[..., float], int, int | None]] = {  # name: (function, fewest, most arguments)
    "min": (min, 1, None), "max": (max, 1, None), "abs": (abs, 1, 1), "sqrt": (math.sqrt, 1, 1),
    "log": (math.log, 1, 1), "exp": (math.exp, 1, 1), "floor": (math.floor, 1, 1), "ceil": (math.ceil, 1, 1),
    "clip": (_clip, 3, 3),
}


class FormulaError(ValueError):
    """The formula is not one this evaluator reads, or has no value."""


def parse(formula: str, names: Iterable[str]) -> ast.Expression:
    """The formula's tree, every part of it checked; FormulaError saying what is not allowed."""
    try:
        # OpenAI's formulas write powers as ^: read as ** (its precedence; formulas hold no strings)
        tree = ast.parse(formula.strip().replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise FormulaError(f"calculate_output is not a formula: {getattr(exc, 'msg', exc)}") from None
    known = set(names)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.Load, *BINARY, *UNARY)):
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY or isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
            continue
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            continue
        if isinstance(node, ast.Name):
            if node.id in known or (node.id in FUNCTIONS and id(node) in called):
                continue
            raise FormulaError(f"calculate_output names {node.id!r}, which is none of the graders "
                               f"({', '.join(sorted(known)) or 'none'}) nor a function ({', '.join(FUNCTIONS)})")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords:
            _, fewest, most = FUNCTIONS[node.func.id]
            if len(node.args) < fewest or (most is not None and len(node.args) > most):
                raise FormulaError(f"{node.func.id}() takes {fewest if fewest == most else f'at least {fewest}'} "
                                   f"argument{'s' if fewest != 1 else ''} in calculate_output")
            continue
        raise FormulaError(f"calculate_output may hold only numbers, grader names, + - * / ** ^, parentheses and "
                           f"the functions {', '.join(FUNCTIONS)}: {ast.unparse(node)!r} is none of them")
    return tree


def evaluate(formula: str, values: Mapping[str, float]) -> float:
    """The formula's value with each grader's name standing for its reward."""
    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return float(values[node.id])
        if isinstance(node, ast.BinOp):
            return BINARY[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp):
            return UNARY[type(node.op)](value(node.operand))
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return float(FUNCTIONS[node.func.id][0](*(value(a) for a in node.args)))

    tree = parse(formula, values)
    try:
        result = value(tree)
    except (ArithmeticError, ValueError, RecursionError) as exc:
        raise FormulaError(f"calculate_output has no value: {exc}") from None
    if not math.isfinite(result):
        raise FormulaError(f"calculate_output is {result}, not a finite number")
    return result
