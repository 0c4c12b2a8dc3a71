"""The derivation toolchain: verification, strictness, determinism, staleness."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import sympy as sp

from derive import pipeline
from derive.differentiate import differentiate, resolve_dirac, smooth_delta
from derive.printer import CPP, TORCH, TRITON, PrinterError
from derive.render import environment
from derive.solve import Solution, solve
from derive.spec import (
    SUBSPACES,
    CappedExp,
    Sigmoid,
    a,
    b,
    by_name,
    c,
    c1,
    c2,
    max_exponent,
    s,
    t,
)
from derive.verify import VerificationError, check_denominators, residuals, verify

ROOT = Path(__file__).resolve().parent.parent
NAMES = [x.name for x in SUBSPACES]


@pytest.fixture(scope="module")
def fresh_files() -> dict[str, str]:
    return pipeline.generate(progress=False)


def test_there_are_ten_subspaces_with_distinct_conditions():
    assert len(SUBSPACES) == 10
    assert len({(x.zero, x.sign) for x in SUBSPACES}) == 10
    assert (True, True, True) not in {x.zero for x in SUBSPACES}


@pytest.mark.parametrize("name", NAMES)
def test_every_subspace_solves_its_ode_symbolically(name):
    solution = solve(by_name(name))
    verify(solution)  # raises on failure
    for what, residual in residuals(solution).items():
        assert sp.simplify(residual.rewrite(sp.exp)) == 0, what


@pytest.mark.parametrize("name", NAMES)
def test_every_subspace_satisfies_its_initial_conditions(name):
    subspace = by_name(name)
    y = solve(subspace).value
    if subspace.order >= 1:
        assert sp.simplify(y.subs(t, 0) - c1) == 0
    if subspace.order == 2:
        assert sp.simplify(y.diff(t).subs(t, 0) - c2) == 0
    if subspace.order == 0:
        assert not y.has(c1) and not y.has(c2)


def test_a_wrong_formula_fails_verification_and_names_the_subspace():
    good = solve(by_name("a_b_c_disc_neg"))
    wrong = Solution(good.subspace, good.homogeneous, good.step_response * (1 + t / 1000))
    with pytest.raises(VerificationError, match="a_b_c_disc_neg"):
        verify(wrong)
    wrong_ic = Solution(good.subspace, good.homogeneous + c2 * 0 + 1, good.step_response)
    with pytest.raises(VerificationError, match="a_b_c_disc_neg"):
        verify(wrong_ic)


def test_a_wrong_formula_injected_into_the_pipeline_stops_the_run(monkeypatch, tmp_path):
    real_solve = pipeline.solve

    def sabotaged(subspace):
        solution = real_solve(subspace)
        if subspace.name == "a_b0_c_pos":
            return Solution(subspace, solution.homogeneous, solution.step_response + t)
        return solution

    monkeypatch.setattr(pipeline, "solve", sabotaged)
    with pytest.raises(VerificationError, match="a_b0_c_pos"):
        pipeline.derive_all(progress=False, jobs=1)


PRINTERS = {"torch": TORCH, "cpp": CPP, "triton": TRITON}


@pytest.mark.parametrize("printer", PRINTERS.values(), ids=PRINTERS)
def test_the_printer_rejects_unsupported_nodes_by_name(printer):
    with pytest.raises(PrinterError, match="tan"):
        printer(sp.tan(t))
    with pytest.raises(PrinterError, match="DiracDelta"):
        printer(sp.DiracDelta(t) * a)
    with pytest.raises(PrinterError, match="only integer powers"):
        printer(t ** sp.Rational(1, 3))
    with pytest.raises(PrinterError, match="u\\(0\\) = 0"):
        printer(sp.Heaviside(t))


@pytest.mark.parametrize("printer", PRINTERS.values(), ids=PRINTERS)
def test_no_uncapped_exponential_can_be_printed(printer):
    with pytest.raises(PrinterError, match="exp"):
        printer(sp.exp(t))
    assert "exp" in printer(CappedExp(t, max_exponent))  # the capped one prints


def test_the_triton_printer_spells_the_generated_helpers():
    assert (
        TRITON(CappedExp(-c * t / b, max_exponent) * sp.sqrt(c / a))
        == "_sqrt(c / a) * _exp(-c * t / b, max_exponent)"
    )
    assert TRITON((a + b) ** 3) == "_ipow((a + b), 3)"
    assert TRITON(sp.Heaviside(t, 0) * sp.sin(t)) == "tl.sin(t) * _step(t)"


def test_clamped_exponentials_differentiate_to_zero_where_the_clamp_is_active():
    derivative = sp.diff(CappedExp(a * t, max_exponent), t)
    assert derivative.subs({a: 1, t: 13, max_exponent: 14}) == sp.exp(13)
    assert derivative.subs({a: 1, t: 15, max_exponent: 14}) == 0
    assert derivative.subs({a: 1, t: 3, max_exponent: 4}) == sp.exp(3)
    assert derivative.subs({a: 1, t: 5, max_exponent: 4}) == 0
    assert derivative.subs({a: 1, t: -59, max_exponent: 4}) == sp.exp(-59)
    assert derivative.subs({a: 1, t: -61, max_exponent: 4}) == 0
    assert CappedExp(sp.Integer(20), sp.Integer(14)) == sp.exp(14)
    assert CappedExp(sp.Integer(20), sp.Integer(4)) == sp.exp(4)
    assert CappedExp(sp.Integer(-100), max_exponent) == sp.exp(-60)


def test_the_cap_is_a_positive_symbol_so_exponents_at_or_below_zero_are_never_capped():
    # exp(0) at t = 0 (where the Dirac terms sit) must evaluate, whatever the cap.
    assert CappedExp(sp.Integer(0), max_exponent) == 1
    assert CappedExp(sp.Integer(-3), max_exponent) == sp.exp(-3)
    assert CappedExp(sp.Integer(3), max_exponent).func is CappedExp  # undecidable: kept


def test_the_printer_keeps_precedence():
    assert TORCH(CappedExp(-c * t / b, max_exponent)) == "_exp(-c * t / b, max_exponent)"
    assert TORCH(Sigmoid(s * t)) == "torch.sigmoid(s * t)"
    assert TORCH((a + b) ** 2) == "(a + b)**2"
    assert TORCH(-a / (b * c)) == "-a / (b * c)"
    assert TORCH(sp.sqrt(c / a)) == "torch.sqrt(c / a)"
    # What it prints evaluates to the same number.
    env = {"a": 1.5, "b": -0.7, "c": 2.25, "t": 0.3}
    expr = (a + b) ** 2 / (c - a) - a * b / c + sp.Rational(3, 4) * (a - b) ** 3
    exact = float(expr.subs({a: env["a"], b: env["b"], c: env["c"], t: env["t"]}))
    assert eval(TORCH(expr), {}, env) == pytest.approx(exact, rel=1e-14)


def test_templates_fail_on_missing_variables():
    template = environment().from_string("{{ defined }} {{ missing }}")
    with pytest.raises(jinja2.UndefinedError, match="missing"):
        template.render(defined=1)


def test_vanishing_dirac_terms_are_dropped_and_surviving_ones_smoothed():
    # u(t) * t: f(0) = 0, the delta term vanishes exactly.
    expr, survived = resolve_dirac(sp.diff(sp.Heaviside(t, 0) * t, t))
    assert not survived and not expr.has(sp.DiracDelta)
    assert sp.simplify(expr - sp.Heaviside(t, 0)) == 0
    # u(t) * (1 + t): f(0) = 1 survives and becomes the smooth approximation.
    expr, survived = resolve_dirac(sp.diff(sp.Heaviside(t, 0) * (1 + t), t))
    assert survived
    assert sp.simplify(expr - sp.Heaviside(t, 0) - smooth_delta(t)) == 0


@pytest.mark.parametrize("name", NAMES)
def test_no_dirac_term_survives_in_any_subspace(name):
    derivation = differentiate(solve(by_name(name)))
    assert derivation.smoothed_dirac == ()
    assert not any(e.has(sp.DiracDelta) for e in derivation.outputs.values())


def test_the_denominator_check_rejects_division_by_a_vanishing_quantity():
    kernel = pipeline.derive_kernel(by_name("a_b_c0"))
    # In a_b_c0, c = 0: dividing by c is what the check must catch.
    bad_neuron = type(kernel.neuron)(
        kernel.neuron.assignments + ((sp.Symbol("n_bad"), 1 / (c + b - b)),),
        kernel.neuron.results,
    )
    bad = type(kernel)(
        kernel.derivation, kernel.neuron_inputs, bad_neuron, kernel.value, kernel.derivatives
    )
    with pytest.raises(VerificationError, match="not provably nonzero"):
        check_denominators(bad)


def test_regeneration_is_byte_identical_to_the_checked_in_files(fresh_files):
    checked_in = pipeline._checked_in(pipeline.GENERATED)
    assert sorted(fresh_files) == sorted(checked_in)
    for path, text in fresh_files.items():
        assert (
            text.encode() == checked_in[path]
        ), f"generated/{path} is stale: run `make regenerate`"


def test_regeneration_does_not_depend_on_the_hash_seed(tmp_path):
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = tmp_path / "generated"
    subprocess.run(
        [sys.executable, "-m", "derive", "regenerate", "--out", str(out)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    for path in pipeline._checked_in(pipeline.GENERATED):
        assert (out / path).read_bytes() == (pipeline.GENERATED / path).read_bytes(), path


def test_check_reports_a_stale_file_with_a_unified_diff(tmp_path, fresh_files):
    for path, text in fresh_files.items():
        (tmp_path / path).write_text(text)
    (tmp_path / "kernels.py").write_text(
        fresh_files["kernels.py"].replace("EXP_FLOOR = -60.0", "EXP_FLOOR = -61.0")
    )
    diff = pipeline.stale_diff(tmp_path, progress=False)
    assert "-EXP_FLOOR = -61.0" in diff and "+EXP_FLOOR = -60.0" in diff
    assert "generated/kernels.py (checked in)" in diff


def test_check_reports_a_copy_with_crlf_line_ends_as_stale(
    tmp_path, fresh_files, monkeypatch, capsys
):
    """Line ends are part of the output: a CRLF copy (as a checkout with
    core.autocrlf writes it) must not pass as current, in the test's comparison
    nor in `python -m derive check`."""
    from derive.__main__ import main

    for path, text in fresh_files.items():
        (tmp_path / path).write_bytes(text.encode())
    monkeypatch.setattr(pipeline, "generate", lambda progress=True: fresh_files)
    assert main(["check", "--against", str(tmp_path)]) == 0  # the exact copy is current
    (tmp_path / "kernels.py").write_bytes(fresh_files["kernels.py"].replace("\n", "\r\n").encode())
    assert (tmp_path / "kernels.py").read_text() == fresh_files["kernels.py"]  # alike as text
    assert pipeline._checked_in(tmp_path)["kernels.py"] != fresh_files["kernels.py"].encode()
    capsys.readouterr()
    assert main(["check", "--against", str(tmp_path)]) == 1
    printed = capsys.readouterr()
    assert "generated/kernels.py: CRLF line ends where LF are generated" in printed.out
    assert "generated/ is stale" in printed.err
    assert printed.out.count("(checked in)") == 1  # only the rewritten file is reported


def test_generated_files_describe_themselves(fresh_files):
    for path, text in fresh_files.items():
        head = "\n".join(text.splitlines()[:3])
        assert "Generated by `python -m derive` from templates/" in head, path
        assert "Do not edit" in head and "sympy 1.14.0" in head and "inputs sha256" in head, path


def test_the_report_covers_every_subspace(fresh_files):
    report = fresh_files["SOLUTIONS.md"]
    for name in NAMES:
        assert f"## {name}" in report
    assert "limits of the overdamped ones" in report


def test_an_auxiliary_quantity_is_not_assumed_nonzero():
    """q = c - a can vanish in a_b_c_disc_neg: dividing by it must be rejected."""
    import dataclasses

    kernel = pipeline.derive_kernel(by_name("a_b_c_disc_neg"))
    q = sp.Symbol("q", real=True)
    subspace = dataclasses.replace(
        kernel.subspace, auxiliaries={**kernel.subspace.auxiliaries, q: c - a}
    )
    solution = dataclasses.replace(kernel.derivation.solution, subspace=subspace)
    derivation = dataclasses.replace(kernel.derivation, solution=solution)
    neuron = dataclasses.replace(
        kernel.neuron,
        assignments=kernel.neuron.assignments + ((q, c - a), (sp.Symbol("n_bad"), 1 / q)),
    )
    bad = dataclasses.replace(kernel, derivation=derivation, neuron=neuron)
    with pytest.raises(VerificationError, match="not provably nonzero"):
        check_denominators(bad)
    check_denominators(kernel)  # the real kernel passes
