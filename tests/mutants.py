"""make mutants: plausible bugs, one at a time in a scratch copy, each must be caught.

Every mutant is a small edit of a source file (the classification rules in
derive/spec.py, the program derive/classify.py builds from them, a backend's
rule printer, the drivers' choice of rule, the output clamp and gravitation in
deu/ and in the fused kernel's source deu/csrc/deu_cpu.cpp) or of a generated
file's bytes. The checkout is copied once to a temporary folder; each mutant is
applied there, generated/ (when a mutant edits derive/ or templates/) is
re-rendered with `python -m derive regenerate` (in the copy), and the mutant's named test subset
runs with -x. A mutant is killed when the subset fails; the run fails if any
survives, or if a mutant no longer applies (its text is not exactly once in
the source: update the list) or breaks the kernel's build (not a plausible bug).

    python tests/mutants.py            # all (about 20 minutes on one core)
    python tests/mutants.py --only spec-sign-condition-dropped --keep
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBSPACES_PY = "deu/_subspaces.py"
VALUES_PY = "deu/_values.py"
PLAN_PY = "deu/_plan.py"
KERNEL_SOURCE = "deu/csrc/deu_cpu.cpp"
# The fast subset every rule mutant must be caught by (about a minute unmutated).
FAST = (
    "tests/test_rules.py",
    "tests/test_backends.py",
    "tests/test_runtime.py",
    "tests/test_classification.py",
)
BYTES = ("tests/test_derive.py::test_regeneration_is_byte_identical_to_the_checked_in_files",)
BUILD_FAILED = "building the fused CPU kernel failed"


@dataclass(frozen=True)
class Edit:
    path: str
    old: str  # must occur exactly once in path; "CRLF": rewrite with CRLF line ends
    new: str


@dataclass(frozen=True)
class Mutant:
    name: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...] = FAST


def _rules(prefix: str, path: str, edits: list[tuple[str, str, str]]) -> list[Mutant]:
    return [Mutant(f"{prefix}-{name}", (Edit(path, old, new),)) for name, old, new in edits]


SPEC_PY = "derive/spec.py"
PROGRAM_PY = "derive/classify.py"
PRINTER_PY = "derive/printer.py"
# The classification rules are written once, in derive/spec.py, and rendered for
# every backend (derive/classify.py builds the program, derive/printer.py prints
# it): a mutant there is the same bug on every backend, which no cross-backend
# comparison sees. Each edit under derive/ or templates/ is re-rendered first.
SPEC_RULES = [
    ("all-zero-b-negative", 'fallback={"b": EPSILON}', 'fallback={"b": -EPSILON}'),
    (
        "sign-condition-dropped",
        "inside=(abs(DISC) < EPSILON) & rules.eq(rules.sign(A), rules.sign(C)),",
        "inside=abs(DISC) < EPSILON,",
    ),
    ("band-no-abs", "inside=(abs(DISC) < EPSILON)", "inside=(DISC < EPSILON)"),
    ("nearest-c-over-2a", '"nearest": {"c": B * B / (4 * A)}', '"nearest": {"c": B * B / (2 * A)}'),
    (
        "paper-a-is-abs-b",
        '"paper": {"a": abs(B) / 2 * rules.sign(A),',
        '"paper": {"a": abs(B) * rules.sign(A),',
    ),
    ("disc-is-b2-minus-2ac", '{"disc": B * B - 4 * A * C}', '{"disc": B * B - 2 * A * C}'),
    ("rule-a_b0_c_pos", "A * C > 0,", "A * C < 0,"),
    ("rule-a_b0_c_neg", "A * C < 0,", "A * C > 0,"),
    (
        "rule-disc_pos",
        "DISC > 0,\n        2,\n        parametrisation={b: -a * (r1 + r2)",
        "DISC < 0,\n        2,\n        parametrisation={b: -a * (r1 + r2)",
    ),
    ("rule-disc_neg", "classified_by=DISC <= 0,", "classified_by=DISC >= 0,"),
]
PROGRAM_RULES = [
    (
        "threshold-inclusive",
        "abs(rules.var(p)) < classification.zero_below",
        "abs(rules.var(p)) <= classification.zero_below",
    ),
    (
        "threshold-no-abs",
        "abs(rules.var(p)) < classification.zero_below",
        "rules.var(p) < classification.zero_below",
    ),
    ("band-not-first", "parts.append(~rules.var(BAND))", "pass"),
    (
        "fallback-leaves-zero-flag",
        'assign(zero_flag(p), flags[p] & ~all_zero, "bool")',
        'assign(zero_flag(p), flags[p], "bool")',
    ),
    ("pattern-inverted", "f if z else ~f for f, z", "~f if z else f for f, z"),
]
# One backend's spelling of an operation: the cross-backend tests see these.
PRINTER_RULES = [
    ("cpp-less-is-less-equal", '"lt": ("{0} < {1}", _C_REL,', '"lt": ("{0} <= {1}", _C_REL,'),
    (
        "cpp-where-branches-swapped",
        '"where": ("{0} ? {1} : {2}", _C_TERNARY,',
        '"where": ("{0} ? {2} : {1}", _C_TERNARY,',
    ),
    ("cpp-and-is-or", '"and": ("{0} && {1}", _C_AND,', '"and": ("{0} || {1}", _C_AND,'),
    ("torch-and-is-or", 'table["and"] = ("{0} & {1}",', 'table["and"] = ("{0} | {1}",'),
    ("torch-sign-is-abs", '"sign": "torch.sign({0})",', '"sign": "torch.abs({0})",'),
]
# The drivers' choice of the critical rule.
DRIVER_RULES = [
    Mutant(
        "py-critical-rule-ignored",
        (Edit(SUBSPACES_PY, "critical=CRITICAL_RULES.index(critical)", "critical=0"),),
    ),
    Mutant(
        "cpp-critical-rules-swapped",
        (
            Edit(
                KERNEL_SOURCE,
                "critical_paper ? CRITICAL_PAPER : CRITICAL_NEAREST",
                "critical_paper ? CRITICAL_NEAREST : CRITICAL_PAPER",
            ),
        ),
    ),
    Mutant(
        "cpp-template-projection-inverted",
        (
            Edit(
                "templates/cpp/deu_classify.h.j2",
                "if (critical == CRITICAL_{{ rule | upper }}) {",
                "if (critical != CRITICAL_{{ rule | upper }}) {",
            ),
        ),
    ),
]
CLAMP_MASK = (
    Edit(VALUES_PY, " * (outputs[0].abs() <= settings.max_value).to(g.dtype)", ""),
    Edit(
        KERNEL_SOURCE,
        "const V gi = V::blendv(zero, load_run(gm, j, m), inside);",
        "const V gi = load_run(gm, j, m); (void)inside;",
    ),
)
OUTPUT_CLAMP = (
    Edit(
        VALUES_PY,
        "_assemble(parts, settings.dim).clamp(-settings.max_value, settings.max_value)",
        "_assemble(parts, settings.dim)",
    ),
    Edit(KERNEL_SOURCE, "store_run(ys, j, n, clamp_output(v, bound));", "store_run(ys, j, n, v);"),
)


# Outward gravitation: the derived terms summed (or not) in each direction, the
# neighbour rule switched off; caught by the independent references of
# test_gravitation.py (and the backends' per-element comparison).
GRAVITATION_TESTS = (*FAST, "tests/test_gravitation.py")
PIPELINE_PY = "derive/pipeline.py"
GRAVITATION = [
    # The rule is written once (derive/spec.py, the derivation's gravitation
    # outputs, the pipeline's SUMMED table): a mutant there is every backend's bug.
    Mutant(
        "spec-derived-gravitation-not-summed",
        (
            Edit(
                SPEC_PY,
                'GRAVITATION_RULES = {"derived": True,',
                'GRAVITATION_RULES = {"derived": False,',
            ),
        ),
        GRAVITATION_TESTS,
    ),
    Mutant(
        "spec-neighbour-rule-sums-derived-terms",
        (Edit(SPEC_PY, '"neighbour": False, "off": False}', '"neighbour": True, "off": False}'),),
        GRAVITATION_TESTS,
    ),
    Mutant(
        "pipeline-gravitation-terms-missed",
        (
            Edit(
                PIPELINE_PY,
                "return tuple(_output_of(p) in kernel.derivation.gravitation for p in COEFFICIENTS)",
                "return tuple(False for p in COEFFICIENTS)",
            ),
        ),
        GRAVITATION_TESTS,
    ),
    Mutant(
        "pipeline-output-of-coefficient-shifted",
        (
            Edit(
                PIPELINE_PY,
                '"output_of_coefficient": [OUTPUT_NAMES.index(_output_of(p)) for p in COEFFICIENTS],',
                '"output_of_coefficient": [OUTPUT_NAMES.index(_output_of(p)) % 6 + 1 for p in COEFFICIENTS],',
            ),
        ),
        GRAVITATION_TESTS,
    ),
    # The drivers' reading of the table.
    Mutant(
        "py-derived-gravitation-dropped",
        (
            Edit(
                PLAN_PY,
                "return SUMMED[settings.gravitation][subspace]",
                'return SUMMED["off"][subspace]',
            ),
        ),
        GRAVITATION_TESTS,
    ),
    Mutant(
        "py-neighbour-gravitation-dropped",
        (Edit(VALUES_PY, 'if settings.gravitation == "neighbour":', "if False:"),),
        GRAVITATION_TESTS,
    ),
    Mutant(
        "cpp-derived-gravitation-dropped",
        (
            Edit(
                KERNEL_SOURCE,
                "= SUMMED[gravitation];",
                "= SUMMED[GRAVITATION_OFF];",
            ),
        ),
        GRAVITATION_TESTS,
    ),
    Mutant(
        "cpp-summed-table-ignored",
        (
            Edit(
                KERNEL_SOURCE,
                "if (use[p]) v[p] = at::vec::fmadd(",
                "v[p] = at::vec::fmadd(",
            ),
        ),
        GRAVITATION_TESTS,
    ),
    Mutant(
        "cpp-derived-gravitation-in-c-negated",
        (
            Edit(
                KERNEL_SOURCE,
                "if (use[p]) v[p] = at::vec::fmadd(gi, d[",
                "if (use[p]) v[p] = at::vec::fmadd(p == 2 && ZERO[S][2] ? gi.neg() : gi, d[",
            ),
        ),
        GRAVITATION_TESTS,
    ),
]

MUTANTS = [
    *_rules("spec", SPEC_PY, SPEC_RULES),
    *_rules("program", PROGRAM_PY, PROGRAM_RULES),
    *_rules("printer", PRINTER_PY, PRINTER_RULES),
    *DRIVER_RULES,
    Mutant("py-clamp-gradient-mask-dropped", CLAMP_MASK[:1]),
    Mutant("cpp-clamp-gradient-mask-dropped", CLAMP_MASK[1:]),
    Mutant("py-output-clamp-dropped", OUTPUT_CLAMP[:1]),
    Mutant("cpp-output-clamp-dropped", OUTPUT_CLAMP[1:]),
    Mutant("both-clamp-gradient-mask-dropped", CLAMP_MASK),
    Mutant("generated-kernels-crlf", (Edit("generated/kernels.py", "CRLF", ""),), BYTES),
    *GRAVITATION,
]


def _copy_checkout(scratch: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            target = scratch / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    # deu._generated is generated/ (a package-dir mapping): the copy's, not the checkout's.
    (scratch / "deu" / "_generated").symlink_to("../generated", target_is_directory=True)


def _environment(scratch: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=str(scratch),
        PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS="1",
        # Each mutated kernel builds into the copy, not into ~/.cache.
        TORCH_EXTENSIONS_DIR=str(scratch / "build" / "torch_extensions"),
    )


def _pytest(scratch: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(
            command,
            cwd=scratch,
            env=_environment(scratch),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return done.returncode, done.stdout + done.stderr


def _apply(scratch: Path, edit: Edit) -> None:
    path = scratch / edit.path
    text = path.read_bytes().decode()
    if edit.old == "CRLF":
        path.write_bytes(text.replace("\n", "\r\n").encode())
    else:
        path.write_bytes(text.replace(edit.old, edit.new).encode())


def _regenerate(scratch: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "derive", "regenerate"],
        cwd=scratch,
        env=_environment(scratch),
        check=True,
        capture_output=True,
    )


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("FAILED ") or line.startswith("ERROR "):
            return line.split(" ", 1)[1].split(" - ")[0]
    return ""


def run(mutants: list[Mutant], keep: bool, timeout: float) -> int:
    stale = [
        m.name
        for m in mutants
        for e in m.edits
        if e.old != "CRLF" and (ROOT / e.path).read_text().count(e.old) != 1
    ]
    if stale:
        print(f"these mutants no longer apply (their text is not once in the source): {stale}")
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="deu-mutants-"))
    print(f"scratch copy: {scratch}", flush=True)
    try:
        _copy_checkout(scratch)
        where = subprocess.run(
            [
                sys.executable,
                "-c",
                "import deu._generated as g, derive; print(g.__file__, derive.__file__)",
            ],
            cwd=scratch,
            env=_environment(scratch),
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        if not all(path.startswith(str(scratch)) for path in where):
            print(f"the copy imports the checkout's modules ({where}): not a scratch run")
            return 2
        status, output = _pytest(scratch, FAST, timeout)
        if status != 0:
            print(output[-3000:])
            print("the fast subset fails without a mutant: fix that first")
            return 2
        pristine = {
            p: ((scratch / p).read_bytes(), (scratch / p).stat().st_mtime_ns)
            for p in {e.path for m in mutants for e in m.edits}
            | {"generated/" + f for f in _generated(scratch)}
        }
        results = []
        for mutant in mutants:
            start = time.monotonic()
            try:
                for edit in mutant.edits:
                    _apply(scratch, edit)
                if any(edit.path.startswith(("derive/", "templates/")) for edit in mutant.edits):
                    _regenerate(scratch)
                status, output = _pytest(scratch, mutant.tests, timeout)
                if BUILD_FAILED in output:
                    verdict, detail = "kernel did not build", ""
                elif status == 0:
                    verdict, detail = "SURVIVED", ""
                else:
                    verdict, detail = "killed", _first_failure(output) or output[-200:]
            except subprocess.CalledProcessError as error:
                verdict, detail = "killed", f"derive regenerate failed: {error.stderr[-200:]!r}"
            finally:
                _restore(scratch, pristine)
            seconds = time.monotonic() - start
            results.append((mutant.name, verdict, detail))
            print(f"{mutant.name:40s} {verdict:10s} {seconds:5.0f} s  {detail}", flush=True)
        killed = sum(verdict == "killed" for _, verdict, _ in results)
        print(f"\n{killed} of {len(results)} mutants killed")
        for name, verdict, detail in results:
            if verdict != "killed":
                print(f"  {name}: {verdict} {detail}")
        return 0 if killed == len(results) else 1
    finally:
        if keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _restore(scratch: Path, pristine: dict[str, tuple[bytes, int]]) -> None:
    """Put back what a mutant changed, with its old modification time: the
    kernel's build (ninja) then finds its unmutated build current."""
    for path, (data, mtime) in pristine.items():
        target = scratch / path
        if target.read_bytes() != data:
            target.write_bytes(data)
        os.utime(target, ns=(mtime, mtime))


def _generated(scratch: Path) -> list[str]:
    folder = scratch / "generated"
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only the mutants of these names")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument("--list", action="store_true", help="print the mutants' names and exit")
    parser.add_argument("--timeout", type=float, default=600, help="per test run, in seconds")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(m.name for m in MUTANTS))
        return 0
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in chosen}
    if unknown:
        parser.error(f"no mutants named {sorted(unknown)}")
    return run(chosen, args.keep, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
