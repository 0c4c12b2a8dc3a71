"""Backends: a printer, a template folder and the files it renders.

Adding a backend is adding a folder under templates/ and an entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from derive.printer import (
    CPP,
    CPP_RULES,
    TORCH,
    TORCH_RULES,
    TRITON,
    TRITON_RULES,
    Printer,
    RulePrinter,
)


@dataclass(frozen=True)
class Backend:
    name: str
    # Printer for the kernels' code, or None for a backend that prints no code.
    printer: Printer | None
    # (template under templates/, output path under generated/)
    files: tuple[tuple[str, str], ...]
    # Printer for the classification rules (derive/classify.py), with printer.
    rules: RulePrinter | None = None


BACKENDS = (
    Backend(
        "torch",
        TORCH,
        (
            ("torch/kernels.py.j2", "kernels.py"),
            ("torch/classify.py.j2", "classify.py"),
            ("torch/__init__.py.j2", "__init__.py"),
        ),
        TORCH_RULES,
    ),
    # The formulas, tables and classifier as C++ headers; the fused CPU kernel is
    # deu/csrc/deu_cpu.cpp.
    Backend(
        "cpp",
        CPP,
        (
            ("cpp/deu_tables.h.j2", "deu_tables.h"),
            ("cpp/deu_kernels.h.j2", "deu_kernels.h"),
            ("cpp/deu_classify.h.j2", "deu_classify.h"),
        ),
        CPP_RULES,
    ),
    # The formulas and classifier as Triton device functions; the kernels are deu/_triton.py.
    Backend("triton", TRITON, (("triton/deu_triton.py.j2", "deu_triton.py"),), TRITON_RULES),
    Backend("report", None, (("report/SOLUTIONS.md.j2", "SOLUTIONS.md"),)),
)
