// The fused CPU kernel. The formulas of deu_kernels.h are instantiated on ATen's
// SIMD vectors (at::vec::Vectorized; where the build has AVX2 or AVX-512, exp,
// sin and cos are computed inline in float and by SLEEF in double; elsewhere a
// per-lane loop), so one pass over a neuron's elements computes 8 or 16 of them
// at a time. Work is split into tiles of (a few neurons) x (a range of rows)
// across threads; the subspace is chosen per neuron, and each loop is compiled
// for one subspace (visit_subspace). The backward reduces the coefficient
// gradients per tile (vector lanes, flushed to double) and adds the tiles in a
// fixed order, so the result does not depend on the thread count. Outward
// gravitation runs in the same pass: a singular neuron carries up to three
// neighbour neurons, and the one coefficient derivative of each is reduced
// alongside its own, piece by piece.
// Hand-written source; the formulas and tables it includes (deu_kernels.h,
// deu_tables.h) are generated into generated/ by `make regenerate`.
// Built at first use by deu._cpp with the system compiler.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

// EXP_FLOOR for the vector helpers below.
#include "deu_tables.h"
#include "parametrisation.h"

namespace deu_generated {

// The element helpers of deu_kernels.h for SIMD vectors. They are declared
// before the formulas, so the formulas' unqualified calls find them, and they
// are more specialised than the scalar templates, so they win for vectors.
// Comparisons give all-ones lane masks (for blendv) or 1/0 values (gt, lt):
// NaN compares false everywhere, which keeps the scalar code's NaN behaviour.
template <typename S>
using Vec = at::vec::Vectorized<S>;

// Inlined into the loops: a call would spill every live vector register.
#define DEU_VEC inline __attribute__((always_inline))

template <typename S>
DEU_VEC Vec<S> exp(Vec<S> x) {
  return x.exp();
}
template <typename S>
DEU_VEC Vec<S> sin(Vec<S> x) {
  return x.sin();
}
template <typename S>
DEU_VEC Vec<S> cos(Vec<S> x) {
  return x.cos();
}
template <typename S>
DEU_VEC Vec<S> cexp(Vec<S> x, Vec<S> cap) {
  const Vec<S> floor(static_cast<S>(EXP_FLOOR));
  x = Vec<S>::blendv(x, cap, x > cap);
  return Vec<S>::blendv(x, floor, x < floor).exp();
}
// In float, cexp's exponential is computed inline (SLEEF's is a call, and a
// call spills every live vector register): after the clamp to [EXP_FLOOR, cap] (cap <= MAX_EXP_CAP)
// no overflow, underflow or subnormal case is left. exp(x) = 2^n exp(r) with
// n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts, so r is exact to
// float rounding) in [-ln 2 / 2, ln 2 / 2], and exp(r) by its Taylor
// polynomial of degree 7 (truncation error below 1e-8 relative). NaN stays NaN:
// min and max return their second operand when either is NaN.
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#if defined(CPU_CAPABILITY_AVX512)
#define DEU_PS(op) _mm512_##op##_ps
#define DEU_EPI32(op) _mm512_##op##_epi32
#define DEU_ROUND(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define DEU_AS_FLOAT _mm512_castsi512_ps
#define DEU_TO_INT _mm512_cvtps_epi32
#define DEU_SI(op) _mm512_##op##_si512
#define DEU_ALL_LE(a, b) (_mm512_cmp_ps_mask(a, b, _CMP_LE_OQ) == 0xFFFF)
#else
#define DEU_PS(op) _mm256_##op##_ps
#define DEU_EPI32(op) _mm256_##op##_epi32
#define DEU_ROUND(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define DEU_AS_FLOAT _mm256_castsi256_ps
#define DEU_TO_INT _mm256_cvtps_epi32
#define DEU_SI(op) _mm256_##op##_si256
#define DEU_ALL_LE(a, b) (_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_LE_OQ)) == 0xFF)
#endif
template <>
DEU_VEC Vec<float> cexp(Vec<float> v, Vec<float> cap) {
  const auto x = DEU_PS(max)(DEU_PS(set1)(static_cast<float>(EXP_FLOOR)),
                              DEU_PS(min)(static_cast<decltype(DEU_PS(set1)(0.f))>(cap), v));
  const auto n = DEU_ROUND(DEU_PS(mul)(x, DEU_PS(set1)(1.44269504088896341f)));
  auto r = DEU_PS(fnmadd)(n, DEU_PS(set1)(0.693145751953125f), x);
  r = DEU_PS(fnmadd)(n, DEU_PS(set1)(1.42860682030941723212e-6f), r);
  auto p = DEU_PS(set1)(1.f / 5040.f);
  p = DEU_PS(fmadd)(p, r, DEU_PS(set1)(1.f / 720.f));
  p = DEU_PS(fmadd)(p, r, DEU_PS(set1)(1.f / 120.f));
  p = DEU_PS(fmadd)(p, r, DEU_PS(set1)(1.f / 24.f));
  p = DEU_PS(fmadd)(p, r, DEU_PS(set1)(1.f / 6.f));
  p = DEU_PS(fmadd)(p, r, DEU_PS(set1)(0.5f));
  p = DEU_PS(fmadd)(p, r, DEU_PS(set1)(1.f));
  p = DEU_PS(fmadd)(p, r, DEU_PS(set1)(1.f));
  // 2^n from its exponent bits; n is in [-87, 21] here.
  const auto bits = DEU_EPI32(slli)(DEU_EPI32(add)(DEU_TO_INT(n), DEU_EPI32(set1)(127)), 23);
  return DEU_PS(mul)(p, DEU_AS_FLOAT(bits));
}

// sin and cos in float, inline, for the same reason; a formula's sin(x) and
// cos(x) (they come in pairs) are then one computation after inlining (the
// compiler merges them: one reduction per pair in the object code; only the
// rare fallback calls SLEEF for each).
// q = round(x 2/pi) and r = x - q pi/2, with pi/2 in three parts (each fused
// multiply-add rounds once), so r is accurate to float rounding while
// |x| <= 8192; sin and cos of r in [-pi/4, pi/4] by their Taylor polynomials
// (to r^9 and r^10: truncation below 3e-9), and the quadrant q mod 4 swaps and
// negates them. A vector with a lane beyond 8192 (or NaN) goes to SLEEF, as
// ATen's own sin and cos do.
struct SinCos {
  Vec<float> sin, cos;
};
DEU_VEC SinCos sincos(Vec<float> v) {
  const auto x = static_cast<decltype(DEU_PS(set1)(0.f))>(v);
  const auto q = DEU_ROUND(DEU_PS(mul)(x, DEU_PS(set1)(0.636619772367581343f)));
  auto r = DEU_PS(fnmadd)(q, DEU_PS(set1)(1.5707963705062866211f), x);
  r = DEU_PS(fnmadd)(q, DEU_PS(set1)(-4.3711388286737928865e-8f), r);
  r = DEU_PS(fnmadd)(q, DEU_PS(set1)(-1.7151245100059317e-15f), r);
  const auto r2 = DEU_PS(mul)(r, r);
  auto ps = DEU_PS(set1)(1.f / 362880.f);
  ps = DEU_PS(fmadd)(ps, r2, DEU_PS(set1)(-1.f / 5040.f));
  ps = DEU_PS(fmadd)(ps, r2, DEU_PS(set1)(1.f / 120.f));
  ps = DEU_PS(fmadd)(ps, r2, DEU_PS(set1)(-1.f / 6.f));
  const auto sin_r = DEU_PS(fmadd)(DEU_PS(mul)(ps, r2), r, r);
  auto pc = DEU_PS(set1)(-1.f / 3628800.f);
  pc = DEU_PS(fmadd)(pc, r2, DEU_PS(set1)(1.f / 40320.f));
  pc = DEU_PS(fmadd)(pc, r2, DEU_PS(set1)(-1.f / 720.f));
  pc = DEU_PS(fmadd)(pc, r2, DEU_PS(set1)(1.f / 24.f));
  pc = DEU_PS(fmadd)(pc, r2, DEU_PS(set1)(-0.5f));
  const auto cos_r = DEU_PS(fmadd)(pc, r2, DEU_PS(set1)(1.f));
  // Quadrant: odd q swaps sin and cos (odd: all-ones lanes); bit 1 of q (of
  // q + 1 for cos) negates.
  const auto n = DEU_TO_INT(q), one = DEU_EPI32(set1)(1), two = DEU_EPI32(set1)(2);
  const auto odd = DEU_AS_FLOAT(DEU_EPI32(sub)(DEU_SI(setzero)(), DEU_SI(and)(n, one)));
  const auto sin_sign = DEU_AS_FLOAT(DEU_EPI32(slli)(DEU_SI(and)(n, two), 30));
  const auto cos_sign = DEU_AS_FLOAT(DEU_EPI32(slli)(DEU_SI(and)(DEU_EPI32(add)(n, one), two), 30));
  const auto sin_x = DEU_PS(or)(DEU_PS(and)(odd, cos_r), DEU_PS(andnot)(odd, sin_r));
  const auto cos_x = DEU_PS(or)(DEU_PS(and)(odd, sin_r), DEU_PS(andnot)(odd, cos_r));
  SinCos result{Vec<float>(DEU_PS(xor)(sin_x, sin_sign)), Vec<float>(DEU_PS(xor)(cos_x, cos_sign))};
  // |x| <= 8192 in every lane (a NaN lane fails it).
  const auto magnitude = DEU_PS(andnot)(DEU_PS(set1)(-0.f), x);
  if (__builtin_expect(!DEU_ALL_LE(magnitude, DEU_PS(set1)(8192.f)), 0)) {
    result.sin = v.sin();
    result.cos = v.cos();
  }
  return result;
}
DEU_VEC Vec<float> sin(Vec<float> x) { return sincos(x).sin; }
DEU_VEC Vec<float> cos(Vec<float> x) { return sincos(x).cos; }
#endif
template <typename S>
DEU_VEC Vec<S> unclamped(Vec<S> x, Vec<S> cap) {
  return x.gt(Vec<S>(static_cast<S>(EXP_FLOOR))) * x.lt(cap);
}
template <typename S>
DEU_VEC Vec<S> step(Vec<S> t) {
  return t.gt(Vec<S>(S(0)));
}
template <typename S>
DEU_VEC Vec<S> sign(Vec<S> x) {
  return x.gt(Vec<S>(S(0))) - x.lt(Vec<S>(S(0)));
}
template <typename S>
DEU_VEC Vec<S> sigmoid(Vec<S> x) {
  return Vec<S>(S(1)) / (Vec<S>(S(1)) + x.neg().exp());
}
template <int N, typename S>
DEU_VEC Vec<S> ipow(Vec<S> x) {
  Vec<S> result = x;
  for (int i = 1; i < N; ++i) result = result * x;
  return result;
}

}  // namespace deu_generated

// Every formula inlined into the loops that use it: the per-element work then
// stays in registers, and a loop that needs one output computes only that one.
#define DEU_FN inline __attribute__((always_inline))
#include "deu_kernels.h"
// The classification rules.
#include "deu_classify.h"

namespace {

using namespace deu_generated;

// Neurons per tile: for (N, C) inputs one cache line of a row holds them all.
constexpr int64_t TILE_NEURONS = 16;
// Elements per tile and neuron, roughly: enough to amortise the per-neuron set-up.
constexpr int64_t TILE_ELEMENTS = 8192;
// Vector iterations between flushes of the float accumulators into double.
constexpr int FLUSH_EVERY = 64;
// Gravitation targets per neuron: a, b and c, the classified coefficients.
constexpr int NUM_GRAVITATION = NUM_CLASSIFIED;

// Where a neuron's elements are: x is (outer, neurons, inner), contiguous.
struct Layout {
  int64_t outer, neurons, inner;
};

// The tiles: neuron blocks x row chunks.
// One tile: neurons [c_begin, c_end) in rows [row_begin, row_end); chunk is
// the tile's row chunk.
struct Tile {
  int64_t chunk, c_begin, c_end, row_begin, row_end;
};

struct Tiling {
  int64_t outer, neurons, neuron_blocks, row_chunks, rows_per_chunk;
  explicit Tiling(const Layout& l) : outer(l.outer), neurons(l.neurons) {
    neuron_blocks = (l.neurons + TILE_NEURONS - 1) / TILE_NEURONS;
    const int64_t rows_wanted = std::max<int64_t>(1, TILE_ELEMENTS / std::max<int64_t>(1, l.inner));
    rows_per_chunk = std::min<int64_t>(std::max<int64_t>(l.outer, 1), rows_wanted);
    row_chunks = (l.outer + rows_per_chunk - 1) / rows_per_chunk;
  }
  int64_t count() const { return neuron_blocks * row_chunks; }
  Tile tile(int64_t index) const {
    const int64_t block = index / row_chunks, chunk = index % row_chunks;
    const int64_t row_begin = chunk * rows_per_chunk, c_begin = block * TILE_NEURONS;
    return {chunk, c_begin, std::min(neurons, c_begin + TILE_NEURONS), row_begin,
            std::min(outer, row_begin + rows_per_chunk)};
  }
  // Tiles per task: as many elements as PyTorch's own elementwise grain, so a
  // small input runs on one thread instead of paying for a parallel region.
  int64_t grain(const Layout& l) const {
    const int64_t per_tile = std::max<int64_t>(1, TILE_NEURONS * rows_per_chunk * l.inner);
    return std::max<int64_t>(1, at::internal::GRAIN_SIZE / per_tile);
  }
};

// Elements per neuron in the scratch runs of short rows.
constexpr int64_t SPAN = 128;

// Per-thread scratch for short rows: a block of neurons' runs, transposed.
template <typename S>
struct Scratch {
  std::vector<S> x, g, out;
  Scratch() : x(TILE_NEURONS * SPAN), g(TILE_NEURONS * SPAN), out(TILE_NEURONS * SPAN) {}
};

// dst[j * ld_dst + i] = src[i * ld_src + j] for i < m, j < n: for float, full
// blocks go through ATen's in-register transposes (16x16 with AVX-512, 8x8
// with AVX2), the rest element by element.
template <typename S>
inline void transpose_block(const S* src, int64_t ld_src, S* dst, int64_t ld_dst, int m, int n) {
  int i = 0;
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<S, float>) {
#if defined(CPU_CAPABILITY_AVX512)
    constexpr int B = 16;
#else
    constexpr int B = 8;
#endif
    for (; i + B <= m; i += B) {
      int j = 0;
      for (; j + B <= n; j += B) {
        at::vec::transpose_mxn<float, B, B>(src + i * ld_src + j, ld_src, dst + j * ld_dst + i, ld_dst);
      }
      for (int ii = i; ii < i + B; ++ii) {
        for (int jj = j; jj < n; ++jj) dst[jj * ld_dst + ii] = src[ii * ld_src + jj];
      }
    }
  }
#endif
  for (; i < m; ++i) {
    for (int j = 0; j < n; ++j) dst[j * ld_dst + i] = src[i * ld_src + j];
  }
}

// Copies rows [r0, r1) of neurons [c_begin, c_begin + width) into per-neuron
// runs (run j at from + j * SPAN), and back. inner = 1, the (N, C) case, is a
// matrix transpose: a row's neurons are contiguous there.
template <typename S>
inline void transpose_in(const Layout& l, int64_t c_begin, int64_t width, int64_t r0, int64_t r1,
                         const S* src, S* runs) {
  if (l.inner == 1) {
    transpose_block(src + r0 * l.neurons + c_begin, l.neurons, runs, SPAN, static_cast<int>(r1 - r0),
                    static_cast<int>(width));
    return;
  }
  for (int64_t o = r0; o < r1; ++o) {
    const S* row = src + (o * l.neurons + c_begin) * l.inner;
    S* to = runs + (o - r0) * l.inner;
    for (int64_t j = 0; j < width; ++j) {
      for (int64_t i = 0; i < l.inner; ++i) to[j * SPAN + i] = row[j * l.inner + i];
    }
  }
}

template <typename S>
inline void transpose_out(const Layout& l, int64_t c_begin, int64_t width, int64_t r0,
                          int64_t r1, const S* runs, S* dst) {
  if (l.inner == 1) {
    transpose_block(runs, SPAN, dst + r0 * l.neurons + c_begin, l.neurons, static_cast<int>(width),
                    static_cast<int>(r1 - r0));
    return;
  }
  for (int64_t o = r0; o < r1; ++o) {
    S* row = dst + (o * l.neurons + c_begin) * l.inner;
    const S* from = runs + (o - r0) * l.inner;
    for (int64_t j = 0; j < width; ++j) {
      for (int64_t i = 0; i < l.inner; ++i) row[j * l.inner + i] = from[j * SPAN + i];
    }
  }
}

// For the neurons [c_begin, c_end) and the rows [row_begin, row_end): calls
// setup(c, j) (j = c - c_begin) and then run(j, x, g, out, n) on contiguous runs
// of neuron c's elements. Rows of at least one vector are runs in place.
// Shorter rows (inner = 1 for (N, C) inputs, where neighbouring elements belong
// to different neurons) are copied for the whole block of neurons, row by row,
// into per-neuron runs of up to SPAN elements (a transpose), and the outputs
// copied back. g and out may be null.
template <typename S, typename Setup, typename Run>
void for_each_run(const Layout& l, int64_t c_begin, int64_t c_end, int64_t row_begin,
                  int64_t row_end, const S* x, const S* g, S* out, Scratch<S>& scratch,
                  Setup&& setup, Run&& run) {
  const int64_t inner = l.inner;
  if (inner >= Vec<S>::size()) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      setup(c, c - c_begin);
      for (int64_t o = row_begin; o < row_end; ++o) {
        const int64_t base = (o * l.neurons + c) * inner;
        run(c - c_begin, x + base, g ? g + base : nullptr, out ? out + base : nullptr, inner);
      }
    }
    return;
  }
  const int64_t width = c_end - c_begin, rows = std::max<int64_t>(1, SPAN / inner);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += rows) {
    const int64_t r1 = std::min(row_end, r0 + rows), n = (r1 - r0) * inner;
    transpose_in(l, c_begin, width, r0, r1, x, scratch.x.data());
    if (g) transpose_in(l, c_begin, width, r0, r1, g, scratch.g.data());
    for (int64_t j = 0; j < width; ++j) {
      setup(c_begin + j, j);
      run(j, scratch.x.data() + j * SPAN, g ? scratch.g.data() + j * SPAN : nullptr,
          out ? scratch.out.data() + j * SPAN : nullptr, n);
    }
    if (!out) continue;
    transpose_out(l, c_begin, width, r0, r1, scratch.out.data(), out);
  }
}

// n elements from p as vectors of Vec<S>::size(), the last one partial.
template <typename S>
inline Vec<S> load_run(const S* p, int64_t j, int64_t n) {
  const int64_t left = n - j;
  return left >= Vec<S>::size() ? Vec<S>::loadu(p + j) : Vec<S>::loadu(p + j, left);
}

template <typename S>
inline void store_run(S* p, int64_t j, int64_t n, Vec<S> v) {
  const int64_t left = n - j;
  if (left >= Vec<S>::size()) {
    v.store(p + j);
  } else {
    v.store(p + j, static_cast<int>(left));
  }
}

// y clamped to [-bound, bound]; NaN stays NaN.
template <typename S>
inline Vec<S> clamp_output(Vec<S> y, Vec<S> bound) {
  y = Vec<S>::blendv(y, bound, y > bound);
  return Vec<S>::blendv(y, bound.neg(), y < bound.neg());
}

template <typename S>
inline double lane_sum(Vec<S> v) {
  alignas(64) S lanes[Vec<S>::size()];
  v.store(lanes);
  double total = 0;
  for (int j = 0; j < Vec<S>::size(); ++j) total += static_cast<double>(lanes[j]);
  return total;
}

// The same error as deu/_autograd.py's _check_finite, as a Python ValueError.
template <typename S>
void check_finite(const S* coeffs, int64_t neurons) {
  std::string bad;
  int64_t count = 0;
  for (int64_t c = 0; c < neurons; ++c) {
    bool finite = true;
    for (int j = 0; j < NUM_COEFFICIENTS; ++j) finite = finite && std::isfinite(coeffs[c * NUM_COEFFICIENTS + j]);
    if (finite) continue;
    if (count < 10) bad += (count ? ", " : "") + std::to_string(c);
    if (count == 10) bad += ", ...";
    ++count;
  }
  TORCH_CHECK_VALUE(count == 0, "coeffs must be finite; neurons ", bad, " have non-finite coefficients");
}

void check(const torch::Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), "deu cpu kernel: ", name, " must be on the CPU, got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "deu cpu kernel: ", name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dtype, "deu cpu kernel: ", name, " must have dtype ", dtype,
              ", got ", t.scalar_type());
}

// ---------------------------------------------------------------------------
// Per neuron: the subspace, the effective coefficients, the quantities k.

// The subspace of one neuron's coefficients and the ones its kernel sees, in
// place: deu_classify.h's classify, the rules of derive/spec.py as every
// backend renders them.
template <typename S>
int classify_row(S* q, S epsilon, bool critical_paper) {
  return deu_generated::classify(q, epsilon, critical_paper ? CRITICAL_PAPER : CRITICAL_NEAREST);
}

// The errors of deu/_subspaces.py for neurons that no subspace rule takes
// (b^2 - 4ac NaN, or a*c rounded to zero), themselves or their gravitation
// neighbours: Python ValueErrors with the same text.
inline std::string neuron_list(const std::vector<int64_t>& neurons) {
  std::string shown;
  for (size_t i = 0; i < neurons.size() && i < 10; ++i) shown += (i ? ", " : "") + std::to_string(neurons[i]);
  if (neurons.size() > 10) shown += ", ...";
  return shown;
}

template <typename S>
std::string first_neuron(const S* coeffs, int64_t c) {
  char values[160];
  const S* q = coeffs + c * NUM_COEFFICIENTS;
  std::snprintf(values, sizeof values, " (neuron %lld: a, b, c = %g, %g, %g)", static_cast<long long>(c),
                static_cast<double>(q[0]), static_cast<double>(q[1]), static_cast<double>(q[2]));
  return std::string(std::is_same_v<S, float> ? "torch.float32" : "torch.float64") +
         ", b^2 - 4ac is NaN or a*c rounds to zero" + values;
}

template <typename S>
[[noreturn]] void unclassified_error(const S* coeffs, const std::vector<int64_t>& neurons) {
  TORCH_CHECK_VALUE(false, "coeffs of neurons ", neuron_list(neurons), " fall in no subspace: in ",
                    first_neuron(coeffs, neurons[0]), "; rescale them");
}

template <typename S>
[[noreturn]] void unclassified_neighbour_error(const S* coeffs, const std::vector<int64_t>& neurons,
                                               int coefficient) {
  TORCH_CHECK_VALUE(false, "coeffs of neurons ", neuron_list(neurons), " have a gravitation neighbour (",
                    "abc"[coefficient], " moved to +-epsilon) that falls in no subspace: in ",
                    first_neuron(coeffs, neurons[0]),
                    "; rescale them, change epsilon or pass gravitation=False");
}

// Every neuron's effective coefficients, subspace and quantities k (zero-padded
// to MAX_NEURON_QUANTITIES).
template <typename S>
struct Neurons {
  std::vector<S> effective, k;
  std::vector<int32_t> subspace;
  Neurons(const S* coeffs, int64_t neurons, S epsilon, S steepness, S max_exponent,
          bool critical_paper)
      : effective(coeffs, coeffs + neurons * NUM_COEFFICIENTS),
        k(neurons * MAX_NEURON_QUANTITIES, S(0)),
        subspace(neurons) {
    at::parallel_for(0, neurons, 256, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        subspace[c] = classify_row(&effective[c * NUM_COEFFICIENTS], epsilon, critical_paper);
        neuron(subspace[c], &effective[c * NUM_COEFFICIENTS], steepness, max_exponent,
               &k[c * MAX_NEURON_QUANTITIES]);
      }
    });
    std::vector<int64_t> bad;
    for (int64_t c = 0; c < neurons; ++c) {
      if (subspace[c] < 0) bad.push_back(c);
    }
    if (!bad.empty()) unclassified_error(coeffs, bad);
  }
  const S* quantities(int64_t c) const { return k.data() + c * MAX_NEURON_QUANTITIES; }
};

// (y, dy/dt) of subspace s with coefficients q at one point t.
template <typename S>
inline void evaluate_at(int s, const S* q, S steepness, S max_exponent, S t, S* y, S* dy) {
  S k[MAX_NEURON_QUANTITIES] = {};
  S out[NUM_OUTPUTS];
  neuron(s, q, steepness, max_exponent, k);
  derivatives(s, t, k, out);
  *y = out[0];
  *dy = out[1];
}

// Rotates rows p and q (first entries p0, q0) so that q's first entry becomes 0.
template <typename S>
inline void rotate(S p0, S& p1, S& pr, S q0, S& q1, S& qr, S* rho) {
  *rho = std::sqrt(p0 * p0 + q0 * q0);
  const S c = *rho > S(0) ? p0 / *rho : S(1), s = *rho > S(0) ? q0 / *rho : S(0);
  const S np1 = c * p1 + s * q1, npr = c * pr + s * qr;
  q1 = c * q1 - s * p1;
  qr = c * qr - s * pr;
  p1 = np1;
  pr = npr;
}

// (c1, c2) minimising |m c - r|^2 + ridge |c|^2, ridge = eps |m|_F^2 + tiny, by
// Givens rotations of [m; sqrt(ridge) I]: deu/_neighbour.py's _ridge_solve,
// operation for operation.
template <typename S>
inline void ridge_solve(S m00, S m01, S m10, S m11, S r0, S r1, S* c1, S* c2) {
  const S lam = std::sqrt(std::numeric_limits<S>::epsilon() *
                              (m00 * m00 + m01 * m01 + m10 * m10 + m11 * m11) +
                          std::numeric_limits<S>::min());
  // Row 0 becomes [u00 u01 | ur0], row 1 [0 u11 | vr1]; the zeros are scratch.
  S u00, u11, u01 = m01, ur0 = r0, v11 = m11, vr1 = r1, w11 = S(0), wr = S(0);
  S zero[4] = {S(0), S(0), S(0), S(0)}, lam_r = S(0);
  rotate(m00, u01, ur0, m10, v11, vr1, &u00);          // against [m10 m11 | r1]
  rotate(u00, u01, ur0, lam, w11, wr, &u00);           // against [lam 0 | 0]
  rotate(v11, zero[0], vr1, w11, zero[1], wr, &u11);   // column 1: against that row
  rotate(u11, zero[2], vr1, lam, zero[3], lam_r, &u11);  // against [0 lam | 0]
  *c2 = vr1 / u11;
  *c1 = (ur0 - u01 * *c2) / u00;
}

// Outward gravitation for coefficient p of a neuron singular in p: the
// neighbour h with p moved to epsilon*sign(p) and c1, c2 chosen so that h(t*) =
// f(t*) and h'(t*) = f'(t*) (value only for a first-order h), in the
// Tikhonov-regularised least-squares sense of deu/_neighbour.py's
// _matched_initial_conditions; f and df are the neuron's value and slope at
// t*. Writes h's quantities; returns h's subspace (-1 where h falls in none,
// and then writes nothing).
template <typename S>
int gravitation_neighbour(const S* raw, const S* effective, S f, S df, int p, S t_star,
                          S epsilon, S steepness, S max_exponent, bool critical_paper, S* k) {
  S moved[NUM_COEFFICIENTS];
  std::copy(effective, effective + NUM_COEFFICIENTS, moved);
  moved[p] = epsilon * (raw[p] < S(0) ? S(-1) : S(1));
  const int neighbour = classify_row(moved, epsilon, critical_paper);
  if (neighbour < 0) return neighbour;  // the caller raises
  S h[3], dh[3];
  // (c1, c2) = (0, 0), (1, 0), (0, 1): h is affine in them.
  const S ic1[3] = {S(0), S(1), S(0)}, ic2[3] = {S(0), S(0), S(1)};
  for (int i = 0; i < 3; ++i) {
    S trial[NUM_COEFFICIENTS] = {moved[0], moved[1], moved[2], ic1[i], ic2[i]};
    evaluate_at(neighbour, trial, steepness, max_exponent, t_star, &h[i], &dh[i]);
  }
  // m (c1, c2) = r, m = [[h1 - h0, h2 - h0], [dh1 - dh0, dh2 - dh0]].
  S m00 = h[1] - h[0], m01 = h[2] - h[0], m10 = dh[1] - dh[0], m11 = dh[2] - dh[0];
  S r0 = f - h[0], r1 = df - dh[0];
  if (ORDER[neighbour] < 2) m10 = m11 = r1 = S(0);  // one free constant: the value
  S c1, c2;
  ridge_solve(m00, m01, m10, m11, r0, r1, &c1, &c2);
  if (!std::isfinite(c1)) c1 = S(0);
  if (!std::isfinite(c2)) c2 = S(0);
  const S matched[NUM_COEFFICIENTS] = {moved[0], moved[1], moved[2], c1, c2};
  std::fill(k, k + MAX_NEURON_QUANTITIES, S(0));
  neuron(neighbour, matched, steepness, max_exponent, k);
  return neighbour;
}

// ---------------------------------------------------------------------------
// The passes over the elements.

// x viewed as (outer, neurons, inner); coeffs is (neurons, NUM_COEFFICIENTS).
torch::Tensor forward(torch::Tensor x, torch::Tensor coeffs, int64_t outer, int64_t neurons,
                      int64_t inner, double epsilon, double steepness, double max_exponent, double max_value,
                      bool critical_paper) {
  check(x, "x", x.scalar_type());
  check(coeffs, "coeffs", x.scalar_type());
  TORCH_CHECK(x.numel() == outer * neurons * inner && coeffs.numel() == neurons * NUM_COEFFICIENTS,
              "deu cpu kernel: x has ", x.numel(), " elements and coeffs ", coeffs.numel(),
              ", expected ", outer * neurons * inner, " and ", neurons * NUM_COEFFICIENTS);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "deu_check_finite", [&] {
    check_finite(coeffs.data_ptr<scalar_t>(), neurons);
  });
  auto y = torch::empty_like(x);
  const Layout layout{outer, neurons, inner};
  const Tiling tiling(layout);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "deu_forward", [&] {
    using V = Vec<scalar_t>;
    // Classified even for an empty batch: unclassifiable neurons raise, as on
    // the PyTorch path.
    const Neurons<scalar_t> table(coeffs.data_ptr<scalar_t>(), neurons, epsilon, steepness, max_exponent,
                                  critical_paper);
    if (x.numel() == 0) return;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const V bound(static_cast<scalar_t>(max_value));
    at::parallel_for(0, tiling.count(), tiling.grain(layout), [&](int64_t begin, int64_t end) {
      const scalar_t* kp = nullptr;
      int s = 0;
      Scratch<scalar_t> scratch;
      for (int64_t index = begin; index < end; ++index) {
        const auto [chunk, c_begin, c_end, row_begin, row_end] = tiling.tile(index);
        for_each_run<scalar_t>(
            layout, c_begin, c_end, row_begin, row_end, xp, nullptr, yp, scratch,
            [&](int64_t c, int64_t) {
              s = table.subspace[c];
              kp = table.quantities(c);
            },
            [&](int64_t, const scalar_t* xs, const scalar_t*, scalar_t* ys, int64_t n) {
              visit_subspace(s, [&](auto subspace) {
                constexpr int S = decltype(subspace)::value;
                for (int64_t j = 0; j < n; j += V::size()) {
                  const V v = value_in<S>(load_run(xs, j, n), kp);
                  store_run(ys, j, n, clamp_output(v, bound));
                }
              });
            });
      }
    });
  });
  return y;
}

// Each neuron's mean input t*, ignoring NaN, made finite (torch.nanmean, then
// torch.nan_to_num), for the neurons with want[c], summed in double. With
// inner = 1 a block of neurons is read row by row, in memory order, and each
// neuron's sum is sequential, lanes running across neurons; otherwise each
// neuron's rows are summed in LANES interleaved partial sums. Both loops are
// written so that the compiler vectorises them without reordering any sum.
template <typename S>
void mean_inputs(const S* xp, const Layout& l, const std::vector<char>& want, std::vector<S>& t) {
  constexpr int64_t BLOCK = 64;
  constexpr int LANES = 8;
  const int64_t blocks = (l.neurons + BLOCK - 1) / BLOCK;
  const int64_t per_block = std::max<int64_t>(1, l.outer * l.inner * BLOCK);
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / per_block);
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t c0 = block * BLOCK, c1 = std::min(l.neurons, c0 + BLOCK), width = c1 - c0;
      bool any = false;
      for (int64_t c = c0; c < c1; ++c) any = any || want[c];
      if (!any) continue;
      alignas(64) double sum[BLOCK] = {};
      alignas(64) double count[BLOCK] = {};  // exact up to 2^53
      if (l.inner == 1) {
        using D = Vec<double>;
        alignas(64) double values[BLOCK] = {};
        for (int64_t o = 0; o < l.outer; ++o) {
          const S* row = xp + o * l.neurons + c0;
          for (int64_t j = 0; j < width; ++j) values[j] = static_cast<double>(row[j]);
          for (int64_t j = 0; j < width; j += D::size()) {
            const D v = D::loadu(values + j);
            const D number = v == v;  // all-ones lanes where v is not NaN
            (D::loadu(sum + j) + D::blendv(D(0.0), v, number)).store(sum + j);
            (D::loadu(count + j) + (number & D(1.0))).store(count + j);
          }
        }
      } else {
        for (int64_t j = 0; j < width; ++j) {
          if (!want[c0 + j]) continue;
          double lane_sum[LANES] = {};
          int64_t lane_count[LANES] = {};
          for (int64_t o = 0; o < l.outer; ++o) {
            const S* row = xp + (o * l.neurons + c0 + j) * l.inner;
            int64_t i = 0;
            for (; i + LANES <= l.inner; i += LANES) {
              for (int k = 0; k < LANES; ++k) {
                const S v = row[i + k];
                const bool number = v == v;
                lane_sum[k] += number ? static_cast<double>(v) : 0.0;
                lane_count[k] += number;
              }
            }
            for (; i < l.inner; ++i) {
              const S v = row[i];
              const bool number = v == v;
              lane_sum[0] += number ? static_cast<double>(v) : 0.0;
              lane_count[0] += number;
            }
          }
          for (int k = 0; k < LANES; ++k) sum[j] += lane_sum[k], count[j] += static_cast<double>(lane_count[k]);
        }
      }
      for (int64_t c = c0; c < c1; ++c) {
        if (!want[c]) continue;
        const double n = count[c - c0];
        S m = static_cast<S>(n > 0 ? sum[c - c0] / n : 0.0);
        if (std::isnan(m)) m = S(0);
        if (std::isinf(m)) m = m > 0 ? std::numeric_limits<S>::max() : std::numeric_limits<S>::lowest();
        t[c] = m;
      }
    }
  });
}

// Returns (grad_x, grad of (a, b, c, c1, c2) per neuron); empty where not needed.
// The clamp passes no gradient where it is active. A neuron singular in p in
// (a, b, c) gets sum g * z_p, its subspace's derived gravitation output, with
// derived_gravitation, and sum g * dh/dp of its neighbour h with
// neighbour_gravitation (the paper's rule); neither without gravitation.
std::vector<torch::Tensor> backward(torch::Tensor x, torch::Tensor g, torch::Tensor coeffs,
                                    int64_t outer, int64_t neurons, int64_t inner, double epsilon,
                                    double steepness, double max_exponent, double max_value, bool critical_paper,
                                    bool neighbour_gravitation, bool derived_gravitation,
                                    bool need_input, bool need_coeffs) {
  check(x, "x", x.scalar_type());
  check(g, "grad_output", x.scalar_type());
  check(coeffs, "coeffs", x.scalar_type());
  TORCH_CHECK(x.numel() == outer * neurons * inner && g.numel() == x.numel() &&
                  coeffs.numel() == neurons * NUM_COEFFICIENTS,
              "deu cpu kernel: x, grad_output and coeffs must have ", outer * neurons * inner,
              ", ", outer * neurons * inner, " and ", neurons * NUM_COEFFICIENTS, " elements, got ", x.numel(),
              ", ", g.numel(), " and ", coeffs.numel());
  auto grad_x = need_input ? torch::empty_like(x) : torch::empty({0}, x.options());
  auto grad_coeffs =
      need_coeffs ? torch::zeros({neurons, NUM_COEFFICIENTS}, x.options()) : torch::empty({0}, x.options());
  if (x.numel() == 0 || !(need_input || need_coeffs)) return {grad_x, grad_coeffs};
  const Layout layout{outer, neurons, inner};
  const Tiling tiling(layout);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "deu_backward", [&] {
    using V = Vec<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* raw = coeffs.data_ptr<scalar_t>();
    const Neurons<scalar_t> table(raw, neurons, epsilon, steepness, max_exponent, critical_paper);
    const std::vector<int32_t>& subspace = table.subspace;
    // Gravitation: neighbours[c][p] >= 0 is the subspace of neuron c's neighbour in p.
    std::vector<int32_t> neighbours(neurons * NUM_GRAVITATION, -1);
    std::vector<scalar_t> neighbour_table;
    if (need_coeffs && neighbour_gravitation) {
      std::vector<char> singular(neurons, 0);
      bool any = false;
      for (int64_t c = 0; c < neurons; ++c) {
        const bool* zero = ZERO[subspace[c]];
        singular[c] = zero[0] || zero[1] || zero[2];
        any = any || singular[c];
      }
      if (any) {
        std::vector<scalar_t> t_star(neurons, scalar_t(0));
        mean_inputs(xp, layout, singular, t_star);
        neighbour_table.assign(neurons * NUM_GRAVITATION * MAX_NEURON_QUANTITIES, scalar_t(0));
        at::parallel_for(0, neurons, 64, [&](int64_t begin, int64_t end) {
          for (int64_t c = begin; c < end; ++c) {
            if (!singular[c]) continue;
            scalar_t f, df;
            evaluate_at<scalar_t>(subspace[c], &table.effective[c * NUM_COEFFICIENTS], steepness, max_exponent,
                                  t_star[c], &f, &df);
            for (int p = 0; p < NUM_GRAVITATION; ++p) {
              if (!ZERO[subspace[c]][p]) continue;
              neighbours[c * NUM_GRAVITATION + p] = gravitation_neighbour<scalar_t>(
                  raw + c * NUM_COEFFICIENTS, &table.effective[c * NUM_COEFFICIENTS], f, df, p, t_star[c], epsilon,
                  steepness, max_exponent, critical_paper,
                  neighbour_table.data() + (c * NUM_GRAVITATION + p) * MAX_NEURON_QUANTITIES);
            }
          }
        });
        // Neighbours in no subspace: the first subspace, then coefficient, that
        // has any, as the PyTorch path (group by group) finds them.
        for (int sub = 0; sub < NUM_SUBSPACES; ++sub) {
          for (int p = 0; p < NUM_GRAVITATION; ++p) {
            std::vector<int64_t> bad;
            for (int64_t c = 0; c < neurons; ++c) {
              if (subspace[c] == sub && ZERO[sub][p] && neighbours[c * NUM_GRAVITATION + p] < 0) bad.push_back(c);
            }
            if (!bad.empty()) unclassified_neighbour_error(raw, bad, p);
          }
        }
      }
    }
    scalar_t* gxp = need_input ? grad_x.data_ptr<scalar_t>() : nullptr;
    const V bound(static_cast<scalar_t>(max_value));
    const V zero(scalar_t(0));
    // partial[(neuron * row_chunks + chunk) * NUM_COEFFICIENTS + j]: each tile writes its own.
    std::vector<double> partial(
        need_coeffs ? static_cast<size_t>(neurons * tiling.row_chunks * NUM_COEFFICIENTS) : 0);
    // Per neuron of a tile: vector accumulators of its own gradient (v) and of
    // its neighbours' (h), flushed into double sums.
    struct Accumulator {
      V v[NUM_COEFFICIENTS], h[NUM_GRAVITATION];
      int pending;
      double sums[NUM_COEFFICIENTS];
    };
    // A run is processed in pieces of at most this many elements: the float
    // accumulators are flushed after at most twice as many vector iterations.
    constexpr int64_t PIECE = FLUSH_EVERY * V::size();
    at::parallel_for(0, tiling.count(), tiling.grain(layout), [&](int64_t begin, int64_t end) {
      const scalar_t* kp = nullptr;
      const scalar_t* hp[NUM_GRAVITATION] = {};
      int s = 0;
      const int32_t* nb = nullptr;
      bool any_neighbour = false;
      Accumulator accumulators[TILE_NEURONS];
      Scratch<scalar_t> scratch;
      // The masked g of the current piece, for the neighbours' pass.
      alignas(64) scalar_t masked[PIECE];
      for (int64_t index = begin; index < end; ++index) {
        const auto [chunk, c_begin, c_end, row_begin, row_end] = tiling.tile(index);
        for (auto& acc : accumulators) {
          for (int j = 0; j < NUM_COEFFICIENTS; ++j) acc.v[j] = zero, acc.sums[j] = 0;
          for (int p = 0; p < NUM_GRAVITATION; ++p) acc.h[p] = zero;
          acc.pending = 0;
        }
        auto flush = [&](Accumulator& acc) {
          for (int j = 0; j < NUM_COEFFICIENTS; ++j) {
            acc.sums[j] += lane_sum(acc.v[j]);
            acc.v[j] = zero;
          }
          for (int p = 0; p < NUM_GRAVITATION; ++p) {
            acc.sums[p] += lane_sum(acc.h[p]);
            acc.h[p] = zero;
          }
          acc.pending = 0;
        };
        // Neighbour p's derivative in its own coefficient (output 2 + p), with
        // the masked g of the piece.
        auto neighbour_pass = [&](auto p, Accumulator& acc, const scalar_t* xs, int64_t n) {
          constexpr int P = decltype(p)::value;
          if (nb[P] < 0) return;
          visit_subspace(nb[P], [&](auto subspace) {
            constexpr int H = decltype(subspace)::value;
            V h = acc.h[P];
            for (int64_t j = 0; j < n; j += V::size()) {
              const V dh = derivative_in<H, 2 + P>(load_run(xs, j, n), hp[P]);
              h = at::vec::fmadd(V::loadu(masked + j), dh, h);
            }
            acc.h[P] = h;
          });
        };
        for_each_run<scalar_t>(
            layout, c_begin, c_end, row_begin, row_end, xp, gp, gxp, scratch,
            [&](int64_t c, int64_t) {
              s = table.subspace[c];
              kp = table.quantities(c);
              nb = neighbours.data() + c * NUM_GRAVITATION;
              any_neighbour = false;
              for (int p = 0; p < NUM_GRAVITATION; ++p) {
                hp[p] = nb[p] < 0 ? nullptr
                                  : neighbour_table.data() + (c * NUM_GRAVITATION + p) * MAX_NEURON_QUANTITIES;
                any_neighbour = any_neighbour || nb[p] >= 0;
              }
            },
            [&](int64_t local, const scalar_t* xs, const scalar_t* gs, scalar_t* gxs, int64_t n) {
              Accumulator& acc = accumulators[local];
              for (int64_t start = 0; start < n; start += PIECE) {
                const int64_t m = std::min(PIECE, n - start);
                const scalar_t* xm = xs + start;
                const scalar_t* gm = gs + start;
                scalar_t* gxm = gxs ? gxs + start : nullptr;
                visit_subspace(s, [&](auto subspace) {
                  constexpr int S = decltype(subspace)::value;
                  // A coefficient that is zero in S has the derived gravitation term
                  // as its output: summed only with that rule.
                  const bool use_a = !ZERO[S][0] || derived_gravitation;
                  const bool use_b = !ZERO[S][1] || derived_gravitation;
                  const bool use_c = !ZERO[S][2] || derived_gravitation;
                  V v0 = acc.v[0], v1 = acc.v[1], v2 = acc.v[2], v3 = acc.v[3], v4 = acc.v[4];
                  for (int64_t j = 0; j < m; j += V::size()) {
                    const V t = load_run(xm, j, m);
                    V d[NUM_OUTPUTS];
                    derivatives_in<S>(t, kp, d);
                    // Lanes past m were loaded as 0 and get g = 0.
                    const V inside = (d[0] <= bound) & (d[0] >= bound.neg());
                    const V gi = V::blendv(zero, load_run(gm, j, m), inside);
                    if (gxm) store_run(gxm, j, m, gi * d[1]);
                    if (!need_coeffs) continue;
                    if (use_a) v0 = at::vec::fmadd(gi, d[2], v0);
                    if (use_b) v1 = at::vec::fmadd(gi, d[3], v1);
                    if (use_c) v2 = at::vec::fmadd(gi, d[4], v2);
                    v3 = at::vec::fmadd(gi, d[5], v3);
                    v4 = at::vec::fmadd(gi, d[6], v4);
                    if (any_neighbour) gi.store(masked + j);
                  }
                  acc.v[0] = v0, acc.v[1] = v1, acc.v[2] = v2, acc.v[3] = v3, acc.v[4] = v4;
                });
                if (!need_coeffs) continue;
                if (any_neighbour) {
                  neighbour_pass(std::integral_constant<int, 0>(), acc, xm, m);
                  neighbour_pass(std::integral_constant<int, 1>(), acc, xm, m);
                  neighbour_pass(std::integral_constant<int, 2>(), acc, xm, m);
                }
                acc.pending += static_cast<int>((m + V::size() - 1) / V::size());
                if (acc.pending >= FLUSH_EVERY) flush(acc);
              }
            });
        if (!need_coeffs) continue;
        for (int64_t c = c_begin; c < c_end; ++c) {
          Accumulator& acc = accumulators[c - c_begin];
          flush(acc);
          double* out = partial.data() + (c * tiling.row_chunks + chunk) * NUM_COEFFICIENTS;
          for (int j = 0; j < NUM_COEFFICIENTS; ++j) out[j] = acc.sums[j];
        }
      }
    });
    if (need_coeffs) {
      scalar_t* out = grad_coeffs.data_ptr<scalar_t>();
      for (int64_t c = 0; c < neurons; ++c) {
        for (int j = 0; j < NUM_COEFFICIENTS; ++j) {
          double total = 0;
          for (int64_t chunk = 0; chunk < tiling.row_chunks; ++chunk) {
            total += partial[(c * tiling.row_chunks + chunk) * NUM_COEFFICIENTS + j];
          }
          out[c * NUM_COEFFICIENTS + j] = static_cast<scalar_t>(total);
        }
      }
    }
  });
  return {grad_x, grad_coeffs};
}

// classify_row over every neuron, for the tests: (effective coefficients, subspace).
std::vector<torch::Tensor> classify_all(torch::Tensor coeffs, double epsilon, bool critical_paper) {
  check(coeffs, "coeffs", coeffs.scalar_type());
  auto effective = coeffs.clone();
  auto index = torch::empty({coeffs.size(0)}, coeffs.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(coeffs.scalar_type(), "deu_classify", [&] {
    scalar_t* q = effective.data_ptr<scalar_t>();
    int64_t* out = index.data_ptr<int64_t>();
    for (int64_t c = 0; c < coeffs.size(0); ++c) {
      out[c] = classify_row<scalar_t>(q + c * NUM_COEFFICIENTS, epsilon, critical_paper);
    }
  });
  return {effective, index};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "DEU forward (fused CPU kernel)");
  m.def("backward", &backward, "DEU backward with gravitation (fused CPU kernel)");
  m.def("classify", &classify_all, "the subspace rules, as the kernels apply them");
  m.def("parametrise", &deu_parametrisation::parametrise, "a layer's coefficients from its weight");
  m.def("parametrise_backward", &deu_parametrisation::parametrise_backward,
        "d loss / d weight from d loss / d coefficients");
  m.attr("vector_lanes_float") = Vec<float>::size();
}
