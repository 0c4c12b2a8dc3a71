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
from derive.spec import Sigmoid, a, as_sympy, b, c, c1, c2, s, t


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


def gravitation_residuals(solution: Solution, terms) -> dict[str, sp.Expr]:
    """What must vanish for each gravitation term z_p (see gravitation.py):
    L z = -D^k y on each side of 0, z(0) = 0 (and z'(0) = 0 in second order)
    from the left, and the jumps at 0 that the distributional equation demands."""
    from derive.gravitation import DERIVATIVE_ORDER

    subspace = solution.subspace
    A, B, C = (sp.sympify(x).subs(subspace.parametrisation) for x in subspace.coefficients())
    checks: dict[str, sp.Expr] = {}
    for term in terms:
        p, k = term.coefficient, DERIVATIVE_ORDER[term.coefficient]
        label = f"gravitation in {p}"
        if subspace.order == 0:
            checks[f"{label}: c*z = -D^{k} y"] = C * term.value + sp.diff(solution.value, t, k)
            continue

        def ode(f: sp.Expr) -> sp.Expr:
            return A * f.diff(t, 2) + B * f.diff(t) + C * f

        h, zsr = solution.homogeneous, solution.step_response
        z_h, z_s = term.homogeneous, term.step_part
        checks[f"{label}: L z = -D^{k} y for t < 0"] = ode(z_h) + sp.diff(h, t, k)
        checks[f"{label}: L z = -D^{k} y for t > 0"] = ode(z_h + z_s) + sp.diff(h + zsr, t, k)
        checks[f"{label}: z(0) = 0"] = z_h.subs(t, 0)
        if subspace.order == 2:
            # -D^k y has no Dirac term (k <= 1, y continuous): z and z' are continuous.
            checks[f"{label}: z'(0) = 0"] = z_h.diff(t).subs(t, 0)
            checks[f"{label}: no jump in z at 0"] = z_s.subs(t, 0)
            checks[f"{label}: no jump in z' at 0"] = z_s.diff(t).subs(t, 0)
        else:
            # b [z] = -[D^(k-1) y] at 0, where y' jumps by the step response's slope.
            jump = zsr.diff(t).subs(t, 0) if k == 2 else sp.S.Zero
            checks[f"{label}: the jump of z at 0"] = B * z_s.subs(t, 0) + jump
    return checks


def secular_excess(solution: Solution, terms) -> dict[str, int]:
    """For each gravitation term and mode e^(r t) of y: how many powers of t the
    term's amplitude part (z's mode minus its secular term rho t q e^(r t)) has
    beyond y's own mode. Must be 0 for every mode: then the secular term is all
    of z's growth in t, which is what the capped z switches off (gravitation.py)."""
    from derive.gravitation import modes

    excess: dict[str, int] = {}
    parts = (
        ("homogeneous", solution.homogeneous),
        ("step", solution.step_response),
    )
    for term in terms:
        z_parts = {"homogeneous": term.homogeneous, "step": term.step_part}
        secular = {"homogeneous": term.secular_homogeneous, "step": term.secular_step}
        for part, y_part in parts:
            y_modes, z_modes = modes(y_part), modes(z_parts[part])
            s_modes = modes(secular[part])
            for rate, q in y_modes.items():
                if rate == 0:
                    continue
                amplitude = sp.expand(z_modes.get(rate, sp.S.Zero) - s_modes.get(rate, sp.S.Zero))
                degree = lambda e: sp.Poly(e, t).degree() if e != 0 else -1  # noqa: E731
                label = f"gravitation in {term.coefficient}, {part} part, mode exp({rate}*t)"
                excess[label] = max(0, degree(amplitude) - degree(sp.expand(q)))
    return excess


def verify_gravitation(solution: Solution, terms) -> None:
    name = solution.subspace.name
    for what, residual in gravitation_residuals(solution, terms).items():
        if not _is_zero(residual):
            raise VerificationError(
                f"subspace {name}: the derived {what} fails; "
                f"residual simplifies to {sp.simplify(residual)} instead of 0"
            )
    for what, excess in secular_excess(solution, terms).items():
        if excess:
            raise VerificationError(
                f"subspace {name}: {what}: the secular term does not account for z's "
                f"growth in t ({excess} more powers of t than y's mode); the capped "
                "gravitation term would not follow the capped function"
            )


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
    # The left side of a strict sign condition (b^2 - 4ac in the discriminant's subspaces).
    if subspace.sign is not None and subspace.sign.op in ("gt", "lt"):
        known.append(as_sympy(subspace.sign.args[0]))
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
