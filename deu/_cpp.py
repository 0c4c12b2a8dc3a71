"""The fused CPU kernel: built from deu/csrc/deu_cpu.cpp (which includes the
generated headers in generated/) at first use, then cached, and called with the
launch plan's arguments (``deu._plan._kernel_arguments``).

The build uses the system C++ compiler through torch.utils.cpp_extension (and
ninja). If it fails, the generated PyTorch path is used instead, with one
warning per process.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import deu._generated as generated
from deu._plan import Settings, _kernel_arguments

_SOURCE = Path(__file__).parent / "csrc" / "deu_cpu.cpp"
_LOCAL_HEADERS = tuple(  # hand-written, included by _SOURCE
    Path(__file__).parent / "csrc" / name
    for name in ("vector_math.h", "tiling.h", "parametrisation.h")
)
_HEADERS = ("deu_tables.h", "deu_kernels.h", "deu_classify.h")  # generated, included by _SOURCE
_state: dict[str, ModuleType | None] = {}


def _folder() -> Path:
    return Path(generated.__file__).parent


def _simd_flags() -> list[str]:
    """Compiler flags that select ATen's AVX-512 or AVX2 vectors (and SLEEF).

    The kernel is built on the machine that runs it, so the capability torch
    detects there is the right one (torch's ATEN_CPU_CAPABILITY environment
    variable lowers it, e.g. to "avx2"). Elsewhere ATen's portable vectors are
    used: the same results, a lane at a time.
    """
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512":
        return [
            "-mavx512f",
            "-mavx512bw",
            "-mavx512vl",
            "-mavx512dq",
            "-mfma",
            "-mf16c",
            "-DCPU_CAPABILITY=AVX512",
            "-DCPU_CAPABILITY_AVX512",
        ]
    if capability in ("AVX2", "AVX512"):
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return []


@contextlib.contextmanager
def _building(build_directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on the kernel's build folder; clear a stale torch lock.

    torch's extension loader marks a build in progress with a ``lock`` file that
    only the builder removes. A process killed while building (Ctrl-C, a test's
    time limit) leaves it behind, and every later load then waits for it forever,
    without a word. Every load of this kernel goes through here and holds an
    ``flock`` on ``deu.flock`` in the same folder, which the system releases when
    its holder exits, however it exits. So, holding it, a ``lock`` file that is
    present was left by a process that died mid-build: it is removed, with a
    warning, and the build runs again.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's own lock only
        yield
        return
    build_directory.mkdir(parents=True, exist_ok=True)
    with open(build_directory / "deu.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            stale = build_directory / "lock"
            if stale.exists():
                warnings.warn(
                    f"deu: removed {stale}, left by a process that stopped while building "
                    "the fused CPU kernel; building it again",
                    RuntimeWarning,
                    stacklevel=4,
                )
                os.remove(stale)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load() -> ModuleType | None:
    """The compiled extension, or None if it cannot be built here."""
    if "extension" in _state:
        return _state["extension"]
    extension: ModuleType | None = None
    try:
        from torch.utils import cpp_extension

        folder = _folder()
        # No contraction of a*b + c into one rounding: the subspace rules must
        # round as deu/_subspaces.py does (the explicit fmadd calls still fuse).
        # errno is never read: without it unused exp/sin/cos calls can be dropped.
        flags = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", *_simd_flags()]
        sources = [_SOURCE, *_LOCAL_HEADERS, *(folder / header for header in _HEADERS)]
        digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources))
        digest.update(" ".join(flags).encode())
        name = f"deu_cpu_{digest.hexdigest()[:16]}"
        build_directory = Path(cpp_extension._get_build_directory(name, verbose=False))
        with _building(build_directory):
            extension = cpp_extension.load(
                name=name,
                sources=[str(_SOURCE)],
                extra_include_paths=[str(folder)],
                extra_cflags=flags,
                extra_ldflags=["-fopenmp"],
                build_directory=str(build_directory),
                verbose=False,
            )
    except Exception as error:  # noqa: BLE001 - any build failure means: fall back
        warnings.warn(
            f"deu: building the fused CPU kernel failed ({type(error).__name__}: {error}); "
            "using the generated PyTorch path",
            RuntimeWarning,
            stacklevel=3,
        )
    _state["extension"] = extension
    return extension


def available() -> bool:
    """Whether the kernel can be used; builds it if that was not tried yet."""
    return load() is not None


def loaded() -> bool:
    """Whether the kernel is built and loaded already (never builds)."""
    return _state.get("extension") is not None


def extension() -> ModuleType:
    """The loaded kernel, for a call with backend 'cpp'."""
    built = load()
    if built is None:  # only reachable through a graph exported where it built
        raise RuntimeError(
            "deu: this call was traced with backend 'cpp', but the fused CPU kernel "
            "cannot be built here (see the warning above); trace it with backend='torch'"
        )
    return built


def forward(x, coeffs, settings: Settings):
    """The fused CPU kernel's forward: the output, clamped."""
    return extension().forward(x.contiguous(), coeffs.contiguous(), *_kernel_arguments(x, settings))


def backward(x, coeffs, g, settings: Settings, need_input: bool, need_coeffs: bool):
    """The fused CPU kernel: f's own gradients and gravitation, all in C++."""
    # Empty tensors come back for the gradients that are not needed.
    grad_x, grad_coeffs = extension().backward(
        x.contiguous(),
        g.contiguous(),
        coeffs.contiguous(),
        *_kernel_arguments(x, settings),
        generated.GRAVITATION_RULES.index(settings.gravitation),
        need_input,
        need_coeffs,
    )
    return grad_x, grad_coeffs
