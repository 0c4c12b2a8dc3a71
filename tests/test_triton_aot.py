"""Every Triton kernel variant compiles ahead of time for real GPUs, with none here.

Runs in a subprocess: kernels decorated under TRITON_INTERPRET=1 (as
tests/test_triton.py imports them) cannot be compiled, and a fresh Triton cache
makes every compilation happen (a cached one would prove nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (it is in the dev extra)")

ROOT = Path(__file__).resolve().parent.parent

# For each target: compile every variant, read ptxas's (or AMDGCN's) register
# report, print one JSON line per variant. A failure to compile raises.
_SCRIPT = """
import json, sys
from triton.backends.compiler import GPUTarget
from deu import _triton_aot
targets = {"sm_80": GPUTarget("cuda", 80, 32), "sm_90": GPUTarget("cuda", 90, 32),
           "gfx942": GPUTarget("hip", "gfx942", 64)}
for name in sys.argv[1:]:
    for variant in _triton_aot.variants():
        report = _triton_aot.report(variant, targets[name])
        print(json.dumps([name, variant.name, *report]), flush=True)
"""


def _compile(targets: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env |= {"TRITON_CACHE_DIR": str(tmp_path / "cache"), "TRITON_DEFAULT_FP_FUSION": "1"}
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, *targets],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _variants() -> int:
    # 10 subspaces x 2 dtypes x forward/backward x 2 tile shapes, and the
    # classification kernel for 2 dtypes x 2 critical rules.
    return 10 * 2 * 2 * 2 + 2 * 2


def test_every_variant_compiles_for_sm_80_and_sm_90(tmp_path):
    result = _compile(["sm_80", "sm_90"], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 * _variants(), result.stdout[-2000:]
    for target, variant, registers, spill_stores, spill_loads in rows:
        # ptxas reported on every one (at most 255 registers per thread).
        assert 0 < registers <= 255, (target, variant, registers)
        assert spill_stores >= 0 and spill_loads >= 0


def test_every_variant_compiles_for_rocm_gfx942(tmp_path):
    result = _compile(["gfx942"], tmp_path)
    if result.returncode != 0 and "gfx942" in result.stderr and "not supported" in result.stderr:
        pytest.skip(f"this triton cannot compile for gfx942 here: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == _variants()
    assert all(0 < vgprs <= 512 for _, _, vgprs, _, _ in rows), rows


# The classification kernel's PTX for sm_90: how many fused multiply-adds and
# which divisions; once as deu/_triton.py launches it, once with contraction on.
_PTX_SCRIPT = """
import json, triton
from triton.backends.compiler import GPUTarget
from deu import _triton_aot
target = GPUTarget("cuda", 90, 32)
for variant in _triton_aot.variants():
    if variant.kind != "classify":
        continue
    for options in (variant.options, {"enable_fp_fusion": True}):
        ptx = triton.compile(_triton_aot._source(variant), target=target, options=options).asm["ptx"]
        counts = {op: ptx.count(op) for op in ("fma.rn", "div.rn", "div.full", "div.approx")}
        print(json.dumps([variant.name, options["enable_fp_fusion"], counts]), flush=True)
"""


def test_the_classification_kernel_rounds_each_step_as_torch_does(tmp_path):
    # Compiled as launched, the classification must contain no fused multiply-add
    # (b*b - 4ac rounded once would move neurons across the band's edges) and only
    # correctly rounded divisions; compiled with contraction, it does fuse, so
    # this check can fail.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env |= {"TRITON_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-c", _PTX_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 8, result.stdout
    for name, fusion, counts in rows:
        if fusion:
            assert counts["fma.rn"] > 0, (name, counts)
            continue
        assert counts["fma.rn"] == 0 and counts["div.full"] == counts["div.approx"] == 0, (
            name,
            counts,
        )
        # The nearest rule's c = b^2 / (4a) is one correctly rounded division.
        assert counts["div.rn"] == (1 if "nearest" in name else 0), (name, counts)
