"""Step 5b, classify: one ordered classification program from the spec's rules.

The program is straight-line code over the classified coefficients and epsilon:
zero flags, the coefficients zeroed (and the all-zero fallback), the named
quantities, the band, then the subspace index, assigned subspace by subspace
(the conditions are disjoint, so their order does not matter), and per critical
rule the band's projection. Every backend prints the same statements
(derive/printer.py's RulePrinter), so each rounds every step the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from derive import rules
from derive.rules import Node
from derive.spec import CLASSIFICATION, CLASSIFIED, SUBSPACES, Classification, Subspace, by_name

INDEX = "index"  # the program's subspace index, -1 where no subspace holds
BAND = "band"
ALL_ZERO = "all_zero"


@dataclass(frozen=True)
class Assign:
    """``target = expr``; ``declare`` on the target's first assignment."""

    target: str
    expr: Node
    kind: str  # "bool", "real" or "index"
    declare: bool
    note: str = ""  # what the statement decides, for a comment


@dataclass(frozen=True)
class Program:
    inputs: tuple[str, ...]  # the classified coefficients, assigned in place
    epsilon: str
    body: tuple[Assign, ...]
    # Per critical rule, in the order of its index: the band's projection.
    critical: tuple[tuple[str, tuple[Assign, ...]], ...]


def zero_flag(name: str) -> str:
    return f"z{name}"


def _all(conditions: list[Node]) -> Node:
    return reduce(lambda x, y: x & y, conditions)


def pattern(subspace: Subspace) -> Node:
    """The subspace's zero pattern as flags: ``za & zb & ~zc``."""
    flags = [rules.var(zero_flag(p.name)) for p in CLASSIFIED]
    return _all([f if z else ~f for f, z in zip(flags, subspace.zero, strict=True)])


def _guarded(node: Node, condition: Node) -> Node:
    """Every denominator but a constant guarded by ``condition`` (see rules.guard)."""
    if node.op in ("var", "const"):
        return node
    args = tuple(_guarded(x, condition) for x in node.args)
    if node.op == "div" and args[1].op != "const":
        args = (args[0], rules.guard(condition, args[1]))
    return Node(node.op, args)


def _projection(rule: str, assignments: dict[str, Node]) -> tuple[Assign, ...]:
    """The band's projection as statements, in order: the spec assigns at once,
    so no value may read a coefficient assigned before it."""
    band = rules.var(BAND)
    done: set[str] = set()
    statements = []
    for target, value in assignments.items():
        if rules.names(value) & done:
            raise ValueError(
                f"critical rule {rule!r}: {target} reads {sorted(rules.names(value) & done)}, "
                "assigned before it in the same projection"
            )
        done.add(target)
        expr = rules.where(band, _guarded(value, band), rules.var(target))
        statements.append(Assign(target, expr, "real", False, rule))
    return tuple(statements)


def classification_program(
    classification: Classification = CLASSIFICATION, subspaces: tuple[Subspace, ...] = SUBSPACES
) -> Program:
    names = [p.name for p in CLASSIFIED]
    declared = {*names, "epsilon"}
    body: list[Assign] = []

    def assign(target: str, expr: Node, kind: str, note: str = "") -> None:
        body.append(Assign(target, expr, kind, target not in declared, note))
        declared.add(target)

    flags = {p: rules.var(zero_flag(p)) for p in names}
    for p in names:
        assign(zero_flag(p), abs(rules.var(p)) < classification.zero_below, "bool")
    all_zero = rules.var(ALL_ZERO)
    assign(ALL_ZERO, _all(list(flags.values())), "bool")
    for p in names:
        value = rules.where(flags[p], 0, rules.var(p))
        if p in classification.fallback:
            value = rules.where(all_zero, classification.fallback[p], value)
        assign(p, value, "real")
    for p in classification.fallback:
        assign(zero_flag(p), flags[p] & ~all_zero, "bool")
    for name, definition in classification.quantities.items():
        assign(name, definition, "real")

    band = classification.band
    critical = by_name(band.subspace)
    assign(BAND, _all([pattern(critical), *rules.conjuncts(band.inside)]), "bool")
    assign(INDEX, rules.const(-1), "index")
    index = rules.var(INDEX)
    for i, subspace in enumerate(subspaces):
        if subspace.name == band.subspace:
            condition = rules.var(BAND)
        else:
            parts = [pattern(subspace)]
            if subspace.zero == critical.zero:  # the band comes first
                parts.append(~rules.var(BAND))
            test = subspace.classified_by or subspace.sign
            if test is not None:
                parts.append(test)
            condition = _all(parts)
        assign(INDEX, rules.where(condition, i, index), "index", subspace.name)
    projections = tuple(
        (rule, _projection(rule, assignments)) for rule, assignments in band.projections.items()
    )
    return Program(tuple(names), "epsilon", tuple(body), projections)
