"""Step 5, CSE: hoist what is constant per neuron, then share subexpressions.

Every output of a subspace is first split into per-neuron quantities (maximal
subexpressions free of t: products and sums of coefficients, frequencies,
...) and per-element work (whatever involves t).  The per-neuron quantities get
the names k0, k1, ... and are computed once per neuron by one CSE over all of
them; the per-element work gets one CSE over the value and all six derivatives
together (temporaries x0, x1, ...) and a second, smaller one over the value
alone for the inference path.  Names are assigned in traversal order of SymPy's
canonical argument order, so the output does not depend on PYTHONHASHSEED.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.differentiate import OUTPUT_NAMES, Derivation
from derive.spec import t


@dataclass(frozen=True)
class Block:
    """Straight-line code: assignments in order, then the named results."""

    assignments: tuple[tuple[sp.Symbol, sp.Expr], ...]
    # Result name -> expression over the assignments (None: identically zero).
    results: dict[str, sp.Expr | None]

    def operation_count(self, name: str) -> int:
        """Operations needed for one result, its temporaries included."""
        expr = self.results[name]
        if expr is None:
            return 0
        definitions = dict(self.assignments)
        needed: set[sp.Symbol] = set()
        stack = [expr]
        while stack:
            for symbol in stack.pop().free_symbols:
                if symbol in definitions and symbol not in needed:
                    needed.add(symbol)
                    stack.append(definitions[symbol])
        return int(sp.count_ops(expr)) + sum(int(sp.count_ops(definitions[x])) for x in needed)

    @property
    def total_operations(self) -> int:
        own = sum(int(sp.count_ops(e)) for _, e in self.assignments)
        return own + sum(int(sp.count_ops(e)) for e in self.results.values() if e is not None)


@dataclass(frozen=True)
class Kernel:
    """A subspace's code: per-neuron quantities, the value, and the derivatives."""

    derivation: Derivation
    # Inputs of the per-neuron block, in order (coefficients, then s).
    neuron_inputs: tuple[sp.Symbol, ...]
    neuron: Block  # results are named k0, k1, ...
    value: Block  # result "y"
    derivatives: Block  # results OUTPUT_NAMES

    @property
    def subspace(self):
        return self.derivation.subspace


class _Hoister:
    """Replace each maximal t-free subexpression by a per-neuron symbol."""

    def __init__(self) -> None:
        self.table: dict[sp.Expr, sp.Symbol] = {}

    def symbol_for(self, expr: sp.Expr) -> sp.Symbol:
        if expr not in self.table:
            self.table[expr] = sp.Symbol(f"k{len(self.table)}", real=True)
        return self.table[expr]

    def __call__(self, expr: sp.Expr) -> sp.Expr:
        if expr.is_Number:
            return expr
        if not expr.has(t):
            return self.symbol_for(expr)
        if expr.is_Add or expr.is_Mul:
            fixed = [x for x in expr.args if not x.has(t)]
            varying = [self(x) for x in expr.args if x.has(t)]
            if fixed:
                fixed_part = expr.func(*fixed)
                if not fixed_part.is_Number:
                    fixed_part = self.symbol_for(fixed_part)
                varying.insert(0, fixed_part)
            return expr.func(*varying)
        if expr.is_Atom:
            return expr
        return expr.func(*(self(x) for x in expr.args))


def _cse(exprs: list[sp.Expr], prefix: str) -> tuple[list[tuple[sp.Symbol, sp.Expr]], list]:
    symbols = sp.numbered_symbols(prefix, real=True)
    replacements, reduced = sp.cse(exprs, symbols=symbols, order="canonical")
    return replacements, reduced


def _element_block(outputs: dict[str, sp.Expr]) -> Block:
    names = [n for n, e in outputs.items() if e != 0]
    replacements, reduced = _cse([outputs[n] for n in names], "x")
    results: dict[str, sp.Expr | None] = {n: None for n in outputs}
    results.update(zip(names, reduced, strict=True))
    return Block(tuple(replacements), results)


def _kernel_inputs(derivation: Derivation) -> tuple[sp.Symbol, ...]:
    from derive.spec import COEFFICIENTS, max_exponent, s

    return (*COEFFICIENTS, s, max_exponent)


def optimise(derivation: Derivation) -> Kernel:
    subspace = derivation.subspace
    hoist = _Hoister()
    hoisted = {name: hoist(sp.sympify(expr)) for name, expr in derivation.outputs.items()}
    value = _element_block({"y": hoisted["y"]})
    derivatives = _element_block({name: hoisted[name] for name in OUTPUT_NAMES})

    # Per-neuron block: auxiliary quantities first (in a, b, c), then the hoisted
    # quantities over coefficients and auxiliaries, with one CSE over all of them.
    auxiliaries = list(subspace.auxiliaries.items())
    definitions = [expr for expr in hoist.table]
    replacements, reduced = _cse(definitions, "n")
    assignments = [*auxiliaries, *replacements]
    results = {
        str(symbol): expr for symbol, expr in zip(hoist.table.values(), reduced, strict=True)
    }
    neuron = Block(tuple(assignments), results)
    return Kernel(derivation, _kernel_inputs(derivation), neuron, value, derivatives)
