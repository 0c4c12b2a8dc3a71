"""make mutmut's verdict: mutmut's results for the runtime's rule files (FILES).

Run after ``mutmut run`` (``make mutmut`` does both), from the repository root.
Every mutant must be killed, or survive with its change listed in EQUIVALENT
below with the reason it cannot change a result. The run fails on a survivor
that is not listed, on a mutant that timed out or was not checked, and on a
listed equivalent that no longer occurs (the list must stay current).

    python tests/mutmut_report.py            # the summary and every survivor
    python tests/mutmut_report.py --markdown build/mutmut.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = (
    "deu/_subspaces.py",
    "deu/_plan.py",
    "deu/_neighbour.py",
    "deu/_values.py",
    "deu/_autograd.py",
)
# mutmut's exit codes (mutmut/stats.py): 1 and 3 killed, 0 survived, None not checked.
KILLED = {1, 3}


@dataclass(frozen=True)
class Equivalent:
    function: str
    added: str  # text that occurs in the mutant's changed line
    reason: str


EQUIVALENT = [
    # The eager path (deu/_autograd.py, issue 18).
    Equivalent(
        "_forward",
        'settings.backend != "XXcppXX"',
        "the Python finiteness check then runs for the fused kernel too, which raises the "
        "same error itself: twice the work, the same result",
    ),
    Equivalent("_forward", 'settings.backend != "CPP"', "as above"),
    Equivalent(
        "layer_apply",
        "if not torch.is_grad_enabled() and not (",
        "the short cut for calls that record no graph: without it they take the autograd "
        "Function, which gives the same values and records nothing (no input requires "
        "grad, or grad is disabled)",
    ),
    Equivalent(
        "_EagerDEU.backward",
        "grad_x if (need_input) or True else None",
        "a placeholder returned for an input that needs no gradient is ignored by autograd",
    ),
    Equivalent("_EagerDEU.backward", "grad_coeffs if (need_coeffs) or True else None", "as above"),
    Equivalent("_EagerLayer.backward", "grad_x if (need_input) or True else None", "as above"),
    Equivalent(
        "classify",
        "_COLUMNS, strict=None)",
        "_COLUMNS is built from CLASSIFIED, and the generated classifier returns one "
        "column per CLASSIFIED name: zip's strict on equal lengths changes nothing",
    ),
    Equivalent("classify", "_COLUMNS, strict=False)", "as above"),
    Equivalent("classify", "_COLUMNS, )", "as above"),
    Equivalent("classify", "classified, strict=None)", "as above"),
    Equivalent("classify", "classified, strict=False)", "as above"),
    Equivalent("classify", "classified, )", "as above"),
    Equivalent(
        "_neighbours",
        "subspace.zero, strict=None)",
        "(a, b, c) and subspace.zero both have three entries: zip's strict changes nothing",
    ),
    Equivalent("_neighbours", "subspace.zero, strict=False)", "as above"),
    Equivalent("_neighbours", "subspace.zero, )", "as above"),
    Equivalent(
        "_neighbours",
        "eps / torch.where(raw < 0, -1.0, 1.0)",
        "dividing by +-1 is multiplying by it, exactly",
    ),
    Equivalent(
        "_gravitation",
        "device=None)",
        "CPU only: the default device is the CPU, where every test runs (the Triton "
        "tests too, under the interpreter); a GPU run would catch it",
    ),
    Equivalent("_gravitation", "dtype=x.dtype, )", "as above"),
    Equivalent(
        "_gravitation",
        "break",
        "d is None only for the c1 and c2 outputs of first-order and constant subspaces; "
        "p is a, b or c, whose outputs exist in every subspace, so the loop never skips",
    ),
    Equivalent(
        "_matched_initial_conditions",
        "r0, r1), +1)",
        "the stacked tensors are 1-d: dimensions 1 and -1 are the same",
    ),
    Equivalent(
        "_matched_initial_conditions",
        "nan_to_num(solution, nan=None,",
        "nan_to_num's default for NaN is 0.0",
    ),
    Equivalent(
        "_matched_initial_conditions",
        "nan_to_num(solution, posinf=0.0, neginf=0.0)",
        "nan_to_num's default for NaN is 0.0",
    ),
    Equivalent(
        "_assemble",
        "len(parts) == 1 or parts[0][0] is None",
        "_groups returns None for the neuron indices only when there is one group",
    ),
    Equivalent(
        "_assemble",
        "first = parts[1][1]",
        "first only lends the dtype, the device and the other dimensions, which every "
        "part shares; the neuron dimension is summed over the parts",
    ),
    Equivalent(
        "_groups",
        "torch.bincount(index + 1, ).tolist()",
        "minlength only pads the counts with zeros: the same subspaces are present and "
        "the split is the same",
    ),
    Equivalent("_groups", "minlength=len(SUBSPACES) - 1)", "as above"),
    Equivalent("_groups", "minlength=len(SUBSPACES) + 2)", "as above"),
    Equivalent(
        "_groups",
        "torch.sort(index, stable=None)",
        "a group's neurons are taken and put back through the same indices, so their "
        "order within the group changes no value; and torch's CPU sort keeps equal keys "
        "in order at these sizes, so the neighbour error's neuron list (tested) is the same",
    ),
    Equivalent("_groups", "torch.sort(index, )", "as above"),
    Equivalent("_groups", "torch.sort(index, stable=False)", "as above"),
    # backward_values: its early return for a layer of no neurons.
    Equivalent(
        "backward_values",
        "nothing = x.new_empty(1)",
        "the placeholder for a gradient that is not needed: _backward returns None in its place",
    ),
    Equivalent(
        "backward_values",
        "nothing = None",
        "a layer of no neurons: the placeholder for a gradient that is not needed, which "
        "_backward drops (tested: test_runtime.py, a layer of no neurons)",
    ),
    Equivalent(
        "backward_values",
        "if (need_input) and False else nothing",
        "a layer of no neurons: the input has no elements, so the empty placeholder is "
        "its gradient once _in_layout_of gives it the input's shape (tested)",
    ),
    Equivalent(
        "backward_values",
        "if (need_input) or True else nothing",
        "a layer of no neurons: a gradient that is not needed is dropped by _backward",
    ),
    Equivalent("backward_values", "if (need_coeffs) or True else nothing", "as above"),
    # torch_backward, the PyTorch path's body.
    Equivalent(
        "torch_backward",
        "torch.zeros_like(group_coeffs[:, 1])",
        "column 1 has the shape, dtype and device of column 0",
    ),
    Equivalent(
        "torch_backward",
        "summed, strict=None)",
        "the five coefficient outputs and summed_outputs' five flags: strict changes nothing",
    ),
    Equivalent("torch_backward", "summed, strict=False)", "as above"),
    Equivalent("torch_backward", "summed, )", "as above"),
    Equivalent(
        "torch_backward",
        "<= settings.max_value).to(None)",
        "the mask stays bool, and a float tensor times a bool one is of the float's dtype",
    ),
    Equivalent(
        "torch_backward",
        "lambda bad: unclassified_error(",
        "unreachable in the backward: the forward classified the same coefficients and "
        "raised for neurons in no subspace (autograd's version check forbids changing "
        "them in between)",
    ),
    Equivalent("torch_backward", "_groups(index, None)", "as above"),
    Equivalent("torch_backward", "_groups(index, lambda bad: None)", "as above"),
    Equivalent(
        "_backward",
        "grad_x if (need_input) or True else None",
        "a placeholder returned for an input that needs no gradient is ignored by autograd",
    ),
    Equivalent("_backward", "grad_coeffs if (need_coeffs) or True else None", "as above"),
]

# Survivors of the fast subset that a test outside it kills: the Triton branch
# of the backward, whose tests need Triton's interpreter. The report runs that
# file on each (in mutants/, with the mutant switched on) and requires a failure.
TRITON_TESTS = ("tests/test_triton.py",)
KILLED_OUTSIDE = [
    ("backward_values", 'settings.backend == "XXtritonXX"', TRITON_TESTS),
    ("backward_values", 'settings.backend == "TRITON"', TRITON_TESTS),
    ("backward_values", "grads = None", TRITON_TESTS),
    ("backward_values", "None, coeffs, g.contiguous(), settings", TRITON_TESTS),
    ("backward_values", "x.contiguous(), None, g.contiguous(), settings", TRITON_TESTS),
    ("backward_values", "x.contiguous(), coeffs, None, settings", TRITON_TESTS),
    ("backward_values", "g.contiguous(), None, need_input", TRITON_TESTS),
    ("backward_values", "settings, None, need_coeffs", TRITON_TESTS),
    ("backward_values", "settings, need_input, None", TRITON_TESTS),
    ("backward_values", "coeffs, g.contiguous(), settings, need_input, need_coeffs", TRITON_TESTS),
    ("backward_values", "x.contiguous(), g.contiguous(), settings", TRITON_TESTS),
    ("backward_values", "x.contiguous(), coeffs, settings, need_input", TRITON_TESTS),
    ("backward_values", "g.contiguous(), need_input, need_coeffs", TRITON_TESTS),
    ("backward_values", "settings, need_coeffs", TRITON_TESTS),
    ("backward_values", "settings, need_input, )", TRITON_TESTS),
    ("backward_values", "if grads is None:", TRITON_TESTS),
    ("forward_values", 'settings.backend == "XXtritonXX"', TRITON_TESTS),
    ("forward_values", 'settings.backend == "TRITON"', TRITON_TESTS),
    ("forward_values", "y = None", TRITON_TESTS),
    ("forward_values", "_triton.forward(None, coeffs, settings)", TRITON_TESTS),
    ("forward_values", "_triton.forward(x.contiguous(), None, settings)", TRITON_TESTS),
    ("forward_values", "_triton.forward(x.contiguous(), coeffs, None)", TRITON_TESTS),
    ("forward_values", "_triton.forward(coeffs, settings)", TRITON_TESTS),
    ("forward_values", "_triton.forward(x.contiguous(), settings)", TRITON_TESTS),
    ("forward_values", "_triton.forward(x.contiguous(), coeffs, )", TRITON_TESTS),
    ("forward_values", "if y is None:", TRITON_TESTS),
]


# "as above": the reason of the entry before.
for _i, _e in enumerate(EQUIVALENT):
    if _e.reason == "as above":
        EQUIVALENT[_i] = Equivalent(_e.function, _e.added, EQUIVALENT[_i - 1].reason)


def _mutants() -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for path in FILES:
        meta = ROOT / "mutants" / f"{path}.meta"
        if not meta.exists():
            raise SystemExit(f"no mutmut results for {path} ({meta} is missing): run mutmut first")
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def _function(name: str) -> str:
    mangled = name.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
    if mangled.startswith("x\u01c1"):  # a method: "xǁClassǁmethod", as "Class.method"
        return ".".join(mangled[2:].split("\u01c1"))
    return mangled[2:]  # "x_" + the function's name


def _changed_lines(name: str) -> list[str]:
    """The mutant's diff against the original function: its - and + lines."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    return [
        line
        for line in get_diff_for_mutant(name).splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def _fails(name: str, tests: tuple[str, ...]) -> bool:
    """Whether ``tests`` fail with mutant ``name`` switched on (in mutants/)."""
    import os
    import subprocess

    env = {**os.environ, "MUTANT_UNDER_TEST": name, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    run = subprocess.run(command, cwd=ROOT / "mutants", env=env, capture_output=True)
    return run.returncode != 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    args = parser.parse_args(argv)

    codes = _mutants()
    survivors = sorted(k for k, v in codes.items() if v == 0)
    changed = {name: _changed_lines(name) for name in survivors}
    added = {
        name: " ".join(line[1:].strip() for line in lines if line.startswith("+"))
        for name, lines in changed.items()
    }
    explained: dict[str, Equivalent] = {}
    unexplained: list[str] = []
    for name in survivors:
        match = next(
            (e for e in EQUIVALENT if e.function == _function(name) and e.added in added[name]),
            None,
        )
        if match is None:
            unexplained.append(name)
        else:
            explained[name] = match
    killed_outside: dict[str, tuple[str, ...]] = {}
    for name in list(unexplained):
        tests = next(
            (t for f, text, t in KILLED_OUTSIDE if f == _function(name) and text in added[name]),
            None,
        )
        if tests is not None and _fails(name, tests):
            unexplained.remove(name)
            killed_outside[name] = tests
    unused = [e for e in EQUIVALENT if e not in explained.values()]
    status = Counter(
        (
            "killed"
            if v in KILLED
            else "survived" if v == 0 else "not checked" if v is None else "timeout or other"
        )
        for v in codes.values()
    )

    lines = [
        f"mutmut over {', '.join(FILES)}: {len(codes)} mutants; "
        + ", ".join(f"{n} {s}" for s, n in sorted(status.items())),
        f"survivors of the fast subset killed by other tests: {len(killed_outside)}; "
        f"shown equivalent: {len(explained)}; not explained: "
        f"{len(unexplained)}",
        "",
    ]
    for name, tests in killed_outside.items():
        lines.append(f"- killed by {', '.join(tests)} (outside the fast subset): `{name}`")
    for name, e in explained.items():
        lines.append(f"- equivalent `{name}`: {e.reason}")
    for name in unexplained:
        lines += [
            f"- SURVIVED `{name}`:",
            "",
            *("      " + line for line in changed[name]),
            "",
        ]
    for e in unused:
        lines.append(f"- listed equivalent no longer seen: {e.function}: {e.added!r}")
    others = sorted(k for k, v in codes.items() if v is None or (v not in KILLED and v != 0))
    for name in others:
        lines.append(f"- NOT KILLED (exit code {codes[name]}): `{name}`")
    report = "\n".join(lines)
    print(report)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report + "\n")
    return 1 if unexplained or others or unused else 0


if __name__ == "__main__":
    sys.exit(main())
