"""Step 1, the specification: the symbols and the ten subspaces of (a, b, c).

A subspace is a zero/sign pattern of the ODE's coefficients inside which the
closed form of ``a*y'' + b*y' + c*y = u(t)`` keeps one functional shape.  Where
that shape depends on the roots of the characteristic polynomial, the subspace
also names a *root parametrisation*: the coefficients written in terms of
auxiliary quantities (a frequency, a decay rate) that make the shape explicit
to the solver.  The parametrisation is only a change of variables; the solution
is verified against the ODE in the original coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from derive import rules

# The input of the activation, and the neuron's five learned coefficients.
t = sp.Symbol("t", real=True)
a, b, c = sp.symbols("a b c", real=True)
c1, c2 = sp.symbols("c1 c2", real=True)
# Steepness of the smooth step used by the sigmoid core and the Dirac approximation.
s = sp.Symbol("s", positive=True)

# The layer's cap on every exponent (max_exponent): a setting, not learned.
max_exponent = sp.Symbol("max_exponent", positive=True)

COEFFICIENTS = (a, b, c, c1, c2)
# The coefficients whose zero pattern (and signs) choose the subspace.
CLASSIFIED = (a, b, c)
# The derivatives the runtime needs, in the order the generated kernels return them.
DIFF_VARIABLES = (t, a, b, c, c1, c2)
# Symbols that are constant per neuron (hoisted out of the per-element work).
NEURON_SYMBOLS = frozenset({a, b, c, c1, c2, s, max_exponent})

# Auxiliary quantities of the root parametrisations.
omega = sp.Symbol("omega", positive=True)  # angular frequency
kappa = sp.Symbol("kappa", positive=True)  # hyperbolic rate
alpha = sp.Symbol("alpha", real=True)  # decay rate of a damped oscillation
mu = sp.Symbol("mu", real=True)  # mean of two real roots
nu = sp.Symbol("nu", positive=True)  # half the distance between two real roots
r = sp.Symbol("r", real=True)  # the double root
r1, r2 = sp.symbols("r1 r2", real=True)  # two distinct real roots
# |b^2 - 4ac| where its sign is fixed: lets the verifier see the sign condition.
disc_size = sp.Symbol("D", positive=True)

# The clamp on every exponent of the generated code: exp(clamp(x, EXP_FLOOR,
# max_exponent)). The cap is the layer's ``max_exponent`` setting, an input of
# every kernel: it bounds how far a homogeneous mode can grow (e^max_exponent),
# and so how large y and its coefficient gradients get for t < 0. The paper's
# published code caps at 14, against overflow. MAX_EXP_CAP is the largest cap
# the kernels accept: exp stays finite in float32, with room for the factors
# that multiply it.
# The floor keeps exp's results normal floats (subnormals make every later
# float32 operation ~10x slower), at an absolute error below 1e-26.
MAX_EXP_CAP = 80
EXP_FLOOR = -60


class Sigmoid(sp.Function):
    """The logistic function 1/(1 + exp(-x)), kept whole so it prints as torch.sigmoid."""

    nargs = 1

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0]) * (1 - Sigmoid(self.args[0]))

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))

    def _latex(self, printer):
        return rf"\sigma\left({printer._print(self.args[0])}\right)"


def _clamp_inactive(x: sp.Expr, cap: sp.Expr) -> bool | None:
    """Whether EXP_FLOOR < x < cap, where that is decidable (x a number; the cap
    is a positive symbol, so x = 0, where the Dirac terms sit, is inside)."""
    if not (x.is_number and x.is_real):
        return None
    if x <= EXP_FLOOR:
        return False
    below = sp.Lt(x, cap)
    if below in (sp.true, sp.false):
        return bool(below)
    return None


class Unclamped(sp.Function):
    """1 where EXP_FLOOR < x < cap, else 0: where a clamped exponential still moves."""

    nargs = 2

    @classmethod
    def eval(cls, x, cap):
        inside = _clamp_inactive(x, cap)
        return None if inside is None else sp.S.One if inside else sp.S.Zero

    def fdiff(self, argindex=1):
        return sp.S.Zero

    def _latex(self, printer):
        inner = printer._print(self.args[0])
        cap = r"\mathrm{max\_exponent}" if self.args[1] == max_exponent else self.args[1]
        return rf"\mathbb{{1}}\left[{EXP_FLOOR} < {inner} < {cap}\right]"


class CappedExp(sp.Function):
    """exp(clamp(x, EXP_FLOOR, cap)): the exponential the generated code computes.

    Its derivative in x is the derivative of that function, exp(x)*[EXP_FLOOR < x < cap]:
    where the clamp is active the value is flat, and so is every derivative through it.
    The cap (the ``max_exponent`` setting) is not differentiated: it is not learned.
    """

    nargs = 2

    @classmethod
    def eval(cls, x, cap):
        inside = _clamp_inactive(x, cap)
        if inside is None:
            return None
        return sp.exp(x) if inside else sp.exp(EXP_FLOOR if x <= EXP_FLOOR else cap)

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise sp.ArgumentIndexError(self, argindex)
        return CappedExp(*self.args) * Unclamped(*self.args)

    def _eval_rewrite_as_exp(self, x, cap, **kwargs):
        return sp.exp(x)

    def _latex(self, printer):
        return rf"e^{{{printer._print(self.args[0])}}}"


def capped(expr: sp.Expr) -> sp.Expr:
    """expr with every exp(x) replaced by the capped exponential of the generated code."""
    return expr.replace(sp.exp, lambda x: CappedExp(x, max_exponent))


def step(x: sp.Expr) -> sp.Expr:
    """The unit step of the paper: u(x) = 0 for x <= 0 and 1 for x > 0."""
    return sp.Heaviside(x, 0)


@dataclass(frozen=True)
class Subspace:
    """One zero/sign case of (a, b, c) with its own closed form."""

    name: str
    description: str
    # Which of the CLASSIFIED coefficients (a, b, c) are zero in this subspace.
    zero: tuple[bool, ...]
    # The sign condition on top of the zero pattern (a rule over the CLASSIFIED
    # coefficients and the named QUANTITIES), or None.
    sign: rules.Node | None
    # Order of the ODE that remains: 0 (algebraic), 1 or 2.
    order: int
    # The coefficients written through the auxiliary quantities, for the solver.
    parametrisation: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)
    # Each auxiliary quantity in terms of a, b, c, to return to the coefficients.
    auxiliaries: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)
    # Auxiliary quantities defined as roots: symbol -> polynomial that vanishes
    # there.  Their derivatives come from implicit differentiation, so that the
    # numerically stable formula in ``auxiliaries`` need not be differentiated.
    implicit: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)
    # The sign condition as a substitution through a positive symbol (c in terms
    # of b^2 and D = |b^2 - 4ac|), for the verifier; empty where not needed.
    witness: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)
    # A relation between a, b, c that defines the subspace (c = b^2/(4a) at the
    # discriminant's zero), as a substitution; empty where none.
    relation: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)
    # How this differs from the paper's Table 1, for the report.
    paper_note: str = ""
    # The classifier's test on top of the zero pattern where it is not ``sign``
    # (see CLASSIFICATION).
    classified_by: rules.Node | None = None

    @property
    def sign_label(self) -> str | None:
        """The sign condition as the report writes it (``ac > 0``), or None."""
        return None if self.sign is None else rules.label(self.sign)

    @property
    def conditions(self) -> str:
        parts = [
            f"{p} = 0" if z else f"{p} != 0" for p, z in zip(CLASSIFIED, self.zero, strict=True)
        ]
        if self.sign is not None:
            parts.append(rules.label(self.sign).replace("disc", "b^2 - 4ac"))
        return ", ".join(parts)

    @property
    def uses(self) -> tuple[bool, bool]:
        """Whether c1 and c2 (the initial conditions) enter the solution."""
        return (self.order >= 1, self.order == 2)

    def in_coefficients(self, expr: sp.Expr) -> sp.Expr:
        """Replace auxiliary quantities (which may use earlier ones) by a, b, c."""
        for _ in range(len(self.auxiliaries) + 1):
            expr = expr.subs(self.auxiliaries)
        return expr

    def nonzero_symbols(self) -> dict[sp.Symbol, sp.Symbol]:
        """The coefficients that are nonzero here, as symbols that know it."""
        return {
            p: sp.Symbol(p.name, real=True, nonzero=True)
            for p, zero in zip(CLASSIFIED, self.zero, strict=True)
            if not zero
        }

    def coefficients(self) -> tuple[sp.Expr, ...]:
        """(a, b, c) with the zero pattern applied, in the original symbols."""
        return tuple(sp.S.Zero if z else p for p, z in zip(CLASSIFIED, self.zero, strict=True))


# The classification rules are written over these (derive/rules.py): the
# classified coefficients, the layer's epsilon and the named quantities.
A, B, C = (rules.var(p.name) for p in CLASSIFIED)
EPSILON = rules.var("epsilon")
DISC = rules.var("disc")
# Named quantities of the rules, computed in this order: b^2 - 4ac as b*b - 4*a*c
# (the kernels' rounding of it decides the discriminant's subspaces).
QUANTITIES: dict[str, rules.Node] = {"disc": B * B - 4 * A * C}


# The layer's epsilon, where a rule reads it.
epsilon = sp.Symbol("epsilon", positive=True)


def as_sympy(rule: rules.Node, epsilon: sp.Expr = epsilon) -> sp.Basic:
    """A rule over the classified coefficients and QUANTITIES in their symbols, exactly."""
    for name, definition in reversed(QUANTITIES.items()):
        rule = rules.substitute(rule, {name: definition})
    return rules.to_sympy(rule, {p.name: p for p in CLASSIFIED} | {"epsilon": epsilon})


def evaluate(rule: rules.Node, **coefficients):
    """A rule in Python floats (or numpy arrays) at the classified coefficients."""
    values = dict(coefficients)
    for name, definition in QUANTITIES.items():
        values[name] = rules.evaluate(definition, values)
    return rules.evaluate(rule, values)


_TABLE1 = "Table 1 of the paper writes this solution in the same basis."

SUBSPACES: tuple[Subspace, ...] = (
    Subspace(
        "a0_b0_c",
        "sigmoid (the paper's smooth core, scaled by 1/c)",
        (True, True, False),
        None,
        0,
        paper_note="Table 1 gives sigma(t)/c; the paper's text uses the steep "
        "core sigma(s*t)/c, which is what we implement. c1 and c2 are unused.",
    ),
    Subspace(
        "a0_b_c0",
        "ReLU-like ramp",
        (True, False, True),
        None,
        1,
        paper_note=_TABLE1,
    ),
    Subspace(
        "a0_b_c",
        "first order: exponential approach to 1/c",
        (True, False, False),
        None,
        1,
        paper_note="Same basis as Table 1 (c1 multiplies exp(-c*t/b) and equals y(0)).",
    ),
    Subspace(
        "a_b0_c0",
        "rectified quadratic (ReQU-like)",
        (False, True, True),
        None,
        2,
        paper_note="Table 1 writes x^2*u(x)/(2a) + c2*x + c1: the same basis with "
        "c1 = y(0) and c2 = y'(0).",
    ),
    Subspace(
        "a_b0_c_pos",
        "undamped oscillation",
        (False, True, False),
        A * C > 0,
        2,
        parametrisation={c: a * omega**2},
        auxiliaries={omega: sp.sqrt(c / a)},
        paper_note="Table 1 multiplies c2 by sin(omega*t); we use sin(omega*t)/omega "
        "so that c2 = y'(0).",
    ),
    Subspace(
        "a_b0_c_neg",
        "hyperbolic growth and decay",
        (False, True, False),
        A * C < 0,
        2,
        parametrisation={c: -a * kappa**2},
        auxiliaries={kappa: sp.sqrt(-c / a)},
        paper_note="Table 1 multiplies c1 by exp(kappa*t) and c2 by exp(-kappa*t); we "
        "use the combinations of the two with y(0) = c1, y'(0) = c2.",
    ),
    Subspace(
        "a_b_c0",
        "ramp with exponential transient",
        (False, False, True),
        None,
        2,
        paper_note="Table 1 uses 1 and exp(-b*t/a) with other constants; we use "
        "the combinations with y(0) = c1, y'(0) = c2.",
    ),
    Subspace(
        "a_b_c_disc_pos",
        "overdamped: two real exponential modes",
        (False, False, False),
        DISC > 0,
        2,
        parametrisation={b: -a * (r1 + r2), c: a * r1 * r2},
        # The roots without cancellation: r1 = -(b + sign(b)*sqrt(disc))/(2a) is the
        # larger in magnitude, r2 = c/(a*r1) by Vieta (the naive
        # (-b + sign(b)*sqrt(disc))/(2a) loses the small root to cancellation).
        # |disc|, computed as the runtime's classifier computes it: rounding can
        # never make the square root's argument negative.
        auxiliaries={
            r1: -(b + sp.sign(b) * sp.sqrt(sp.Abs(b**2 - 4 * a * c))) / (2 * a),
            r2: c / (a * r1),
        },
        implicit={r1: a * r1**2 + b * r1 + c, r2: a * r2**2 + b * r2 + c},
        witness={c: (b**2 - disc_size) / (4 * a)},
        paper_note='Not in Table 1 ("four forms"); basis chosen so y(0) = c1, y\'(0) = c2.',
    ),
    Subspace(
        "a_b_c_disc_zero",
        "critically damped: double real root",
        (False, False, False),
        rules.eq(DISC, 0),
        2,
        parametrisation={b: -2 * a * r, c: a * r**2},
        auxiliaries={r: -b / (2 * a)},
        relation={c: b**2 / (4 * a)},
        paper_note="Not in Table 1. The runtime maps the band |b^2 - 4ac| < eps "
        "(sign(a) == sign(c)) onto c = b^2/(4a); the paper sets a = c = |b|/2 "
        "with signs instead (available as critical='paper').",
    ),
    Subspace(
        "a_b_c_disc_neg",
        "damped (or growing) oscillation",
        (False, False, False),
        DISC < 0,
        2,
        parametrisation={b: 2 * a * alpha, c: a * (alpha**2 + omega**2)},
        # omega from |disc| as the classifier computes it, so that omega**2 >= eps/(4a^2)
        # holds in floating point too (c/a - alpha**2 can round to 0 near the band).
        auxiliaries={
            alpha: b / (2 * a),
            omega: sp.sqrt(sp.Abs(b**2 - 4 * a * c)) / (2 * sp.Abs(a)),
        },
        implicit={omega: 4 * a**2 * omega**2 + b**2 - 4 * a * c},
        witness={c: (b**2 + disc_size) / (4 * a)},
        paper_note='Not in Table 1 ("four forms"); basis chosen so y(0) = c1, y\'(0) = c2.',
        # Closed at 0: outside the band, a rounded discriminant of exactly 0
        # (b*b and 4*a*c both underflowing, a and c of opposite signs) lands here.
        classified_by=DISC <= 0,
    ),
)

# The subspace whose derivatives are the limits of its neighbours' (see differentiate.py).
CRITICAL = "a_b_c_disc_zero"

# The overdamped case again, parametrised symmetrically about the double root
# (roots mu +- nu), for the limit nu -> 0 that gives the critical derivatives.
# Not a subspace of its own and never printed.
OVERDAMPED_SYMMETRIC = Subspace(
    "a_b_c_disc_pos_symmetric",
    "overdamped, roots mu +- nu",
    (False, False, False),
    DISC > 0,
    2,
    parametrisation={b: -2 * a * mu, c: a * (mu**2 - nu**2)},
    auxiliaries={mu: -b / (2 * a), nu: sp.sqrt(b**2 / (4 * a**2) - c / a)},
)


@dataclass(frozen=True)
class Band:
    """A widened relation: neurons within ``inside`` of the critical subspace's
    equation are put in it, ahead of the subspaces of its zero pattern, and their
    coefficients are projected onto the equation by one of ``projections``."""

    subspace: str
    inside: rules.Node
    # Critical rule name -> {coefficient: its value in the band}, assigned at once.
    projections: dict[str, dict[str, rules.Node]]


@dataclass(frozen=True)
class Classification:
    """The rules that take a neuron's coefficients to a subspace and to the
    coefficients its kernel sees (derive/classify.py builds the program):

    * a CLASSIFIED coefficient with |p| < zero_below counts as zero (and is 0);
    * where all of them are zero, ``fallback`` sets some (b = epsilon);
    * the QUANTITIES are computed from the zeroed coefficients;
    * each subspace holds where its zero pattern and its ``classified_by`` (or
      else its ``sign``) hold, the band's subspace where the band holds; no
      subspace, where none holds (NaN, or a*c rounded to zero).
    """

    zero_below: rules.Node
    fallback: dict[str, rules.Node]
    quantities: dict[str, rules.Node]
    band: Band


CLASSIFICATION = Classification(
    zero_below=EPSILON,
    fallback={"b": EPSILON},
    quantities=QUANTITIES,
    # |b^2 - 4ac| < epsilon with sign(a) == sign(c) is critical damping (the
    # paper's published code dropped the sign condition; we keep it).
    band=Band(
        subspace=CRITICAL,
        inside=(abs(DISC) < EPSILON) & rules.eq(rules.sign(A), rules.sign(C)),
        projections={
            # The nearest critical equation: c = b^2/(4a), a and b kept.
            "nearest": {"c": B * B / (4 * A)},
            # The paper's: a = |b|/2*sign(a), c = |b|/2*sign(c).
            "paper": {"a": abs(B) / 2 * rules.sign(A), "c": abs(B) / 2 * rules.sign(C)},
        },
    ),
)


# The layer's outward-gravitation rules (its ``gravitation`` setting), each with
# whether a backward sums the derived gravitation terms: the outputs dy/dp of a
# subspace in which p is zero (derive/gravitation.py), which y does not depend
# on. Every other output a backward needs is always summed. "neighbour" (the
# paper's rule) adds its own term, outside the kernels.
GRAVITATION_RULES = {"derived": True, "neighbour": False, "off": False}

# The settings the Triton kernels read from their parameter vector, in its
# order, each with the formulas' symbol it sets (None: read by the drivers: the
# output bound and the classifier's epsilon).
KERNEL_PARAMETERS = (
    ("steepness", s),
    ("max_value", None),
    ("max_exponent", max_exponent),
    ("epsilon", None),
)


def by_name(name: str) -> Subspace:
    for subspace in SUBSPACES:
        if subspace.name == name:
            return subspace
    known = ", ".join(x.name for x in SUBSPACES)
    raise KeyError(f"unknown subspace {name!r}; expected one of: {known}")
