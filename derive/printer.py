"""Step 6a, print: SymPy expressions to source code, strictly.

The printer knows a short list of nodes.  Anything else raises PrinterError
naming the expression; there is no fallback.  Numerically safe forms are part
of the printing: every exponential goes through a capped helper (its floor is
the generated constant EXP_FLOOR, its cap the kernels' max_exponent input), and
u(t) prints as a step helper with u(0) = 0.
A backend changes the spelling of functions, not the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

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
