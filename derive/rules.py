"""The rule language: expressions over named quantities that keep their exact tree.

The classification rules (which subspace a neuron is in, the critical band and
its projections; see spec.py) are written in it.  Unlike a SymPy expression, a
rule keeps the association it was written with (``4 * a * c`` is ``(4*a)*c``),
so every backend rounds it the same way, step for step.  A rule is evaluated
three ways: printed by a backend's :class:`derive.printer.RulePrinter`, exactly
through :func:`to_sympy` (the tests' independent reading), and in Python floats
through :func:`evaluate` (the tests' samplers).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

import sympy as sp

Operand = Union["Node", int, float]

# Each operation's kind of result.
_BOOLEAN = {"lt", "le", "gt", "ge", "eq", "and", "or", "not"}


@dataclass(frozen=True)
class Node:
    """An operation (``op``) on nodes, or a leaf: ``var`` (args: name) or ``const``
    (args: the number)."""

    op: str
    args: tuple

    @property
    def boolean(self) -> bool:
        """Whether the operation's result is a truth value (a variable's kind is
        known only to the program that assigns it)."""
        return self.op in _BOOLEAN

    def __add__(self, other: Operand) -> Node:
        return Node("add", (self, _node(other)))

    def __radd__(self, other: Operand) -> Node:
        return Node("add", (_node(other), self))

    def __sub__(self, other: Operand) -> Node:
        return Node("sub", (self, _node(other)))

    def __rsub__(self, other: Operand) -> Node:
        return Node("sub", (_node(other), self))

    def __mul__(self, other: Operand) -> Node:
        return Node("mul", (self, _node(other)))

    def __rmul__(self, other: Operand) -> Node:
        return Node("mul", (_node(other), self))

    def __truediv__(self, other: Operand) -> Node:
        return Node("div", (self, _node(other)))

    def __rtruediv__(self, other: Operand) -> Node:
        return Node("div", (_node(other), self))

    def __neg__(self) -> Node:
        return Node("neg", (self,))

    def __abs__(self) -> Node:
        return Node("abs", (self,))

    def __lt__(self, other: Operand) -> Node:
        return Node("lt", (self, _node(other)))

    def __le__(self, other: Operand) -> Node:
        return Node("le", (self, _node(other)))

    def __gt__(self, other: Operand) -> Node:
        return Node("gt", (self, _node(other)))

    def __ge__(self, other: Operand) -> Node:
        return Node("ge", (self, _node(other)))

    def __and__(self, other: Node) -> Node:
        return Node("and", (self, other))

    def __or__(self, other: Node) -> Node:
        return Node("or", (self, other))

    def __invert__(self) -> Node:
        return Node("not", (self,))


def _node(x: Operand) -> Node:
    return x if isinstance(x, Node) else const(x)


def var(name: str) -> Node:
    """A quantity by name: a coefficient, a setting, a named intermediate or flag."""
    return Node("var", (name,))


def const(value: int | float) -> Node:
    return Node("const", (value,))


def eq(x: Operand, y: Operand) -> Node:
    return Node("eq", (_node(x), _node(y)))


def sign(x: Node) -> Node:
    """-1, 0 or 1."""
    return Node("sign", (x,))


def where(condition: Node, x: Operand, y: Operand) -> Node:
    return Node("where", (condition, _node(x), _node(y)))


def guard(condition: Node, x: Node) -> Node:
    """x, a denominator, where ``condition`` holds; elsewhere any nonzero value
    (the quotient is discarded there: a backend may put 1 to avoid 0/0)."""
    return Node("guard", (condition, x))


def names(node: Node) -> set[str]:
    """The variables a rule reads."""
    if node.op == "var":
        return {node.args[0]}
    if node.op == "const":
        return set()
    return set().union(*(names(x) for x in node.args))


def substitute(node: Node, values: dict[str, Node]) -> Node:
    """The rule with named variables replaced by rules."""
    if node.op == "var":
        return values.get(node.args[0], node)
    if node.op == "const":
        return node
    return Node(node.op, tuple(substitute(x, values) for x in node.args))


def conjuncts(node: Node) -> list[Node]:
    """The conditions of a conjunction (of one node that is none: itself)."""
    if node.op == "and":
        return [*conjuncts(node.args[0]), *conjuncts(node.args[1])]
    return [node]


def terms(node: Node) -> list[Node]:
    """The summands of a sum or difference (of one node that is neither: itself)."""
    if node.op in ("add", "sub"):
        return [*terms(node.args[0]), *terms(node.args[1])]
    return [node]


_SYMPY: dict[str, Callable[..., Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
    "neg": operator.neg,
    "abs": sp.Abs,
    "sign": sp.sign,
    "lt": sp.Lt,
    "le": sp.Le,
    "gt": sp.Gt,
    "ge": sp.Ge,
    "eq": sp.Eq,
    "and": sp.And,
    "or": sp.Or,
    "not": sp.Not,
    "where": lambda cond, x, y: sp.Piecewise((x, cond), (y, True)),
    "guard": lambda cond, x: x,
}


def to_sympy(node: Node, symbols: dict[str, sp.Basic]) -> sp.Basic:
    """The rule as a SymPy expression or relational, exact; ``symbols`` gives each
    variable (a symbol, or a number to evaluate at)."""
    if node.op == "var":
        return symbols[node.args[0]]
    if node.op == "const":
        return sp.nsimplify(node.args[0])
    return _SYMPY[node.op](*(to_sympy(x, symbols) for x in node.args))


_FLOAT: dict[str, Callable[..., Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
    "neg": operator.neg,
    "abs": abs,
    "sign": lambda x: math.copysign(1.0, x) if x else 0.0,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
    "and": lambda x, y: x and y,
    "or": lambda x, y: x or y,
    "not": operator.not_,
    "where": lambda cond, x, y: x if cond else y,
    "guard": lambda cond, x: x,
}


def evaluate(node: Node, values: dict[str, float]):
    """The rule in Python floats (numbers or numpy arrays, elementwise for + - * /
    and comparisons only)."""
    if node.op == "var":
        return values[node.args[0]]
    if node.op == "const":
        return node.args[0]
    return _FLOAT[node.op](*(evaluate(x, values) for x in node.args))


_LABEL = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "="}


def label(node: Node) -> str:
    """A short human reading of a condition, as the report shows it: ``ac > 0``."""
    if node.op == "var":
        return node.args[0]
    if node.op == "const":
        return f"{node.args[0]:g}"
    if node.op in _LABEL:
        return f"{label(node.args[0])} {_LABEL[node.op]} {label(node.args[1])}"
    if node.op == "mul" and all(x.op == "var" for x in node.args):
        return "".join(label(x) for x in node.args)
    raise ValueError(f"no label for the rule {node}")
