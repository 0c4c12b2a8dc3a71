"""The rendered classifier against derive/spec.py's rules, read independently.

The classification rules are data in derive/spec.py (CLASSIFICATION and each
subspace's conditions); derive/classify.py turns them into one program and the
printers render it for every backend. Here the rules are read a second way, in
exact rational arithmetic through SymPy, following CLASSIFICATION's own
description, and the rendered PyTorch classifier (float64) must agree with that
reading at points where float64 computes every step exactly: dyadic
coefficients of few bits, exact zeros, +-epsilon and its neighbours, and
discriminants exactly at and around 0 and +-epsilon. A printer or program
mistake shows here; a mistake in a rule itself shows in the second test, which
checks each sign condition against the subspace's own parametrisation.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
import sympy as sp
import torch
from deu._generated import CRITICAL_RULES

from derive import rules
from derive.printer import TORCH_RULES, PrinterError
from derive.spec import CLASSIFICATION, CLASSIFIED, SUBSPACES, as_sympy, by_name
from deu._subspaces import classify

NAMES = [p.name for p in CLASSIFIED]


def _exact(x: float) -> sp.Rational:
    return sp.Rational(*Fraction(x).as_integer_ratio())


def _holds(rule: rules.Node, values: dict[str, sp.Rational]) -> bool:
    result = rules.to_sympy(rule, values)
    assert result in (sp.true, sp.false), f"{rule} did not evaluate: {result}"
    return bool(result)


def reference(point: tuple[float, ...], epsilon: float, critical: str):
    """(subspace index, effective classified coefficients), exactly, from the spec."""
    values = {name: _exact(x) for name, x in zip(NAMES, point, strict=True)}
    values["epsilon"] = _exact(epsilon)
    zero = {p: _holds(abs(rules.var(p)) < CLASSIFICATION.zero_below, values) for p in NAMES}
    for p in NAMES:
        if zero[p]:
            values[p] = sp.S.Zero
    if all(zero.values()):
        for p, value in CLASSIFICATION.fallback.items():
            values[p] = rules.to_sympy(value, values)
            zero[p] = False
    for name, definition in CLASSIFICATION.quantities.items():
        values[name] = rules.to_sympy(definition, values)
    band = CLASSIFICATION.band
    critical_zero = by_name(band.subspace).zero
    in_band = tuple(zero.values()) == critical_zero and _holds(band.inside, values)
    holding = []
    for i, subspace in enumerate(SUBSPACES):
        if tuple(zero[p] for p in NAMES) != subspace.zero:
            continue
        if subspace.name == band.subspace:
            holds = in_band
        else:
            test = subspace.classified_by or subspace.sign
            holds = not in_band and (test is None or _holds(test, values))
        if holds:
            holding.append(i)
    assert len(holding) <= 1, f"{point}: in {[SUBSPACES[i].name for i in holding]} at once"
    if in_band:  # the projection assigns at once: every value from the old ones
        projected = {
            p: rules.to_sympy(value, values) for p, value in band.projections[critical].items()
        }
        values.update(projected)
    return (holding[0] if holding else -1), [values[p] for p in NAMES]


def _points(epsilon: float) -> list[tuple[float, float, float]]:
    e = epsilon
    edges = [0.0, -0.0, e, -e, e * (1 - 2**-12), e * (1 + 2**-12), -e * (1 + 2**-12)]
    edges += [2 * e, -3 * e, 0.5, -0.75, 1.0, -2.0]
    points = list(itertools.product(edges, repeat=3))
    # Discriminants b*b - 4*a*c exactly at and around 0 and +-epsilon.
    for a, b in itertools.product([0.5, -1.0, 2.0, -0.25], [0.75, -1.5, 3 * e]):
        for target in (0.0, e, -e, e * (1 - 2**-20), -e * (1 + 2**-20), 2 * e, -e / 2):
            points.append((a, b, (b * b - target) / (4 * a)))
    # Random dyadic coefficients of at most 9 bits.
    generator = torch.Generator().manual_seed(7)
    random = (torch.randn(300, 3, generator=generator, dtype=torch.float64) * 64).round() / 32
    points += [tuple(row) for row in random.tolist()]
    return points


@pytest.mark.parametrize("critical", CRITICAL_RULES)
@pytest.mark.parametrize("epsilon", [2.0**-6, 0.25])
def test_the_rendered_classifier_agrees_with_the_spec_evaluated_exactly(epsilon, critical):
    points = _points(epsilon)
    coeffs = torch.tensor([(*p, 0.5, -0.5) for p in points], dtype=torch.float64)
    effective, index = classify(coeffs, epsilon, critical)
    reached = set()
    for i, point in enumerate(points):
        expected_index, expected = reference(point, epsilon, critical)
        reached.add(expected_index)
        assert index[i].item() == expected_index, (point, SUBSPACES[expected_index].name)
        for j, value in enumerate(expected):
            # One rounding at most (b*b/(4a): b*b and 4a are exact): the nearest float.
            exact = Fraction(int(value.p), int(value.q))
            assert effective[i, j].item() == float(exact), (point, NAMES[j], float(exact))
    assert reached >= set(range(len(SUBSPACES))), sorted(reached)


def test_the_exact_points_are_exact_in_float64():
    """Guards the test above: at its band points float64's b*b - 4*a*c is exact."""
    for a, b, c in _points(2.0**-6):
        exact = _exact(b) ** 2 - 4 * _exact(a) * _exact(c)
        assert _exact(b * b - 4 * a * c) == exact, (a, b, c)


@pytest.mark.parametrize("name", [s.name for s in SUBSPACES if s.sign is not None])
def test_each_sign_condition_holds_on_its_subspaces_own_parametrisation(name):
    """A wrong condition in the spec (a flipped inequality, a wrong quantity) is
    false where the subspace's closed form was derived: its relation, witness or
    root parametrisation. The classifier's own test must hold there too."""
    subspace = by_name(name)
    substitution = subspace.relation or subspace.witness or subspace.parametrisation
    for condition in filter(None, (subspace.sign, subspace.classified_by)):
        held = as_sympy(condition).subs(substitution).subs(subspace.nonzero_symbols())
        assert sp.simplify(held) is sp.true, f"{name}: {rules.label(condition)} gives {held}"


def test_the_band_holds_on_the_critical_equation_and_its_projections_land_on_it():
    band = CLASSIFICATION.band
    critical = by_name(band.subspace)
    symbols = critical.nonzero_symbols()
    epsilon = sp.Symbol("epsilon", positive=True)
    inside = as_sympy(band.inside, epsilon).subs(critical.relation).subs(symbols)
    assert sp.simplify(inside) is sp.true, inside
    values = {p.name: s for p, s in symbols.items()}
    for rule, projection in band.projections.items():
        projected = values | {n: rules.to_sympy(e, values) for n, e in projection.items()}
        disc = as_sympy(critical.sign.args[0]).subs(
            {p: projected[p.name] for p in CLASSIFIED}, simultaneous=True
        )
        # Inside the band sign(a) == sign(c).
        disc = disc.subs(sp.sign(values["c"]), sp.sign(values["a"]))
        assert sp.simplify(disc) == 0, (rule, disc)


def test_the_rule_printer_refuses_an_operation_it_does_not_know():
    with pytest.raises(PrinterError, match="cube"):
        TORCH_RULES(rules.Node("cube", (rules.var("a"),)))
