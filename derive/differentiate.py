"""Step 4, differentiate: the value and its derivatives in t, a, b, c, c1, c2.

Dirac terms.  d/dt of u(t)*f(t) is u(t)*f'(t) + f(t)*delta(t) = u(t)*f'(t) +
f(0)*delta(t).  The zero-state step response has f(0) = 0, so the delta term
vanishes exactly and the derivative has no artificial bump at t = 0.  A delta
term that survives (none does with the current specification) is replaced by
the paper's smooth approximation s*exp(-s*t)/(1 + exp(-s*t))^2 and recorded.

The critically damped subspace.  Its value is the exact solution with
c = b^2/(4a).  The solution of the ODE is analytic in (a, b, c) across the
discriminant's zero, so its partial derivatives there are well defined but are
*not* the derivatives of the critical formula (in which c has been eliminated).
We take them as the limit nu -> 0 of the overdamped solution's partial
derivatives, nu = sqrt(b^2/(4a^2) - c/a), and check that the overdamped value
tends to the critical value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from derive.solve import Solution, solve
from derive.spec import (
    CRITICAL,
    DIFF_VARIABLES,
    OVERDAMPED_SYMMETRIC,
    Sigmoid,
    a,
    b,
    c,
    capped,
    mu,
    nu,
    s,
    t,
)

OUTPUT_NAMES = ("y", "dy_dt", "dy_da", "dy_db", "dy_dc", "dy_dc1", "dy_dc2")


@dataclass(frozen=True)
class Derivation:
    solution: Solution
    # Output name -> expression, in OUTPUT_NAMES order.
    outputs: dict[str, sp.Expr]
    # Where a Dirac term survived and was smoothed (output names).
    smoothed_dirac: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Outputs dy/dp for a coefficient p that is zero here: the gravitation terms
    # of gravitation.py, not derivatives of y (which does not depend on p).
    gravitation: tuple[str, ...] = ()

    @property
    def subspace(self):
        return self.solution.subspace


def smooth_delta(x: sp.Expr) -> sp.Expr:
    """The paper's approximation of delta(x): the derivative of sigmoid(s*x)."""
    return s * Sigmoid(s * x) * (1 - Sigmoid(s * x))


def resolve_dirac(expr: sp.Expr) -> tuple[sp.Expr, bool]:
    """Rewrite f(t)*delta(t) as f(0)*delta(t); smooth what survives.

    Returns the expression and whether a Dirac term survived.
    """
    delta = sp.DiracDelta(t)
    if not expr.has(sp.DiracDelta):
        return expr, False
    marker = sp.Dummy("delta")
    marked = expr.subs(delta, marker)
    if marked.has(sp.DiracDelta) or sp.diff(marked, marker, 2) != 0:
        raise ValueError(f"expected a term linear in DiracDelta(t), got {expr}")
    weight = sp.simplify(sp.diff(marked, marker).subs(t, 0))
    rest = marked.subs(marker, 0)
    if weight == 0:
        return rest, False
    return rest + weight * smooth_delta(t), True


def _jacobian(subspace, p: sp.Symbol) -> dict[sp.Symbol, sp.Expr]:
    """d(auxiliary)/dp for each auxiliary quantity, written in the parametrisation.

    A root q of F(q; a, b, c) = 0 has dq/dp = -(dF/dp)/(dF/dq).
    """
    jacobian = {}
    for q, definition in subspace.auxiliaries.items():
        if q in subspace.implicit:
            polynomial = subspace.implicit[q]
            derivative = -sp.diff(polynomial, p) / sp.diff(polynomial, q)
        else:
            derivative = sp.diff(definition, p)
        jacobian[q] = sp.simplify(derivative.subs(subspace.parametrisation))
    return jacobian


def coefficient_partial(value: sp.Expr, subspace, p: sp.Symbol) -> sp.Expr:
    """dy/dp for p in (a, b, c) by the chain rule through the auxiliary quantities.

    ``value`` is written in the parametrisation: it depends on p explicitly only if
    the parametrisation keeps p, and otherwise through the auxiliaries.
    """
    explicit = sp.S.Zero if p in subspace.parametrisation else sp.diff(value, p)
    through = sum((sp.diff(value, q) * dq for q, dq in _jacobian(subspace, p).items()), sp.S.Zero)
    return explicit + through


def _critical_partials(critical: Solution) -> dict[str, sp.Expr]:
    """Partial derivatives in a, b, c at the discriminant's zero, as limits."""
    neighbour = OVERDAMPED_SYMMETRIC
    value = solve(neighbour).value
    r = next(iter(critical.subspace.auxiliaries))
    limit_value = sp.limit(value, nu, 0).subs(mu, r)
    difference = sp.simplify((limit_value - critical.value).rewrite(sp.exp))
    if difference != 0:
        raise ValueError(
            f"{CRITICAL}: the overdamped solution does not tend to the critical one "
            f"(difference {difference})"
        )
    partials = {}
    for name, p in (("dy_da", a), ("dy_db", b), ("dy_dc", c)):
        chain = coefficient_partial(value, neighbour, p)
        limit = sp.factor_terms(sp.simplify(sp.limit(chain, nu, 0).subs(mu, r)))
        partials[name] = capped(limit)
    return partials


def differentiate(solution: Solution, gravitation: tuple = ()) -> Derivation:
    """The outputs of ``solution``; ``gravitation`` (GravitationTerm records of the
    subspace's zero coefficients) fill the outputs dy/dp that would be 0."""
    subspace = solution.subspace
    # Differentiate what the generated code computes: capped exponentials.
    value = capped(solution.value)
    outputs = {"y": value}
    smoothed = []
    for name, variable in zip(OUTPUT_NAMES[1:], DIFF_VARIABLES, strict=True):
        if variable in (a, b, c):
            derivative = coefficient_partial(value, subspace, variable)
        else:
            derivative = sp.diff(value, variable)
        derivative, survived = resolve_dirac(derivative)
        if survived:
            smoothed.append(name)
        outputs[name] = derivative
    notes = []
    if subspace.name == CRITICAL:
        outputs.update(_critical_partials(solution))
        notes.append(
            "dy/da, dy/db and dy/dc are the exact partial derivatives of the ODE's "
            "solution at the discriminant's zero (limits of the overdamped ones), not "
            "the derivatives of this formula, in which c = b^2/(4a) is eliminated. "
            "They are those of the uncapped solution, evaluated with capped exponentials."
        )
    for term in gravitation:
        if outputs[term.output] != 0:
            raise ValueError(
                f"{subspace.name}: {term.output} is not identically zero, so it needs no "
                "gravitation term"
            )
        outputs[term.output] = capped(term.capped_value)
    if gravitation:
        kind = {True: "outer perturbation term", False: "exact dy/dp at 0"}
        kinds = ", ".join(f"{term.output} ({kind[term.raises_order]})" for term in gravitation)
        notes.append(
            f"Gravitation: {kinds} solve the ODE with that coefficient's term added to "
            "first order, L z = -D^k y with zero initial conditions (derive/gravitation.py); "
            "y itself does not depend on it."
        )
    return Derivation(
        solution, outputs, tuple(smoothed), tuple(notes), tuple(term.output for term in gravitation)
    )
