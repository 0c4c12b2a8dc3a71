"""``python -m deu.experiments NAME [--quick] [--out DIR]``: run one experiment."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from deu.experiments import EXPERIMENTS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    listing = "\n".join(f"  {name:<9} {text}" for name, (_, text) in EXPERIMENTS.items())
    parser = argparse.ArgumentParser(
        prog="python -m deu.experiments",
        description="Run one of the paper's experiments.\n\nexperiments:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=sorted(EXPERIMENTS), metavar="NAME")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--out", type=Path, help="output folder (default build/experiments/NAME)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    parser.add_argument(
        "--data",
        type=Path,
        help="digits only: a folder with MNIST/Fashion-MNIST IDX files to use instead",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path("build") / "experiments" / args.name
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.data is not None and args.name != "digits":
        raise SystemExit(f"--data is for the digits experiment, not {args.name!r}")
    module = importlib.import_module(f"deu.experiments.{EXPERIMENTS[args.name][0]}")
    from deu.experiments._common import quick_threads

    args.out.mkdir(parents=True, exist_ok=True)
    with quick_threads(args):
        summary = module.run(args)
    print(f"wrote {args.name} results to {args.out}")
    return summary


if __name__ == "__main__":
    main()
