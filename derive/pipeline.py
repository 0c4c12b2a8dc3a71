"""The pipeline: spec -> solve -> verify -> (gravitation -> verify) -> differentiate
-> CSE -> print -> render.

``generate`` returns every file of generated/ as text; ``regenerate`` writes
them, ``check`` compares them with what is checked in.  One code path.
"""

from __future__ import annotations

import difflib
import multiprocessing
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import sympy as sp
from tqdm import tqdm

from derive.backends import BACKENDS, Backend
from derive.classify import INDEX, Assign, classification_program
from derive.cse import Kernel, optimise
from derive.differentiate import OUTPUT_NAMES, differentiate
from derive.gravitation import gravitation_terms
from derive.printer import Printer, RulePrinter
from derive.render import ROOT, inputs_hash, render
from derive.solve import solve
from derive.spec import (
    COEFFICIENTS,
    EXP_FLOOR,
    GRAVITATION_RULES,
    KERNEL_PARAMETERS,
    MAX_EXP_CAP,
    SUBSPACES,
    Subspace,
    by_name,
    t,
)
from derive.verify import check_denominators, verify, verify_gravitation

GENERATED = ROOT / "generated"


def derive_kernel(subspace: Subspace) -> Kernel:
    """One subspace through every mathematical step."""
    solution = solve(subspace)
    verify(solution)
    gravitation = gravitation_terms(solution)
    verify_gravitation(solution, gravitation)
    kernel = optimise(differentiate(solution, gravitation))
    check_denominators(kernel)
    return kernel


def _derive_by_name(name: str) -> Kernel:
    return derive_kernel(by_name(name))


def derive_all(progress: bool = True, jobs: int | None = None) -> list[Kernel]:
    """Every subspace, in spec order, in parallel where there are cores."""
    names = [s.name for s in SUBSPACES]
    jobs = jobs or min(len(names), os.cpu_count() or 1)
    bar = tqdm(total=len(names), desc="deriving", unit="subspace", disable=not progress)
    results: dict[str, Kernel] = {}
    if jobs == 1:
        for name in names:
            bar.set_postfix_str(name)
            results[name] = _derive_by_name(name)
            bar.update()
    else:
        # The slowest subspace (critical damping: limits) goes first.
        order = sorted(names, key=lambda n: n != "a_b_c_disc_zero")
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for kernel in pool.imap_unordered(_derive_by_name, order):
                results[kernel.subspace.name] = kernel
                bar.set_postfix_str(kernel.subspace.name)
                bar.update()
    bar.close()
    return [results[n] for n in names]


def _lines(printer: Printer, assignments) -> list[tuple[str, str]]:
    return [(str(symbol), printer(expr)) for symbol, expr in assignments]


def _code_context(kernel: Kernel, printer: Printer) -> dict:
    """What a code template needs of one subspace, printed."""
    subspace = kernel.subspace

    def results(block, names):
        # Temporaries all depend on t (t-free work was hoisted into the neuron block).
        elementwise = {t, *(symbol for symbol, _ in block.assignments)}
        printed: dict[str, dict | None] = {}
        for name in names:
            expr = block.results[name]
            if expr is None:
                printed[name] = None
            else:
                printed[name] = {
                    "code": printer(expr),
                    "elementwise": not expr.free_symbols.isdisjoint(elementwise),
                }
        return printed

    def neuron_inputs_of(block) -> list[tuple[str, int]]:
        """The per-neuron quantities a block reads, with their positions in k."""
        used = set().union(*(e.free_symbols for _, e in block.assignments))
        used |= set().union(*(e.free_symbols for e in block.results.values() if e is not None))
        names = {str(x) for x in used}
        return [(n, i) for i, n in enumerate(kernel.neuron.results) if n in names]

    return {
        "name": subspace.name,
        "description": subspace.description,
        "value_inputs": neuron_inputs_of(kernel.value),
        "derivative_inputs": neuron_inputs_of(kernel.derivatives),
        "conditions": subspace.conditions,
        "zero": subspace.zero,
        "sign_label": subspace.sign_label,
        "order": subspace.order,
        "neuron_inputs": [str(s) for s in kernel.neuron_inputs],
        "neuron_lines": _lines(printer, kernel.neuron.assignments)
        + [(name, printer(expr)) for name, expr in kernel.neuron.results.items()],
        "neuron_results": list(kernel.neuron.results),
        "value_lines": _lines(printer, kernel.value.assignments),
        "value": results(kernel.value, ["y"])["y"],
        "derivative_lines": _lines(printer, kernel.derivatives.assignments),
        "derivatives": results(kernel.derivatives, OUTPUT_NAMES),
        "gravitation_terms": _gravitation_terms(kernel),
        "operations": _operations(kernel),
    }


def _output_of(p: sp.Symbol) -> str:
    """The output that is dy/dp."""
    return f"dy_d{p}"


def _gravitation_terms(kernel: Kernel) -> tuple[bool, ...]:
    """Per coefficient: whether its output dy/dp is a derived gravitation term."""
    return tuple(_output_of(p) in kernel.derivation.gravitation for p in COEFFICIENTS)


def _layout(kernels: list[Kernel]) -> dict:
    """The kernels' tables of outputs, gravitation rules and parameters."""
    # Per gravitation rule and subspace, which coefficients' outputs a backward sums.
    summed = [
        (rule, [[sums or not term for term in _gravitation_terms(k)] for k in kernels])
        for rule, sums in GRAVITATION_RULES.items()
    ]
    # The formulas' inputs besides t: each a coefficient (None) or a parameter's name.
    parameter_of = {symbol: name for name, symbol in KERNEL_PARAMETERS if symbol is not None}
    formula_inputs = []
    for symbol in kernels[0].neuron_inputs:
        if symbol not in COEFFICIENTS and symbol not in parameter_of:
            raise ValueError(
                f"the formulas' input {symbol} is neither a coefficient nor in KERNEL_PARAMETERS"
            )
        formula_inputs.append((str(symbol), parameter_of.get(symbol)))
    return {
        "output_of_coefficient": [OUTPUT_NAMES.index(_output_of(p)) for p in COEFFICIENTS],
        "summed": summed,
        "summed_bits": [
            (rule, [sum(1 << j for j, use in enumerate(row) if use) for row in table])
            for rule, table in summed
        ],
        "parameters": [
            (name, None if symbol is None else str(symbol)) for name, symbol in KERNEL_PARAMETERS
        ],
        "formula_inputs": formula_inputs,
    }


def _operations(kernel: Kernel) -> dict:
    return {
        "neuron": kernel.neuron.total_operations,
        "value": kernel.value.operation_count("y"),
        "derivatives_total": kernel.derivatives.total_operations,
        "each": {n: kernel.derivatives.operation_count(n) for n in OUTPUT_NAMES},
    }


_LATEX_NAMES = {
    "y": "y",
    "dy_dt": r"\partial y / \partial t",
    "dy_da": r"\partial y / \partial a",
    "dy_db": r"\partial y / \partial b",
    "dy_dc": r"\partial y / \partial c",
    "dy_dc1": r"\partial y / \partial c_1",
    "dy_dc2": r"\partial y / \partial c_2",
}


_STEP_LATEX = sp.Function("u")


def _latex(expr: sp.Expr) -> str:
    """LaTeX with the paper's notation: u(t) for the step."""
    return sp.latex(sp.sympify(expr).replace(sp.Heaviside, lambda x, *h0: _STEP_LATEX(x)))


def _report_context(kernel: Kernel) -> dict:
    derivation = kernel.derivation
    solution = derivation.solution
    subspace = kernel.subspace
    a_, b_, c_ = subspace.coefficients()
    y = sp.Function("y")(t)
    ode = sp.Eq(a_ * y.diff(t, 2) + b_ * y.diff(t) + c_ * y, sp.Symbol("g(t)"))

    def neuron_inputs_of(block) -> list[tuple[str, int]]:
        """The per-neuron quantities a block reads, with their positions in k."""
        used = set().union(*(e.free_symbols for _, e in block.assignments))
        used |= set().union(*(e.free_symbols for e in block.results.values() if e is not None))
        names = {str(x) for x in used}
        return [(n, i) for i, n in enumerate(kernel.neuron.results) if n in names]

    return {
        "name": subspace.name,
        "description": subspace.description,
        "value_inputs": neuron_inputs_of(kernel.value),
        "derivative_inputs": neuron_inputs_of(kernel.derivatives),
        "conditions": subspace.conditions,
        "order": subspace.order,
        "ode": _latex(ode),
        "auxiliaries": [(_latex(q), _latex(e)) for q, e in subspace.auxiliaries.items()],
        "parametrisation": [(_latex(p), _latex(e)) for p, e in subspace.parametrisation.items()],
        "derivatives": [
            (
                (
                    rf"z_{name[-1]} \text{{ (gravitation in {name[-1]})}}"
                    if name in derivation.gravitation
                    else _LATEX_NAMES[name]
                ),
                _latex(expr),
            )
            for name, expr in derivation.outputs.items()
        ][1:],
        "relation": [(_latex(p), _latex(e)) for p, e in subspace.relation.items()],
        "homogeneous": _latex(solution.homogeneous),
        "step_response": _latex(solution.step_response),
        "basis": [_latex(x) for x in solution.basis] if subspace.order else [],
        "uses": subspace.uses,
        "paper_note": subspace.paper_note,
        "notes": list(derivation.notes),
        "smoothed_dirac": list(derivation.smoothed_dirac),
        "operations": _operations(kernel),
    }


def _rules_context(printer: RulePrinter) -> dict:
    """The classification program, printed: statements with their code."""
    program = classification_program()
    names = [str(p) for p in COEFFICIENTS]

    def statements(block: tuple[Assign, ...]) -> list[dict]:
        return [
            {
                "target": s.target,
                "code": printer(s.expr, s.kind),
                "kind": s.kind,
                "declare": s.declare,
                "note": s.note,
            }
            for s in block
        ]

    return {
        "inputs": program.inputs,
        "columns": [(name, names.index(name)) for name in program.inputs],
        "epsilon": program.epsilon,
        "index": INDEX,
        "body": statements(program.body),
        "critical": [(rule, statements(block)) for rule, block in program.critical],
    }


def _context(backend: Backend, kernels: list[Kernel]) -> dict:
    if backend.printer is None:
        return {"subspaces": [_report_context(k) for k in kernels]}
    return {
        "subspaces": [_code_context(k, backend.printer) for k in kernels],
        "max_exp_cap": repr(float(MAX_EXP_CAP)),
        "exp_floor": repr(float(EXP_FLOOR)),
        "max_neuron_quantities": max(len(k.neuron.results) for k in kernels),
        "coefficients": [str(p) for p in COEFFICIENTS],
        "outputs": OUTPUT_NAMES,
        "rules": _rules_context(backend.rules) if backend.rules else None,
        "layout": _layout(kernels),
    }


def generate(kernels: list[Kernel] | None = None, progress: bool = True) -> dict[str, str]:
    """Every file of generated/, by relative path."""
    kernels = kernels if kernels is not None else derive_all(progress=progress)
    digest = inputs_hash()
    files = {}
    for backend in BACKENDS:
        context = _context(backend, kernels)
        for template, output in backend.files:
            files[output] = render(template, output, context, digest)
    return files


def _checked_in(folder: Path) -> dict[str, bytes]:
    """The files in ``folder`` as bytes: no newline translation, so a copy with
    CRLF line ends is not mistaken for the generated one."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.name != "py.typed"
    }


def regenerate(folder: Path = GENERATED, progress: bool = True) -> list[str]:
    files = generate(progress=progress)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in set(_checked_in(folder)) - set(files):
        (folder / stale).unlink()
    for path, text in files.items():
        (folder / path).write_bytes(text.encode())  # exactly these bytes, on any platform
    return sorted(files)


def stale_diff(folder: Path = GENERATED, progress: bool = True) -> str:
    """A unified diff from the checked-in files to fresh ones; empty when current."""
    fresh = generate(progress=progress)
    current = _checked_in(folder)
    chunks: Iterable[str] = []
    for path in sorted(set(fresh) | set(current)):
        new = fresh.get(path, "")
        if current.get(path, b"") == new.encode():
            continue
        old = current.get(path, b"").decode(errors="replace")
        if old.replace("\r\n", "\n") == new:
            # The lines below look alike: say what differs.
            chunks = [*chunks, f"generated/{path}: CRLF line ends where LF are generated\n"]
        chunks = [
            *chunks,
            *difflib.unified_diff(
                old.splitlines(keepends=True),
                new.splitlines(keepends=True),
                fromfile=f"generated/{path} (checked in)",
                tofile=f"generated/{path} (regenerated)",
            ),
        ]
    return "".join(chunks)


def check(folder: Path = GENERATED, progress: bool = True) -> int:
    diff = stale_diff(folder, progress=progress)
    if diff:
        sys.stdout.write(diff)
        sys.stderr.write("generated/ is stale: run `make regenerate` and commit the result.\n")
        return 1
    return 0
