"""Bit-identity check of deu's values and gradients across commits (issue 18's
"no change of behaviour"): save a reference at one commit, compare at another.

Fixed populations (mixed, each subspace, the band's edges, both critical rules,
the three gravitation settings, float32 and float64) through the torch, cpp and
Triton (interpreted) backends; values and every gradient must be equal bit for
bit. Not a pytest test (it needs two checkouts). From the repository root:

    git worktree add /tmp/deu-ref REF_COMMIT
    TRITON_INTERPRET=1 OMP_NUM_THREADS=1 PYTHONPATH=/tmp/deu-ref \
        python tests/bitcheck.py save /tmp/ref.pt
    TRITON_INTERPRET=1 OMP_NUM_THREADS=1 PYTHONPATH=. python tests/bitcheck.py compare /tmp/ref.pt

(In a worktree, ``deu._generated`` needs the link ``deu/_generated -> ../generated``
unless the package is installed from it.)
"""

import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1"
import torch  # noqa: E402

import deu  # noqa: E402
from deu import functional as F  # noqa: E402

print("deu from", deu.__file__, file=sys.stderr)


def nudge(v, k):
    for _ in range(abs(k)):
        v = torch.nextafter(v, torch.full_like(v, float("inf") if k > 0 else float("-inf")))
    return v


def populations(dtype, eps, seed):
    g = torch.Generator().manual_seed(seed)

    def rn(*s):
        return torch.randn(*s, generator=g, dtype=dtype)

    def ru(*s):
        return torch.rand(*s, generator=g, dtype=dtype)

    pops = {}
    # Mixed: each of a, b, c zero-ish (0, -0, below eps) or not, random c1, c2.
    n = 48
    big = rn(n, 3) * 2
    big = torch.where(big.abs() < 2 * eps, big.sign() * 3 * eps + big, big)
    small_choices = torch.tensor([0.0, -0.0, 0.5, -0.5, 0.999, -0.999], dtype=dtype) * eps
    small = small_choices[torch.randint(0, 6, (n, 3), generator=g)]
    zero = torch.rand(n, 3, generator=g) < 0.4
    abc = torch.where(zero, small, big)
    abc[:4] = small[:4]  # all zero: the b = epsilon fallback
    pops["mixed"] = torch.cat([abc, rn(n, 2)], 1)
    # Each subspace explicitly (a, b, c) plus the band (disc near 0).
    rows = [
        [0, 0, 1.3],
        [0, 0.7, 0],
        [0, -0.9, 1.1],
        [1.2, 0, 0],
        [0.8, 0, 1.5],
        [0.8, 0, -1.5],
        [1.1, -0.6, 0],
        [1.0, 3.0, 0.5],
        [1.0, 0.5, 2.0],
        [1.0, 2.0, 1.0],
        [-1.0, 2.0, -1.0],
        [0.5, -1.0, 0.5 + 0.001],
        [2.0, 1.0, 0.125 - 0.0005],
        [0, 0, 0],
    ]
    base = torch.tensor(rows, dtype=dtype)
    pops["each"] = torch.cat([base, rn(len(rows), 2)], 1)
    # The critical band's edges: disc = b^2 - 4ac = +-eps, and 0, nudged by ulps.
    edges = []
    for _ in range(6):
        a = (ru(1) * 2 + 0.1) * torch.where(ru(1) < 0.5, -1.0, 1.0).to(dtype)
        b = (ru(1) * 3 + 0.1) * torch.where(ru(1) < 0.5, -1.0, 1.0).to(dtype)
        for target in (eps, -eps, 0.0, 0.999 * eps, -1.001 * eps):
            c = (b * b - target) / (4 * a)
            for k in (-2, -1, 0, 1, 2):
                edges.append(torch.cat([a, b, nudge(c, k), rn(2)]))
    # Small coefficients near eps: band with opposite signs, thresholds at eps.
    e = torch.tensor([eps], dtype=dtype)
    for k in (-1, 0, 1):
        for sgn in (1.0, -1.0):
            edges.append(torch.cat([nudge(e, k) * sgn, e * 1.5, e * 1.2, rn(2)]))
            edges.append(torch.cat([e * 1.1, nudge(e, k) * sgn, e * -1.3, rn(2)]))
            edges.append(torch.cat([e * 1.1 * sgn, e * 1.5, nudge(e, k), rn(2)]))
            edges.append(torch.cat([nudge(e, k) * sgn, nudge(e, k), nudge(e, -k) * sgn, rn(2)]))
    pops["edges"] = torch.stack(edges)
    # Small random near eps scale (band hits with opposite signs of a and c).
    pops["tiny"] = torch.cat([(ru(40, 3) * 4 - 2) * eps * 1.5, rn(40, 2)], 1)
    return pops


def inputs(dtype, n, seed, shape_kind):
    g = torch.Generator().manual_seed(seed + 1)
    if shape_kind == "2d":
        x = torch.randn(7, n, generator=g, dtype=dtype) * 2
        x[0, :] = torch.linspace(-12, 12, n, dtype=dtype)  # reach the cap and the clamp
        x[1, : n // 3] = 0.0
    else:
        x = torch.randn(2, n, 3, generator=g, dtype=dtype) * 1.5
    w = torch.randn(x.shape, generator=g, dtype=dtype)
    return x, w


def run_one(x, w, coeffs, backend, **kw):
    x = x.clone().requires_grad_(True)
    c = coeffs.clone().requires_grad_(True)
    try:
        y = F.deu(x, c, backend=backend, **kw)
        gx, gc = torch.autograd.grad((y * w).sum(), [x, c])
        # Only one gradient asked for: the other need_* path.
        x2 = x.detach().clone().requires_grad_(True)
        gx_only = torch.autograd.grad((F.deu(x2, c.detach(), backend=backend, **kw) * w).sum(), x2)[
            0
        ]
        c2 = c.detach().clone().requires_grad_(True)
        gc_only = torch.autograd.grad((F.deu(x.detach(), c2, backend=backend, **kw) * w).sum(), c2)[
            0
        ]
        return [y.detach(), gx, gc, gx_only, gc_only]
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"


def compute():
    out = {}
    for backend in ("torch", "cpp", "triton"):
        for dtype in (torch.float32, torch.float64):
            for eps in (0.01, 0.1):
                for name, coeffs in populations(dtype, eps, seed=3 if eps == 0.01 else 5).items():
                    n = coeffs.shape[0]
                    kinds = ("2d",) if backend == "triton" else ("2d", "4d")
                    for kind in kinds:
                        x, w = inputs(dtype, n, 7, kind)
                        if name == "mixed" and kind == "2d":
                            x = x.clone()
                            x[2, 5] = float("nan")  # nanmean path of the neighbour rule
                        for critical in ("nearest", "paper"):
                            for grav in (True, "neighbour", False):
                                for mx in ((4.0,) if backend == "triton" else (4.0, 14.0)):
                                    key = (
                                        backend,
                                        str(dtype),
                                        eps,
                                        name,
                                        kind,
                                        critical,
                                        str(grav),
                                        mx,
                                    )
                                    out[key] = run_one(
                                        x,
                                        w,
                                        coeffs,
                                        backend,
                                        epsilon=eps,
                                        critical=critical,
                                        gravitation=grav,
                                        max_exponent=mx,
                                    )
                print(backend, dtype, len(out), file=sys.stderr, flush=True)
    return out


def equal(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return len(a) == len(b) and all(
        u.dtype == v.dtype
        and u.shape == v.shape
        and u.stride() == v.stride()
        and torch.equal(torch.nan_to_num(u, nan=1.2345), torch.nan_to_num(v, nan=1.2345))
        and torch.equal(u.isnan(), v.isnan())
        and torch.equal(torch.signbit(u), torch.signbit(v))
        for u, v in zip(a, b, strict=True)
    )


if __name__ == "__main__":
    mode, path = sys.argv[1], sys.argv[2]
    results = compute()
    from deu import _cpp

    assert _cpp.loaded(), "the fused CPU kernel did not build: 'cpp' ran the PyTorch path"
    errors = sum(isinstance(v, str) for v in results.values())
    if mode == "save":
        torch.save(results, path)
        print(f"saved {len(results)} cases ({errors} raising) to {path}")
    else:
        ref = torch.load(path)
        assert ref.keys() == results.keys(), "case sets differ"
        bad = [k for k in ref if not equal(ref[k], results[k])]
        for k in bad[:20]:
            print("DIFFERS:", k)
        print(f"compared {len(ref)} cases ({errors} raising): {len(bad)} differ")
        sys.exit(1 if bad else 0)
