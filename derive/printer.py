"""Step 6a, print: SymPy expressions to source code, strictly.

The printer knows a short list of nodes.  Anything else raises PrinterError
naming the expression; there is no fallback.  Numerically safe forms are part
of the printing: every exponential goes through a capped helper (its floor is
the generated constant EXP_FLOOR, its cap the kernels' max_exponent input), and
u(t) prints as a step helper with u(0) = 0.
A backend changes the spelling of functions, not the rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy as sp

from derive.rules import Node
from derive.spec import CappedExp, Sigmoid, Unclamped

# Binding strength, loosest first.
_ADD, _MUL, _NEG, _POW, _ATOM = range(5)


class PrinterError(ValueError):
    """An expression the printer does not support."""


@dataclass(frozen=True)
class Printer:
    """Prints +, -, *, /, integer powers and the functions in ``functions``."""

    functions: dict[type, str] = field(default_factory=dict)
    sqrt: str = "sqrt({0})"
    power: str = "{0}**{1}"
    # How an integer literal is spelled (C++ needs T(2): 1/2 is integer division there).
    integer: str = "{0}"

    def __call__(self, expr: sp.Expr) -> str:
        return self._print(sp.sympify(expr))[0]

    def _wrap(self, expr: sp.Expr, loosest: int) -> str:
        text, strength = self._print(expr)
        return f"({text})" if strength < loosest else text

    def _print(self, expr: sp.Expr) -> tuple[str, int]:
        if expr.is_Symbol:
            return expr.name, _ATOM
        if expr.is_Integer:
            text = self.integer.format(abs(int(expr)))
            return (text, _ATOM) if expr >= 0 else (f"-{text}", _NEG)
        if expr.is_Rational:
            text = f"{self.integer.format(abs(expr.p))} / {self.integer.format(expr.q)}"
            return (f"-{text}", _NEG) if expr < 0 else (text, _MUL)
        if expr.is_Float:
            return repr(float(expr)), _ATOM if expr >= 0 else _NEG
        if expr.is_Add:
            return self._print_add(expr), _ADD
        if expr.is_Mul or (expr.is_Pow and expr.exp.is_negative):
            return self._print_mul(expr)
        if expr.is_Pow:
            return self._print_pow(expr)
        if isinstance(expr, sp.Heaviside):
            if len(expr.args) != 2 or expr.args[1] != 0:
                raise PrinterError(f"only the step with u(0) = 0 is supported, got {expr}")
            return self.functions[sp.Heaviside].format(self(expr.args[0])), _ATOM
        if type(expr) in self.functions and not isinstance(expr, sp.Heaviside):
            args = [self(x) for x in expr.args]
            return self.functions[type(expr)].format(*args), _ATOM
        raise PrinterError(f"cannot print {type(expr).__name__} node: {expr}")

    def _print_add(self, expr: sp.Add) -> str:
        terms = expr.as_ordered_terms()
        parts = [self._wrap(terms[0], _ADD)]
        for term in terms[1:]:
            if term.could_extract_minus_sign():
                parts.append(f"- {self._wrap(-term, _MUL)}")
            else:
                parts.append(f"+ {self._wrap(term, _MUL)}")
        return " ".join(parts)

    def _print_mul(self, expr: sp.Expr) -> tuple[str, int]:
        if expr.could_extract_minus_sign():
            return f"-{self._wrap(-expr, _MUL)}", _NEG
        numerator, denominator = [], []
        for factor in sp.Mul.make_args(expr):
            if factor.is_Rational and not factor.is_Integer:
                if abs(factor.p) != 1:
                    numerator.append(sp.Integer(abs(factor.p)))
                denominator.append(sp.Integer(factor.q))
            elif factor.is_Pow and factor.exp.is_negative:
                denominator.append(factor.base ** (-factor.exp))
            else:
                numerator.append(factor)
        numerator.sort(key=sp.default_sort_key)
        one = self.integer.format(1)
        text = " * ".join(self._wrap(x, _MUL) for x in numerator) if numerator else one
        if denominator:
            if len(denominator) == 1:
                text += f" / {self._wrap(denominator[0], _POW)}"
            else:
                text += " / (" + " * ".join(self._wrap(x, _MUL) for x in denominator) + ")"
        return text, _MUL

    def _print_pow(self, expr: sp.Pow) -> tuple[str, int]:
        base, exponent = expr.args
        if exponent == sp.Rational(1, 2):
            return self.sqrt.format(self(base)), _ATOM
        if exponent.is_Integer and exponent > 0:
            return self.power.format(self._wrap(base, _ATOM), int(exponent)), _POW
        raise PrinterError(f"cannot print the power {expr}: only integer powers and sqrt")


TORCH = Printer(
    functions={
        CappedExp: "_exp({0}, {1})",
        Unclamped: "_unclamped({0}, {1})",
        sp.Abs: "torch.abs({0})",
        sp.sin: "torch.sin({0})",
        sp.cos: "torch.cos({0})",
        sp.sign: "torch.sign({0})",
        sp.Heaviside: "_step({0})",
        Sigmoid: "torch.sigmoid({0})",
    },
    sqrt="torch.sqrt({0})",
)


# Host C++ and CUDA share one spelling: the kernels are templates on the scalar
# type T, and the helpers (cexp, unclamped, step, sigmoid, ipow, sign) live in
# the generated header.
CPP = Printer(
    functions={
        CappedExp: "cexp({0}, {1})",
        Unclamped: "unclamped({0}, {1})",
        sp.Abs: "fabs({0})",
        sp.sin: "sin({0})",
        sp.cos: "cos({0})",
        sp.sign: "sign({0})",
        sp.Heaviside: "step({0})",
        Sigmoid: "sigmoid({0})",
    },
    sqrt="sqrt({0})",
    power="ipow<{1}>({0})",
    integer="T({0})",
)


# Triton: the formulas are @triton.jit device functions; the helpers (_exp,
# _unclamped, _step, _sign, _ipow, _sqrt) live in the generated module.
TRITON = Printer(
    functions={
        CappedExp: "_exp({0}, {1})",
        Unclamped: "_unclamped({0}, {1})",
        sp.Abs: "tl.abs({0})",
        sp.sin: "tl.sin({0})",
        sp.cos: "tl.cos({0})",
        sp.sign: "_sign({0})",
        sp.Heaviside: "_step({0})",
        Sigmoid: "tl.sigmoid({0})",
    },
    sqrt="_sqrt({0})",
    power="_ipow({0}, {1})",
)


# ---------------------------------------------------------------------------
# The classification rules (derive/rules.py), printed as written.

# Binding strength, loosest first: Python's (torch, Triton) and C++'s.
_PY_CMP, _PY_OR, _PY_AND, _PY_ADD, _PY_MUL, _PY_UNARY, _PY_ATOM = range(7)
_C_TERNARY, _C_OR, _C_AND, _C_EQ, _C_REL, _C_ADD, _C_MUL, _C_UNARY, _C_ATOM = range(9)

# op -> (format, binding, the least binding of each argument that needs no parentheses)
Table = dict[str, tuple[str, int, tuple[int, ...]]]


def _python_operators(call: dict[str, str]) -> Table:
    binary = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
    table: Table = {
        op: (f"{{0}} {symbol} {{1}}", _PY_MUL if op in ("mul", "div") else _PY_ADD, ())
        for op, symbol in binary.items()
    }
    for op, (text, binding, _) in table.items():
        table[op] = (text, binding, (binding, binding + 1))
    for op, symbol in {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "=="}.items():
        table[op] = (f"{{0}} {symbol} {{1}}", _PY_CMP, (_PY_OR, _PY_OR))
    table["and"] = ("{0} & {1}", _PY_AND, (_PY_AND, _PY_ADD))
    table["or"] = ("{0} | {1}", _PY_OR, (_PY_OR, _PY_AND))
    table["neg"] = ("-{0}", _PY_UNARY, (_PY_UNARY,))
    table["not"] = ("~{0}", _PY_UNARY, (_PY_UNARY,))
    # A guard that passes its denominator through keeps it parenthesised.
    table["guard"] = ("{1}", _PY_ATOM, (_PY_CMP, _PY_ATOM))
    for op, text in call.items():
        table[op] = (text, _PY_ATOM, (_PY_CMP,) * 3)
    return table


@dataclass(frozen=True)
class RulePrinter:
    """Prints a rule with its operations in the rule's order and association,
    parenthesised by the language's binding strengths; an operation not in
    ``operations`` is an error."""

    operations: Table
    # How a real constant is spelled (of the float, with float_constants);
    # index constants are plain integers.
    real: str = "{0!r}"
    float_constants: bool = False
    # Division by a power of two: the exact product with its inverse, or None.
    by_power_of_two: str | None = None

    def __call__(self, node: Node, kind: str = "real") -> str:
        return self._print(node, kind)[0]

    def _print(self, node: Node, kind: str) -> tuple[str, int]:
        top = max(binding for _, binding, _ in self.operations.values())
        if node.op == "var":
            return node.args[0], top
        if node.op == "const":
            value = node.args[0]
            if kind == "index":
                return str(int(value)), top
            return self.real.format(float(value) if self.float_constants else value), top
        if node.op == "div" and self.by_power_of_two and _power_of_two(node.args[1]):
            inverse = 1 / node.args[1].args[0]
            numerator = self._wrap(node.args[0], kind, self.operations["mul"][2][0])
            return self.by_power_of_two.format(numerator, inverse), self.operations["mul"][1]
        if node.op not in self.operations:
            raise PrinterError(f"cannot print the rule operation {node.op!r}: {node}")
        text, binding, least = self.operations[node.op]
        # A where's branches have the statement's kind; constants elsewhere are real.
        args = [
            self._wrap(x, kind if node.op == "where" and i else "real", least[i])
            for i, x in enumerate(node.args)
        ]
        return text.format(*args), binding

    def _wrap(self, node: Node, kind: str, least: int) -> str:
        text, binding = self._print(node, kind)
        return f"({text})" if binding < least else text


def _power_of_two(node: Node) -> bool:
    if node.op != "const":
        return False
    value = node.args[0]
    return value > 0 and math.frexp(value)[0] == 0.5


TORCH_RULES = RulePrinter(
    _python_operators(
        {
            "abs": "torch.abs({0})",
            "sign": "torch.sign({0})",
            "where": "torch.where({0}, {1}, {2})",
        }
    )
)

# Correctly rounded in both dtypes: "/" of float32 may be approximate on a GPU
# (_div), and a division by a power of two is the exact product with its inverse.
# Outside the band a guarded denominator is 1: no 0/0 is computed.
_TRITON_OPERATIONS = _python_operators(
    {
        "abs": "tl.abs({0})",
        "sign": "_sign({0})",
        "where": "tl.where({0}, {1}, {2})",
        "div": "_div({0}, {1})",
        "guard": "tl.where({0}, {1}, 1.0)",
    }
)
TRITON_RULES = RulePrinter(_TRITON_OPERATIONS, float_constants=True, by_power_of_two="{0} * {1!r}")


CPP_RULES = RulePrinter(
    {
        "add": ("{0} + {1}", _C_ADD, (_C_ADD, _C_MUL)),
        "sub": ("{0} - {1}", _C_ADD, (_C_ADD, _C_MUL)),
        "mul": ("{0} * {1}", _C_MUL, (_C_MUL, _C_UNARY)),
        "div": ("{0} / {1}", _C_MUL, (_C_MUL, _C_UNARY)),
        "lt": ("{0} < {1}", _C_REL, (_C_REL, _C_ADD)),
        "le": ("{0} <= {1}", _C_REL, (_C_REL, _C_ADD)),
        "gt": ("{0} > {1}", _C_REL, (_C_REL, _C_ADD)),
        "ge": ("{0} >= {1}", _C_REL, (_C_REL, _C_ADD)),
        "eq": ("{0} == {1}", _C_EQ, (_C_EQ, _C_REL)),
        "and": ("{0} && {1}", _C_AND, (_C_AND, _C_EQ)),
        "or": ("{0} || {1}", _C_OR, (_C_OR, _C_AND)),
        "neg": ("-{0}", _C_UNARY, (_C_UNARY,)),
        "not": ("!{0}", _C_UNARY, (_C_UNARY,)),
        "abs": ("std::abs({0})", _C_ATOM, (_C_TERNARY,)),
        "sign": ("rule_sign({0})", _C_ATOM, (_C_TERNARY,)),
        # The projections are computed only in the band: no guard needed.
        "guard": ("{1}", _C_ATOM, (_C_TERNARY, _C_ATOM)),
        "where": ("{0} ? {1} : {2}", _C_TERNARY, (_C_UNARY, _C_TERNARY, _C_TERNARY + 1)),
    },
    real="S({0})",
)
