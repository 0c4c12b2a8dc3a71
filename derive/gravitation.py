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
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.solve import LAPLACE, Solution, inverse_laplace, transforms
from derive.spec import a, b, c, step, t

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

    @property
    def value(self) -> sp.Expr:
        return self.homogeneous + step(t) * self.step_part

    @property
    def output(self) -> str:
        return OUTPUT_NAME[self.coefficient]


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
        terms.append(GravitationTerm(p, z_h, z_s, subspace.order < k))
    return tuple(terms)
