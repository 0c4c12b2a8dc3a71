"""Ahead-of-time compilation of every Triton kernel variant, with no GPU present.

``python -m deu._triton_aot [--arch 90] [--hip]`` (``make triton-report``)
compiles each variant (subspace x dtype x forward/backward x tile shape, and
the classification kernel per dtype and critical rule) for
the named target and prints the register and spill counts that ptxas reports
(on a ROCm target: the VGPR and spill counts in the AMDGCN metadata). A spill
is a performance bug. The tests call :func:`compile_variant` for sm_80, sm_90
and gfx942.

Must run without TRITON_INTERPRET=1: interpreted kernels cannot be compiled.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from deu import _triton
from deu._generated import COEFFICIENTS
from deu._generated.deu_triton import CRITICAL_RULES, SUBSPACE_NAMES

DTYPES = {"fp32": torch.float32, "fp64": torch.float64}


class Variant(NamedTuple):
    kind: str  # "forward", "backward" or "classify"
    subspace: int  # the classification's critical rule, for "classify": its CRITICAL_RULES index
    dtype: str  # "fp32" or "fp64"
    tile: tuple[int, int]  # (BLOCK_M, BLOCK_N); (BLOCK, 1) for "classify"

    @property
    def name(self) -> str:
        block_m, block_n = self.tile
        if self.kind == "classify":
            return f"classify {CRITICAL_RULES[self.subspace]} {self.dtype} {block_m}"
        return f"{self.kind} {SUBSPACE_NAMES[self.subspace]} {self.dtype} {block_m}x{block_n}"

    @property
    def options(self) -> dict[str, bool]:
        """Compile options as deu/_triton.py launches the kernel with."""
        return {"enable_fp_fusion": False} if self.kind == "classify" else {}


def variants() -> Iterator[Variant]:
    for dtype, torch_dtype in DTYPES.items():
        # The two tile shapes deu/_triton.py launches: (N, C) rows, (N, C, *) planes.
        for tile in (_triton.blocks(1, torch_dtype), _triton.blocks(2, torch_dtype)):
            for subspace in range(len(SUBSPACE_NAMES)):
                for kind in ("forward", "backward"):
                    yield Variant(kind, subspace, dtype, tile)
        for rule in range(len(CRITICAL_RULES)):
            yield Variant("classify", rule, dtype, (_triton.CLASSIFY_BLOCK, 1))


def _source(variant: Variant) -> ASTSource:
    pointer = f"*{variant.dtype}"
    if variant.kind == "classify":
        fn = _triton.classify_kernel
        signature = {"coeffs_ptr": pointer, "params_ptr": pointer, "effective_ptr": pointer}
        signature |= {"index_ptr": "*i64", "n": "i32"}
        rule = {"CRITICAL": variant.subspace, "BLOCK": variant.tile[0]}
        signature |= {name: "constexpr" for name in rule}
        return ASTSource(fn=fn, signature={n: signature[n] for n in fn.arg_names}, constexprs=rule)
    sizes = {"n_group": "i32", "rows": "i32", "neurons": "i32", "inner": "i32"}
    tile = {"BLOCK_M": variant.tile[0], "BLOCK_N": variant.tile[1]}
    if variant.kind == "forward":
        fn = _triton.forward_kernel
        pointers = ["x_ptr", "y_ptr", "coeffs_ptr", "params_ptr"]
        flags: dict[str, int | bool] = {"SUBSPACE": variant.subspace, **tile}
    else:
        fn = _triton.backward_kernel
        pointers = ["x_ptr", "g_ptr", "coeffs_ptr", "params_ptr"]
        pointers += ["grad_x_ptr", "masked_g_ptr", "partials_ptr"]
        # Every output on: the other flag values only remove stores.
        flags = {"SUBSPACE": variant.subspace, "NEED_INPUT": True, "NEED_COEFFS": True}
        summed_all = (1 << len(COEFFICIENTS)) - 1
        flags |= {"WRITE_MASKED_G": True, "SUMMED": summed_all, **tile}
    signature = {p: pointer for p in pointers} | {"neurons_ptr": "*i64"} | sizes
    signature |= {name: "constexpr" for name in flags}
    # Keep the kernel's own argument order.
    order = fn.arg_names
    return ASTSource(
        fn=fn, signature={n: signature[n] for n in order}, constexprs=dict(flags.items())
    )


class Report(NamedTuple):
    registers: int
    spill_stores: int  # bytes (VGPRs on ROCm)
    spill_loads: int  # bytes (0 on ROCm, which reports one spill count)


def compile_variant(variant: Variant, target: GPUTarget):
    """The compiled kernel (triton.compile's result) of one variant for ``target``."""
    if _triton.INTERPRETED:
        raise RuntimeError("TRITON_INTERPRET=1 is set: interpreted kernels cannot be compiled")
    return triton.compile(_source(variant), target=target, options=variant.options)


def _ptxas_report(ptx: str, arch: int) -> Report:
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        result = subprocess.run(
            [
                get_ptxas(arch).path,
                "-v",
                f"--gpu-name={sm_arch_from_capability(arch)}",
                str(source),
                "-o",
                str(Path(folder) / "kernel.cubin"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    log = result.stderr

    def number(pattern: str) -> int:
        found = re.search(pattern, log)
        if found is None:
            raise RuntimeError(f"ptxas -v printed no {pattern!r}:\n{log}")
        return int(found.group(1))

    return Report(
        number(r"Used (\d+) registers"),
        number(r"(\d+) bytes spill stores"),
        number(r"(\d+) bytes spill loads"),
    )


def _amdgcn_report(asm: str) -> Report:
    def number(key: str) -> int:
        found = re.search(rf"\.{key}:\s+(\d+)", asm)
        if found is None:
            raise RuntimeError(f"no .{key} in the AMDGCN metadata")
        return int(found.group(1))

    return Report(number("vgpr_count"), number("vgpr_spill_count"), 0)


def report(variant: Variant, target: GPUTarget) -> Report:
    kernel = compile_variant(variant, target)
    if target.backend == "cuda":
        assert isinstance(target.arch, int)
        return _ptxas_report(kernel.asm["ptx"], target.arch)
    return _amdgcn_report(kernel.asm["amdgcn"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deu._triton_aot", description=__doc__)
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability (90)")
    parser.add_argument("--hip", metavar="GFX", help="a ROCm target instead, e.g. gfx942")
    args = parser.parse_args(argv)
    target = GPUTarget("hip", args.hip, 64) if args.hip else GPUTarget("cuda", args.arch, 32)
    unit = "VGPRs, spilled VGPRs" if args.hip else "registers, spill stores / loads (bytes)"
    print(f"Triton {triton.__version__}, target {target}: {unit}")
    spilling = 0
    for variant in variants():
        r = report(variant, target)
        spilling += r.spill_stores > 0 or r.spill_loads > 0
        print(f"  {variant.name:<46} {r.registers:4d}  {r.spill_stores:4d} / {r.spill_loads}")
    print(f"{spilling} variants spill")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
