"""Step 3, verify: every solution satisfies its ODE and its initial conditions.

Nothing reaches ``generated/`` unless this passes.  The check is symbolic: the
residual of the ODE, with its coefficients written in the subspace's root
parametrisation, is simplified to zero for t > 0 (right-hand side 1) and for
t < 0 (right-hand side 0), and the initial conditions are evaluated at t = 0.
The parametrisation is then checked to be consistent: substituting the
auxiliary quantities' definitions into it gives back a, b and c.
"""

from __future__ import annotations

import sympy as sp

from derive.solve import Solution
from derive.spec import Sigmoid, a, b, c, c1, c2, s, t


class VerificationError(RuntimeError):
    """A derived formula does not solve its ODE; names the subspace and the failure."""


def _is_zero(expr: sp.Expr) -> bool:
    expr = sp.simplify(sp.expand(expr.rewrite(sp.exp)))
    return expr == 0


def _in_subspace(subspace, expr: sp.Expr) -> sp.Expr:
    """expr under the subspace's conditions: its relation, its sign, nonzero symbols."""
    return expr.subs(subspace.relation).subs(subspace.witness).subs(subspace.nonzero_symbols())


def residuals(solution: Solution) -> dict[str, sp.Expr]:
    """The quantities that must vanish, by what they check."""
    subspace = solution.subspace
    A, B, C = (sp.sympify(x).subs(subspace.parametrisation) for x in subspace.coefficients())

    # Consistency of the parametrisation, where the subspace's nonzero
    # coefficients are known to be nonzero (sign(b)**2 = 1 needs b != 0).
    consistency = {
        f"parametrisation of {p}": _in_subspace(subspace, subspace.in_coefficients(expr) - p)
        for p, expr in subspace.parametrisation.items()
    }
    consistency.update(
        {
            f"{q} solves its defining equation": _in_subspace(
                subspace, subspace.in_coefficients(polynomial)
            )
            for q, polynomial in subspace.implicit.items()
        }
    )
    if subspace.order == 0:
        return {"c*y = sigmoid(s*t)": C * solution.value - Sigmoid(s * t)}

    def ode(y: sp.Expr) -> sp.Expr:
        return A * y.diff(t, 2) + B * y.diff(t) + C * y

    hom = solution.homogeneous
    zsr = solution.step_response
    checks = {
        **consistency,
        "ODE for t < 0 (right-hand side 0)": ode(hom),
        "ODE for t > 0 (right-hand side 1)": ode(hom + zsr) - 1,
        "y(0) = c1": (hom + zsr).subs(t, 0) - c1,
        "step response starts at rest: value": zsr.subs(t, 0),
    }
    if subspace.order == 2:
        checks["y'(0) = c2"] = (hom + zsr).diff(t).subs(t, 0) - c2
        checks["step response starts at rest: slope"] = zsr.diff(t).subs(t, 0)
    return checks


def verify(solution: Solution) -> None:
    name = solution.subspace.name
    for what, residual in residuals(solution).items():
        if not _is_zero(residual):
            raise VerificationError(
                f"subspace {name}: the derived solution fails '{what}'; "
                f"residual simplifies to {sp.simplify(residual)} instead of 0"
            )
    if solution.value.has(s) and solution.subspace.order != 0:
        raise VerificationError(f"subspace {name}: steepness s appears outside the sigmoid core")


def check_denominators(kernel) -> None:
    """No division by a quantity that can be zero inside the kernel's subspace.

    Per-element code must not divide at all (t can be anything); per-neuron code
    may divide only by quantities SymPy proves nonzero from the subspace's zero
    pattern and the signs of its auxiliary quantities.
    """
    subspace = kernel.subspace
    name = subspace.name
    for block in (kernel.value, kernel.derivatives):
        exprs = [e for _, e in block.assignments] + [e for e in block.results.values() if e]
        for expr in exprs:
            for power in expr.atoms(sp.Pow):
                if power.exp.is_negative:
                    raise VerificationError(f"subspace {name}: per-element division in {expr}")
    # Symbols of this subspace that are nonzero by its definition.
    nonzero = subspace.nonzero_symbols()
    # Auxiliary quantities are not assumed nonzero (only those declared positive
    # are): a factor must be proven nonzero from the coefficients below.
    # The nonzero coefficients in the parametrisation: a factor of their product
    # is nonzero too (mu + nu is a factor of c = a*(mu - nu)*(mu + nu), say).
    known = [p for p in nonzero if p in (a, b, c)]
    if subspace.sign in ("disc > 0", "disc < 0"):
        known.append(b**2 - 4 * a * c)
    product = sp.Mul(*(sp.sympify(p).subs(subspace.parametrisation) for p in known))

    def provably_nonzero(factor: sp.Expr) -> bool:
        if factor.subs(nonzero).is_zero is False:
            return True
        return sp.fraction(sp.cancel(product / factor))[1].free_symbols.isdisjoint(
            factor.free_symbols
        )

    definitions: dict[sp.Symbol, sp.Expr] = {}
    for symbol, expr in kernel.neuron.assignments:
        # CSE temporaries are expanded; auxiliary quantities stay symbols, whose
        # nonzero-ness follows from the parametrisation.
        if symbol not in subspace.auxiliaries:
            definitions[symbol] = expr.subs(definitions)
        for power in expr.atoms(sp.Pow):
            if not power.exp.is_negative:
                continue
            base = power.base.subs(definitions)
            if symbol not in subspace.auxiliaries:
                base = base.subs(subspace.parametrisation)
            _, factors = sp.factor_list(sp.together(base))
            if not all(provably_nonzero(f) for f, _ in factors):
                raise VerificationError(
                    f"subspace {name}: per-neuron division by {power.base} = {base}, "
                    "which is not provably nonzero in this subspace"
                )
