"""The Triton backend: hand-written kernels around the generated formulas.

The formulas are ``deu._generated.deu_triton`` (rendered by ``python -m derive``
from the same CSE'd expressions as the PyTorch kernels); this module loads,
stores and reduces. One kernel classifies the neurons (:func:`classify`: the
generated rules, the same statements as ``deu._subspaces.classify``'s, tested
equal to them bit for bit); they are then grouped by subspace exactly as the
PyTorch path groups them (``deu._plan._groups``), and each group runs one kernel compiled
for its subspace only (a ``tl.constexpr``): no masked evaluation of every
subspace. A program covers a tile of BLOCK_M rows (the elements of a neuron,
over every axis but the neuron axis) by BLOCK_N of the group's neurons; the
per-neuron quantities are computed in the program, on the device.

The coefficient gradients are deterministic: each program writes its tile's
per-neuron sums (in the input's dtype: float32 or float64) to a buffer of
partials, one row per row block, and ``torch.sum`` adds the rows in a fixed
order. No atomics.

Outward gravitation: the default, derived rule's terms are outputs of the
generated derivatives, summed in the backward kernel like every gradient. The
paper's neighbour rule is not in the kernels: with it the backward kernel also
writes the clamp-masked output gradient, and :func:`_gravitation_gradient` hands
it to the PyTorch path's gravitation code (``deu._neighbour._gravitation``),
which runs on the device in eager PyTorch.

triton is imported only when this module is: the runtime does not need it.
"""

from __future__ import annotations

import warnings

import torch
import triton
import triton.language as tl

from deu._generated import COEFFICIENTS, CRITICAL_RULES, SUBSPACES
from deu._generated.deu_triton import (
    DY_DT,
    MAX_VALUE,
    NUM_COEFFICIENTS,
    PARAMETERS,
    SUMMED,
    Y,
    classify_rows,
    derivatives_at,
    store_coefficient_sums,
    value_at,
)
from deu._neighbour import _gravitation
from deu._plan import Settings, _flat, _groups, _take
from deu._subspaces import unclassified_error

# Interpreted: triton.jit was applied with TRITON_INTERPRET=1 set, so the
# kernels run in Python on CPU tensors (how the tests run them).
INTERPRETED = not isinstance(value_at, triton.runtime.JITFunction)


@triton.jit
def classify_kernel(
    coeffs_ptr, params_ptr, effective_ptr, index_ptr, n,
    CRITICAL: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """The generated rules (``deu._generated.deu_triton.classify_rows``, the same
    statements as deu._subspaces.classify's) for BLOCK neurons a program.

    One launch instead of the ~100 elementwise steps of the PyTorch version on
    (C,)-sized tensors. Launched without floating-point contraction, so b*b - 4ac
    and b*b/(4a) round as the PyTorch steps do and every neuron lands in the same
    subspace (tests/test_triton.py compares the two bit for bit). epsilon is in
    the parameter vector, in the coefficients' dtype, as torch compares with it.
    """
    neuron = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = neuron < n
    index = classify_rows(coeffs_ptr, effective_ptr, neuron, ok, params_ptr, CRITICAL)
    tl.store(index_ptr + neuron, index, mask=ok)


CLASSIFY_BLOCK = 128


def classify(coeffs: torch.Tensor, params: torch.Tensor, critical: str):
    """(effective coefficients, subspace index per neuron), as deu._subspaces.classify
    returns them, in one kernel launch; ``params`` is the parameter vector."""
    neurons = coeffs.shape[0]
    effective = torch.empty_like(coeffs)
    index = torch.empty(neurons, dtype=torch.long, device=coeffs.device)
    if neurons:
        classify_kernel[(triton.cdiv(neurons, CLASSIFY_BLOCK),)](
            coeffs, params, effective, index, neurons,
            CRITICAL=CRITICAL_RULES.index(critical), BLOCK=CLASSIFY_BLOCK, enable_fp_fusion=False,
        )  # fmt: skip
    return effective, index


@triton.jit
def _tile(neurons_ptr, n_group, rows, neurons, inner, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's neurons (global indices, and which are real) and the
    offsets and mask of its elements in x viewed as (outer, neurons, inner)."""
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < n_group
    # Columns past the group repeat its last neuron: same subspace, finite work.
    neuron = tl.load(neurons_ptr + tl.minimum(cols, n_group - 1)).to(tl.int64)
    j = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = j < rows
    o = j // inner
    i = j - o * inner
    offsets = (o[:, None] * neurons + neuron[None, :]) * inner + i[:, None]
    return neuron, col_ok, offsets, row_ok[:, None] & col_ok[None, :]


@triton.jit
def forward_kernel(
    x_ptr,
    y_ptr,
    coeffs_ptr,
    params_ptr,
    neurons_ptr,
    n_group,
    rows,
    neurons,
    inner,
    SUBSPACE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    neuron, col_ok, offsets, mask = _tile(
        neurons_ptr, n_group, rows, neurons, inner, BLOCK_M, BLOCK_N
    )
    # The settings are in the input's dtype (a float argument would be float32).
    bound = tl.load(params_ptr + MAX_VALUE)
    t = tl.load(x_ptr + offsets, mask=mask, other=0.0)
    y = value_at(SUBSPACE, t, coeffs_ptr, neuron, params_ptr)
    # Comparisons keep NaN as NaN, as torch.clamp does.
    y = tl.where(y > bound, bound, tl.where(y < -bound, -bound, y))
    tl.store(y_ptr + offsets, y, mask=mask)


@triton.jit
def backward_kernel(
    x_ptr,
    g_ptr,
    coeffs_ptr,
    params_ptr,
    neurons_ptr,
    grad_x_ptr,
    masked_g_ptr,
    partials_ptr,
    n_group,
    rows,
    neurons,
    inner,
    SUBSPACE: tl.constexpr,
    NEED_INPUT: tl.constexpr,
    NEED_COEFFS: tl.constexpr,
    WRITE_MASKED_G: tl.constexpr,
    SUMMED: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    neuron, col_ok, offsets, mask = _tile(
        neurons_ptr, n_group, rows, neurons, inner, BLOCK_M, BLOCK_N
    )
    bound = tl.load(params_ptr + MAX_VALUE)
    t = tl.load(x_ptr + offsets, mask=mask, other=0.0)
    g = tl.load(g_ptr + offsets, mask=mask, other=0.0)
    d = derivatives_at(SUBSPACE, t, coeffs_ptr, neuron, params_ptr)
    # The output clamp passes no gradient where it is active.
    g = g * (tl.abs(d[Y]) <= bound).to(g.dtype)
    if NEED_INPUT:
        tl.store(grad_x_ptr + offsets, g * d[DY_DT], mask=mask)
    if WRITE_MASKED_G:
        tl.store(masked_g_ptr + offsets, g, mask=mask)
    if NEED_COEFFS:
        # A coefficient that is zero in the subspace has the derived gravitation
        # term as its output: SUMMED (the generated table's bits) leaves it out
        # where it is not to be used.
        row = (tl.program_id(0).to(tl.int64) * neurons + neuron) * NUM_COEFFICIENTS
        store_coefficient_sums(partials_ptr + row, g, d, mask, col_ok, SUMMED)


def blocks(inner: int, dtype: torch.dtype) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N): a neuron's elements are contiguous runs of ``inner``.

    With inner == 1 ((N, C), dim=-1) a row of neighbouring neurons is contiguous,
    so a tile spans 16 neurons; otherwise one neuron and 1024 of its elements.
    float64 tiles are smaller (16 rows of 16 neurons, or 512 elements): with
    larger ones ptxas runs out of registers and spills in several subspaces'
    backward kernels (255 registers and 16-304 bytes at 64x16 with Triton 3.9,
    up to 184 bytes at 32x16 with Triton 3.6; ``make triton-report``).
    """
    if inner == 1:
        return (16 if dtype == torch.float64 else 64), 16
    return (512 if dtype == torch.float64 else 1024), 1


_state: dict[str, BaseException] = {}


def _usable(device: torch.device) -> bool:
    """False after a kernel failed (warned once); raises for CPU tensors with
    compiled (not interpreted) kernels."""
    if device.type == "cpu" and not INTERPRETED:
        raise ValueError(
            "deu: backend 'triton' got CPU tensors, but its kernels were compiled for a GPU: "
            "set TRITON_INTERPRET=1 before triton is first imported to run them interpreted"
        )
    return "failed" not in _state


def _failed(error: BaseException) -> None:
    _state["failed"] = error
    warnings.warn(
        f"deu: a Triton kernel failed to compile or launch ({type(error).__name__}: "
        f"{str(error)[:2000]}); using the generated PyTorch path",
        RuntimeWarning,
        stacklevel=4,
    )


def _launch_plan(x: torch.Tensor, coeffs: torch.Tensor, settings: Settings):
    """Effective coefficients, (subspace, its neurons) groups and the shape numbers;
    None if the classification kernel failed (warned once)."""
    # Filled on the device (torch.tensor of a list would copy from the host and
    # wait for the stream).
    params = x.new_empty(len(PARAMETERS))
    for i, name in enumerate(PARAMETERS):
        params[i] = getattr(settings, name)
    try:
        effective, index = classify(coeffs.contiguous(), params, settings.critical)
    except Exception as error:  # noqa: BLE001 - any compile or launch failure: fall back
        _failed(error)
        return None
    groups = _groups(index, lambda bad: unclassified_error(coeffs, bad))
    outer, neurons, inner = _flat(x, settings.dim)
    rows = outer * inner
    all_neurons = torch.arange(neurons, device=x.device)
    plan = [(s, all_neurons if idx is None else idx) for s, idx in groups]
    return effective, groups, plan, params, rows, neurons, inner


def forward(x: torch.Tensor, coeffs: torch.Tensor, settings: Settings) -> torch.Tensor | None:
    """The clamped activation of contiguous ``x``; None if the kernels cannot run."""
    if not _usable(x.device):
        return None
    launch = _launch_plan(x, coeffs, settings)
    if launch is None:
        return None
    effective, _, plan, params, rows, neurons, inner = launch
    y = torch.empty_like(x)
    block_m, block_n = blocks(inner, x.dtype)
    try:
        for s, idx in plan:
            if rows == 0:
                break
            grid = (triton.cdiv(rows, block_m), triton.cdiv(len(idx), block_n))
            forward_kernel[grid](
                x, y, effective, params, idx, len(idx), rows, neurons, inner,
                SUBSPACE=s, BLOCK_M=block_m, BLOCK_N=block_n,
            )  # fmt: skip
    except Exception as error:  # noqa: BLE001 - any compile or launch failure: fall back
        _failed(error)
        return None
    return y


def _gravitation_gradient(x, coeffs, effective, masked_g, settings, groups) -> torch.Tensor:
    """Outward gravitation's gradient (neurons, 5), from the PyTorch path's code.

    The one place gravitation enters this backend: every group with a singular
    coefficient, its inputs and clamp-masked output gradient, through
    ``deu._neighbour._gravitation``.
    """
    grad = torch.zeros_like(effective)
    dim = settings.dim
    for s, idx in groups:
        subspace = SUBSPACES[s]
        if not any(subspace.zero):
            continue
        contribution = _gravitation(
            subspace,
            _take(coeffs, 0, idx),
            _take(effective, 0, idx),
            _take(x, dim, idx),
            _take(masked_g, dim, idx),
            settings,
            idx,
        )
        if idx is None:
            grad += contribution
        else:
            grad[idx] += contribution
    return grad


def backward(
    x: torch.Tensor,
    coeffs: torch.Tensor,
    g: torch.Tensor,
    settings: Settings,
    need_input: bool,
    need_coeffs: bool,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(grad of x, grad of coeffs) for contiguous ``x`` and ``g``; empty where not
    needed; None if the kernels cannot run."""
    if not _usable(x.device):
        return None
    launch = _launch_plan(x, coeffs, settings)
    if launch is None:
        return None
    effective, groups, plan, params, rows, neurons, inner = launch
    block_m, block_n = blocks(inner, x.dtype)
    row_blocks = triton.cdiv(rows, block_m)
    nothing = x.new_empty(0)
    grad_x = torch.empty_like(x) if need_input else nothing
    partials = x.new_zeros((row_blocks, neurons, len(COEFFICIENTS))) if need_coeffs else nothing
    # Only groups with a singular coefficient have gravitation neighbours (the
    # paper's rule; the derived rule's terms are outputs of the kernels).
    gravitation = need_coeffs and settings.gravitation == "neighbour"
    gravitation = gravitation and any(any(SUBSPACES[s].zero) for s, _ in plan)
    masked_g = torch.zeros_like(x) if gravitation else nothing
    try:
        for s, idx in plan:
            if rows == 0:
                break
            write_masked_g = gravitation and any(SUBSPACES[s].zero)
            grid = (row_blocks, triton.cdiv(len(idx), block_n))
            backward_kernel[grid](
                x, g, effective, params, idx, grad_x, masked_g, partials,
                len(idx), rows, neurons, inner,
                SUBSPACE=s, NEED_INPUT=need_input, NEED_COEFFS=need_coeffs,
                WRITE_MASKED_G=write_masked_g, SUMMED=SUMMED[settings.gravitation][s],
                BLOCK_M=block_m, BLOCK_N=block_n,
            )  # fmt: skip
    except Exception as error:  # noqa: BLE001 - any compile or launch failure: fall back
        _failed(error)
        return None
    if not need_coeffs:
        return grad_x, nothing
    grad_coeffs = partials.sum(dim=0)  # a fixed order: deterministic
    if gravitation:
        grad_coeffs = grad_coeffs + _gravitation_gradient(
            x, coeffs, effective, masked_g, settings, groups
        )
    return grad_x, grad_coeffs
