"""Step 2, solve: the closed form of every subspace, derived by SymPy.

The solution is split as the paper's equation (2) suggests:

    y(t) = homogeneous(t) + u(t) * zero_state_step_response(t)

* ``homogeneous`` solves the ODE with right-hand side 0 and carries the initial
  conditions y(0) = c1, y'(0) = c2 (only y(0) = c1 in first order).  It is an
  analytic function of t and is used for t < 0 as well.
* ``step_response`` solves the ODE with right-hand side 1 from rest:
  y(0) = y'(0) = 0.  It is switched on by u(t), so the whole solution is
  continuous with a continuous derivative at t = 0.

Both come from the inverse Laplace transform and are kept in the subspace's
root parametrisation (for example omega = sqrt(c/a) instead of c), where the
formulas are short and their derivatives follow by the chain rule.  They are
rewritten in modal form: a sum of terms with one
``exp(rate * t)`` each, so that capping an exponent caps one mode and never a
factor that another exponential would cancel.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.spec import Sigmoid, Subspace, c, c1, c2, s, step, t

_laplace = sp.Symbol("laplace_s")
# The Laplace variable, for the steps that solve further ODEs (gravitation.py).
LAPLACE = _laplace


@dataclass(frozen=True)
class Solution:
    """A subspace's closed form, in its root parametrisation (see Subspace)."""

    subspace: Subspace
    homogeneous: sp.Expr
    step_response: sp.Expr

    @property
    def basis(self) -> tuple[sp.Expr, sp.Expr]:
        """The homogeneous solutions multiplied by c1 and c2 (y(0) = 1 resp. y'(0) = 1)."""
        return (self.homogeneous.diff(c1), self.homogeneous.diff(c2))

    @property
    def value(self) -> sp.Expr:
        """y(t), in the root parametrisation."""
        if self.subspace.order == 0:
            # The sigmoid core is the whole solution; it is not switched by u(t).
            return self.step_response
        return self.homogeneous + step(t) * self.step_response

    def in_coefficients(self, expr: sp.Expr) -> sp.Expr:
        """Replace the auxiliary quantities by their definitions in a, b, c."""
        return self.subspace.in_coefficients(expr)


def _inverse_laplace(transform: sp.Expr) -> sp.Expr:
    result = sp.inverse_laplace_transform(transform, _laplace, t)
    # The transform is one-sided: it returns f(t)*Heaviside(t); we want f itself.
    return result.subs(sp.Heaviside(t), 1)


def modal_form(expr: sp.Expr) -> sp.Expr:
    """Rewrite as sum_k coefficient_k * exp(rate_k * t) with one exponential per mode."""
    # power_exp=False: expanding must never split exp(x + y) into exp(x)*exp(y).
    expr = sp.powsimp(sp.expand(expr, power_exp=False), combine="exp")
    expr = expr.replace(sp.exp, lambda arg: sp.exp(sp.expand(sp.cancel(arg))))
    expr = sp.expand(expr, power_exp=False)
    modes = sorted(expr.atoms(sp.exp), key=sp.default_sort_key)
    return sp.collect(expr, modes, sp.factor)


def transforms(subspace: Subspace) -> tuple[sp.Expr, sp.Expr]:
    """(characteristic polynomial, initial-condition term) in the Laplace variable:
    the transform of the solution from y(0) = c1 (, y'(0) = c2) with right-hand
    side G is (initial + G) / characteristic. Orders 1 and 2 only."""
    A, B, C = (sp.sympify(x).subs(subspace.parametrisation) for x in subspace.coefficients())
    L = _laplace
    if subspace.order == 1:
        # Laplace of b*y' + c*y = g: B*(L*Y - y(0)) + C*Y = G.
        return B * L + C, B * c1
    # Laplace of a*y'' + b*y' + c*y = g with y(0) = c1, y'(0) = c2.
    return A * L**2 + B * L + C, A * (L * c1 + c2) + B * c1


def inverse_laplace(transform: sp.Expr) -> sp.Expr:
    """The inverse transform (in the variable of :func:`transforms`), as f(t), in modal form."""
    return modal_form(_inverse_laplace(transform))


def solve(subspace: Subspace) -> Solution:
    if subspace.order == 0:
        # a = b = 0: c*y = g(t) with the paper's smooth core g(t) = sigmoid(s*t).
        return Solution(subspace, sp.S.Zero, Sigmoid(s * t) / c)

    L = _laplace
    characteristic, initial = transforms(subspace)
    homogeneous = _inverse_laplace(initial / characteristic)
    step_response = _inverse_laplace(1 / (L * characteristic))
    # The homogeneous part is linear in the initial conditions: c1*phi1 + c2*phi2.
    basis = [modal_form(homogeneous.diff(k)) for k in (c1, c2)]
    return Solution(subspace, c1 * basis[0] + c2 * basis[1], modal_form(step_response))
