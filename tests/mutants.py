"""make mutants: plausible bugs, one at a time in a scratch copy, each must be caught.

Every mutant is a small edit of a source file (the runtime's subspace rules,
the critical rules and the output clamp, in deu/ and in the fused kernel's
source deu/csrc/deu_cpu.cpp, or the same bug in both) or of a generated file's
bytes. The checkout is copied once to a temporary folder; each mutant is
applied there, templates (when a mutant edits one) are re-rendered with
`python -m derive regenerate` (in the copy), and the mutant's named test subset
runs with -x. A mutant is killed when the subset fails; the run fails if any
survives, or if a mutant no longer applies (its text is not exactly once in
the source: update the list) or breaks the kernel's build (not a plausible bug).

    python tests/mutants.py            # all (about 20 minutes on one core)
    python tests/mutants.py --only cpp-sign-condition-dropped --keep
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
# The fast subset every rule mutant must be caught by (about 10 s unmutated).
FAST = ("tests/test_rules.py", "tests/test_backends.py", "tests/test_runtime.py")
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


PYTHON_RULES = [
    (
        "a-threshold-inclusive",
        "za, zb, zc = a.abs() < epsilon,",
        "za, zb, zc = a.abs() <= epsilon,",
    ),
    ("c-threshold-no-abs", ", c.abs() < epsilon\n", ", c < epsilon\n"),
    (
        "all-zero-b-negative",
        "torch.where(all_zero, torch.full_like(b, epsilon)",
        "torch.where(all_zero, torch.full_like(b, -epsilon)",
    ),
    ("sign-condition-dropped", "(disc.abs() < epsilon) & same_sign", "(disc.abs() < epsilon)"),
    ("band-no-abs", "(disc.abs() < epsilon) & same_sign", "(disc < epsilon) & same_sign"),
    ("nearest-c-over-2a", "b * b / (4 * a)", "b * b / (2 * a)"),
    (
        "paper-a-is-abs-b",
        "torch.where(band, half * torch.sign(a), a)",
        "torch.where(band, 2 * half * torch.sign(a), a)",
    ),
    ("rule-a0_b0_c", '_where(za & zb & ~zc, "a0_b0_c"', '_where(za & zb & zc, "a0_b0_c"'),
    ("rule-a0_b_c0", '_where(za & ~zb & zc, "a0_b_c0"', '_where(za & ~zb & ~zc, "a0_b_c0"'),
    ("rule-a0_b_c", '_where(za & ~zb & ~zc, "a0_b_c"', '_where(za & zb & ~zc, "a0_b_c"'),
    ("rule-a_b0_c0", '_where(~za & zb & zc, "a_b0_c0"', '_where(~za & zb & ~zc, "a_b0_c0"'),
    ("rule-a_b0_c_pos", '(a * c > 0), "a_b0_c_pos"', '(a * c < 0), "a_b0_c_pos"'),
    ("rule-a_b0_c_neg", '(a * c < 0), "a_b0_c_neg"', '(a * c > 0), "a_b0_c_neg"'),
    ("rule-a_b_c0", '_where(~za & ~zb & zc, "a_b_c0"', '_where(~za & zb & zc, "a_b_c0"'),
    ("rule-disc_pos", '(disc > 0), "a_b_c_disc_pos"', '(disc < 0), "a_b_c_disc_pos"'),
    ("rule-disc_neg", '(disc <= 0), "a_b_c_disc_neg"', '(disc >= 0), "a_b_c_disc_neg"'),
]
CPP_RULES = [
    ("a-threshold-inclusive", "za = std::abs(a) < epsilon", "za = std::abs(a) <= epsilon"),
    ("c-threshold-no-abs", "zc = std::abs(c) < epsilon", "zc = c < epsilon"),
    ("all-zero-b-negative", "b = all_zero ? epsilon :", "b = all_zero ? -epsilon :"),
    ("sign-condition-dropped", " && sgn(a) == sgn(c);", ";"),
    ("band-no-abs", "std::abs(disc) < epsilon &&", "disc < epsilon &&"),
    ("nearest-c-over-2a", "c = b * b / (S(4) * a);", "c = b * b / (S(2) * a);"),
    ("paper-a-is-abs-b", "a = half * sgn(a);", "a = S(2) * half * sgn(a);"),
    (
        "rule-a0_b0_c",
        "if (za && zb && !zc) index = A0_B0_C;",
        "if (za && zb && zc) index = A0_B0_C;",
    ),
    ("rule-a0_b_c0", "if (za && !zb && zc) index", "if (za && !zb && !zc) index"),
    (
        "rule-a0_b_c",
        "if (za && !zb && !zc) index = A0_B_C;",
        "if (za && zb && !zc) index = A0_B_C;",
    ),
    ("rule-a_b0_c0", "if (!za && zb && zc) index", "if (!za && zb && !zc) index"),
    ("rule-a_b0_c_pos", "a * c > S(0)) index = A_B0_C_POS", "a * c < S(0)) index = A_B0_C_POS"),
    ("rule-a_b0_c_neg", "a * c < S(0)) index = A_B0_C_NEG", "a * c > S(0)) index = A_B0_C_NEG"),
    ("rule-a_b_c0", "if (!za && !zb && zc) index", "if (!za && zb && zc) index"),
    ("rule-disc_pos", "disc > S(0)) index = A_B_C_DISC_POS", "disc < S(0)) index = A_B_C_DISC_POS"),
    (
        "rule-disc_neg",
        "disc <= S(0)) index = A_B_C_DISC_NEG",
        "disc >= S(0)) index = A_B_C_DISC_NEG",
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


def _on_both_backends(name: str) -> Mutant:
    """The same bug in deu/_subspaces.py and in the kernel: no cross-backend test sees it."""
    (py,) = (Edit(SUBSPACES_PY, o, n) for rule, o, n in PYTHON_RULES if rule == name)
    (cpp,) = (Edit(KERNEL_SOURCE, o, n) for rule, o, n in CPP_RULES if rule == name)
    return Mutant(f"both-{name}", (py, cpp))


# Outward gravitation: the derived terms summed (or not) in each direction, the
# neighbour rule switched off; caught by the independent references of
# test_gravitation.py (and the backends' per-element comparison).
GRAVITATION_TESTS = (*FAST, "tests/test_gravitation.py")
DERIVED_IN_PYTHON = Edit(
    PLAN_PY,
    "return (*(derived or not zero for zero in subspace.zero), True, True)",
    "return (*(not zero for zero in subspace.zero), True, True)",
)
GRAVITATION = [
    Mutant("py-derived-gravitation-dropped", (DERIVED_IN_PYTHON,), GRAVITATION_TESTS),
    Mutant(
        "py-neighbour-gravitation-dropped",
        (Edit(VALUES_PY, 'if settings.gravitation == "neighbour":', "if False:"),),
        GRAVITATION_TESTS,
    ),
    *(
        Mutant(
            f"cpp-derived-gravitation-in-{p}-dropped",
            (
                Edit(
                    KERNEL_SOURCE,
                    f"const bool use_{p} = !ZERO[S][{j}] || derived_gravitation;",
                    f"const bool use_{p} = !ZERO[S][{j}];",
                ),
            ),
            GRAVITATION_TESTS,
        )
        for j, p in enumerate("abc")
    ),
    Mutant(
        "cpp-derived-gravitation-in-c-negated",
        (
            Edit(
                KERNEL_SOURCE,
                "if (use_c) v2 = at::vec::fmadd(gi, d[4], v2);",
                "if (use_c) v2 = ZERO[S][2] ? at::vec::fmadd(gi.neg(), d[4], v2)"
                " : at::vec::fmadd(gi, d[4], v2);",
            ),
        ),
        GRAVITATION_TESTS,
    ),
]

MUTANTS = [
    *_rules("py", SUBSPACES_PY, PYTHON_RULES),
    *_rules("cpp", KERNEL_SOURCE, CPP_RULES),
    Mutant("py-clamp-gradient-mask-dropped", CLAMP_MASK[:1]),
    Mutant("cpp-clamp-gradient-mask-dropped", CLAMP_MASK[1:]),
    Mutant("py-output-clamp-dropped", OUTPUT_CLAMP[:1]),
    Mutant("cpp-output-clamp-dropped", OUTPUT_CLAMP[1:]),
    # The rows of issue 13's table, on both backends at once.
    _on_both_backends("sign-condition-dropped"),
    _on_both_backends("paper-a-is-abs-b"),
    _on_both_backends("nearest-c-over-2a"),
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
                if any(edit.path.startswith("templates/") for edit in mutant.edits):
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
