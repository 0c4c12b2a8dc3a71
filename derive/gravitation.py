"""Step 2b, gravitation: a singular subspace's gradient in each of its zero coefficients.

In a subspace where p in (a, b, c) is zero, y does not depend on p, so its
gradient in p is zero and p can never leave zero (the paper's "singularity").
Outward gravitation gives p a gradient anyway. Here that gradient is derived:
it is z_p, the first-order change of the solution when the term p * D^k y
(D^2 y for a, D y for b, y for c) is added to the subspace's ODE with the same
initial conditions,

    L z_p = -D^k y,    z_p(0) = 0  (and z_p'(0) = 0 in second order),

where L is the subspace's own operator and y its solution. y + p z_p is then
the solution with p present, to first order in p:

* where adding p keeps the ODE's order (b or c next to a nonzero a; c in a
  first-order subspace), the solution is analytic in p at 0 and z_p is exactly
  its derivative dy/dp there;
* where adding p raises the order (a next to a first-order or sigmoid neuron, b
  next to the sigmoid), z_p is the regular-perturbation (outer) term of
  y = y0 + p*z_p + O(p^2): the change "as if p were present", without the fast
  boundary-layer mode e^(-b t / a), without a matching point and without a
  2x2 solve. In first order the right-hand side -y'' has a Dirac term at 0
  (y' jumps by 1/b there), so z_p jumps by -1/b^2 at t = 0.

Solved like the solution (solve.py): z = z_h + u(t) z_s with z_h from the
homogeneous part (an analytic function of t, used for t < 0 too) and z_s from
the step response, both by inverse Laplace transform. In the sigmoid subspace
(c y = sigmoid(s t)) the equation is algebraic: z = -D^k y / c.

The capped function. The kernels compute y with every exponential capped,
exp(min(r t, max_exponent)), and the gradients of the other coefficients are
the derivatives of that capped function. z_p follows it too. Adding p moves
each root r of y's characteristic polynomial P by rho = -r^k / P'(r) to first
order, so each mode q(t) e^(r t) of y contributes the secular term
rho t q(t) e^(r t) to z_p: the derivative of e^(r t) in r. Where the cap is
active the capped mode does not depend on r, so that term is switched off
there, as CappedExp's own derivative switches off (Unclamped(r t)). Without
this, a first-order neuron with |b| near epsilon got (c/b)^2/b * t * e^4 from a
flat region (|dy/da| up to 1e8). The split of z into secular and amplitude
terms is checked in verify.py: what remains of each mode after the secular
term has no higher power of t than y's own mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.solve import LAPLACE, Solution, inverse_laplace, modal_form, transforms
from derive.spec import Unclamped, a, b, c, max_exponent, step, t

# The derivative of y that coefficient p multiplies in the ODE.
DERIVATIVE_ORDER = {a: 2, b: 1, c: 0}
OUTPUT_NAME = {a: "dy_da", b: "dy_db", c: "dy_dc"}


@dataclass(frozen=True)
class GravitationTerm:
    """z_p of one zero coefficient p, in the subspace's root parametrisation."""

    coefficient: sp.Symbol
    # z for t < 0 (analytic, used for all t), and what u(t) switches on for t > 0.
    homogeneous: sp.Expr
    step_part: sp.Expr
    # Whether adding p raises the ODE's order (then z is the outer perturbation
    # term, otherwise the exact derivative dy/dp at p = 0).
    raises_order: bool
    # The secular terms rho t q(t) e^(r t) of z_h and z_s, one per mode of y
    # (see the module docstring); zero where y has no exponential mode.
    secular_homogeneous: sp.Expr = sp.S.Zero
    secular_step: sp.Expr = sp.S.Zero

    @property
    def value(self) -> sp.Expr:
        """z_p of the uncapped ODE (what verify.py checks against the ODE)."""
        return self.homogeneous + step(t) * self.step_part

    @property
    def capped_value(self) -> sp.Expr:
        """z_p of the capped function: each secular term only where its mode's cap
        is inactive."""
        return _switch_secular(self.homogeneous, self.secular_homogeneous) + step(
            t
        ) * _switch_secular(self.step_part, self.secular_step)

    @property
    def output(self) -> str:
        return OUTPUT_NAME[self.coefficient]


def modes(expr: sp.Expr) -> dict[sp.Expr, sp.Expr]:
    """{rate r: q(t)} for expr = sum q(t) e^(r t) + q_0(t) (key 0), expr in modal form."""
    expr = sp.expand(expr, power_exp=False)
    exponentials = sorted(expr.atoms(sp.exp), key=sp.default_sort_key)
    collected = sp.collect(expr, exponentials, evaluate=False)
    result: dict[sp.Expr, sp.Expr] = {}
    for key, q in collected.items():
        if key == 1:
            rate = sp.S.Zero
        else:
            rate = sp.cancel(key.args[0] / t)
            if rate.has(t) or not isinstance(key, sp.exp):
                raise ValueError(f"{key} is not a mode exp(r*t)")
        result[rate] = result.get(rate, sp.S.Zero) + q
    return result


def root_shift(characteristic: sp.Expr, rate: sp.Expr, k: int) -> sp.Expr:
    """rho = dr/dp of the root r of P(L) + p L^k at p = 0: -r^k / P'(r)."""
    return sp.cancel(-(rate**k) / sp.diff(characteristic, LAPLACE).subs(LAPLACE, rate))


def secular_terms(y_part: sp.Expr, characteristic: sp.Expr, k: int) -> sp.Expr:
    """sum over the exponential modes q(t) e^(r t) of y_part of rho t q(t) e^(r t)."""
    return sum(
        (
            root_shift(characteristic, rate, k) * t * q * sp.exp(rate * t)
            for rate, q in modes(y_part).items()
            if rate != 0
        ),
        sp.S.Zero,
    )


def _switch_secular(z: sp.Expr, secular: sp.Expr) -> sp.Expr:
    """z's amplitude terms plus each secular term rho t q e^(r t) times Unclamped(r t)."""
    if secular == 0:
        return z
    switched = sum(
        (
            sp.factor(q) * sp.exp(rate * t) * Unclamped(rate * t, max_exponent)
            for rate, q in modes(secular).items()
        ),
        sp.S.Zero,
    )
    return modal_form(z - secular) + switched


def gravitation_terms(solution: Solution) -> tuple[GravitationTerm, ...]:
    subspace = solution.subspace
    terms = []
    for p, zero in zip((a, b, c), subspace.zero, strict=True):
        if not zero:
            continue
        k = DERIVATIVE_ORDER[p]
        if subspace.order == 0:
            # c*z = -D^k y, with y = sigmoid(s*t)/c.
            z = -sp.diff(solution.value, t, k) / c
            terms.append(GravitationTerm(p, z, sp.S.Zero, True))
            continue
        L = LAPLACE
        characteristic, initial = transforms(subspace)
        h = solution.homogeneous
        # Transform of h^(k): L^k H - sum_j L^(k-1-j) h^(j)(0), H = initial/characteristic.
        transform = L**k * initial / characteristic - sum(
            (L ** (k - 1 - j) * sp.diff(h, t, j).subs(t, 0) for j in range(k)), sp.S.Zero
        )
        z_h = inverse_laplace(-transform / characteristic)
        # The step part from rest at 0-: -L^k P / characteristic, P = 1/(L characteristic);
        # its Dirac terms (first order, k = 2) are in the transform.
        z_s = inverse_laplace(-(L ** (k - 1)) / characteristic**2)
        terms.append(
            GravitationTerm(
                p,
                z_h,
                z_s,
                subspace.order < k,
                secular_terms(h, characteristic, k),
                secular_terms(solution.step_response, characteristic, k),
            )
        )
    return tuple(terms)
