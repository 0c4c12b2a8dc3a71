"""Backends: a printer, a template folder and the files it renders.

Adding a backend is adding a folder under templates/ and an entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from derive.printer import TORCH, Printer


@dataclass(frozen=True)
class Backend:
    name: str
    # Printer for the kernels' code, or None for a backend that prints no code.
    printer: Printer | None
    # (template under templates/, output path under generated/)
    files: tuple[tuple[str, str], ...]


BACKENDS = (
    Backend(
        "torch",
        TORCH,
        (("torch/kernels.py.j2", "kernels.py"), ("torch/__init__.py.j2", "__init__.py")),
    ),
    Backend("report", None, (("report/SOLUTIONS.md.j2", "SOLUTIONS.md"),)),
)
