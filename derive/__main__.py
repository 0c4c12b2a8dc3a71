"""python -m derive {regenerate,check,show SUBSPACE}."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from derive.pipeline import GENERATED, check, derive_kernel, regenerate
from derive.printer import TORCH
from derive.spec import SUBSPACES, by_name


def _show(name: str) -> None:
    kernel = derive_kernel(by_name(name))
    subspace = kernel.subspace
    solution = kernel.derivation.solution
    print(f"{subspace.name}: {subspace.description}")
    print(f"  conditions: {subspace.conditions}")
    for q, definition in subspace.auxiliaries.items():
        print(f"  {q} = {definition}")
    print(f"  homogeneous part:   {solution.homogeneous}")
    print(f"  step response:      {solution.step_response}")
    for output, expr in kernel.derivation.outputs.items():
        print(f"  {output} = {expr}")
    print("  per-neuron code:")
    for symbol, expr in kernel.neuron.assignments:
        print(f"    {symbol} = {TORCH(expr)}")
    for symbol, expr in kernel.neuron.results.items():
        print(f"    {symbol} = {TORCH(expr)}")
    print("  per-element code (value and derivatives):")
    for symbol, expr in kernel.derivatives.assignments:
        print(f"    {symbol} = {TORCH(expr)}")
    for output, expr in kernel.derivatives.results.items():
        print(f"    {output} = {'0' if expr is None else TORCH(expr)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m derive", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    regen = commands.add_parser("regenerate", help="derive everything and write generated/")
    regen.add_argument("--out", type=Path, default=GENERATED, help="output folder")
    chk = commands.add_parser("check", help="fail with a diff if generated/ is stale")
    chk.add_argument("--against", type=Path, default=GENERATED, help="folder to compare")
    show = commands.add_parser("show", help="print one subspace's derivation")
    show.add_argument("subspace", choices=[s.name for s in SUBSPACES])
    args = parser.parse_args(argv)
    if args.command == "regenerate":
        for path in regenerate(args.out):
            print(f"wrote {args.out / path}")
        return 0
    if args.command == "check":
        status = check(args.against)
        if status == 0:
            print(f"{args.against} is current")
        return status
    _show(args.subspace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
