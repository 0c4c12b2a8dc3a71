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
// Hand-written source, with its hand-written headers in this folder
// (vector_math.h: exp, sin, cos and the formulas' helpers on vectors; tiling.h:
// tiles, runs, loads and stores; parametrisation.h: a layer's weight to its
// coefficients). The formulas, tables and classification it includes
// (deu_kernels.h, deu_tables.h, deu_classify.h) are generated into generated/
// by `make regenerate`.
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
#include <utility>
#include <vector>

#include "deu_tables.h"
#include "parametrisation.h"

#include "vector_math.h"

// Every formula inlined into the loops that use it: the per-element work then
// stays in registers, and a loop that needs one output computes only that one.
#define DEU_FN inline __attribute__((always_inline))
#include "deu_kernels.h"
// The classification rules.
#include "deu_classify.h"
// Tiles, runs and their loads and stores.
#include "tiling.h"

namespace {

using namespace deu_generated;
using namespace deu_cpu;

// Vector iterations between flushes of the float accumulators into double.
constexpr int FLUSH_EVERY = 64;
// Gravitation targets per neuron: a, b and c, the classified coefficients.
constexpr int NUM_GRAVITATION = NUM_CLASSIFIED;

// f(std::integral_constant<int, I>()) for each I of the sequence, in order.
template <typename F, int... I>
void for_each_index(std::integer_sequence<int, I...>, F&& f) {
  (f(std::integral_constant<int, I>()), ...);
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
// (a, b, c) gets sum g * z_p, its subspace's derived gravitation output, where
// the generated SUMMED table says so for the rule ``gravitation`` (an index of
// GRAVITATION_RULES), and sum g * dh/dp of its neighbour h with the rule
// GRAVITATION_NEIGHBOUR (the paper's).
std::vector<torch::Tensor> backward(torch::Tensor x, torch::Tensor g, torch::Tensor coeffs,
                                    int64_t outer, int64_t neurons, int64_t inner, double epsilon,
                                    double steepness, double max_exponent, double max_value, bool critical_paper,
                                    int64_t gravitation, bool need_input, bool need_coeffs) {
  check(x, "x", x.scalar_type());
  check(g, "grad_output", x.scalar_type());
  check(coeffs, "coeffs", x.scalar_type());
  TORCH_CHECK(x.numel() == outer * neurons * inner && g.numel() == x.numel() &&
                  coeffs.numel() == neurons * NUM_COEFFICIENTS,
              "deu cpu kernel: x, grad_output and coeffs must have ", outer * neurons * inner,
              ", ", outer * neurons * inner, " and ", neurons * NUM_COEFFICIENTS, " elements, got ", x.numel(),
              ", ", g.numel(), " and ", coeffs.numel());
  TORCH_CHECK_VALUE(gravitation >= 0 && gravitation < NUM_GRAVITATION_RULES,
                    "deu cpu kernel: gravitation must be a rule index in [0, ", NUM_GRAVITATION_RULES,
                    "), got ", gravitation);
  const bool neighbour_gravitation = gravitation == GRAVITATION_NEIGHBOUR;
  const bool(&summed)[NUM_SUBSPACES][NUM_COEFFICIENTS] = SUMMED[gravitation];
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
        for (int p = 0; p < NUM_CLASSIFIED; ++p) singular[c] = singular[c] || zero[p];
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
        // Neighbour p's derivative in its own coefficient, with the masked g of
        // the piece.
        auto neighbour_pass = [&](auto p, Accumulator& acc, const scalar_t* xs, int64_t n) {
          constexpr int P = decltype(p)::value;
          if (nb[P] < 0) return;
          visit_subspace(nb[P], [&](auto subspace) {
            constexpr int H = decltype(subspace)::value;
            V h = acc.h[P];
            for (int64_t j = 0; j < n; j += V::size()) {
              const V dh = derivative_in<H, OUTPUT_OF_COEFFICIENT[P]>(load_run(xs, j, n), hp[P]);
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
                  const bool* use = summed[S];
                  V v[NUM_COEFFICIENTS];
                  for (int p = 0; p < NUM_COEFFICIENTS; ++p) v[p] = acc.v[p];
                  for (int64_t j = 0; j < m; j += V::size()) {
                    const V t = load_run(xm, j, m);
                    V d[NUM_OUTPUTS];
                    derivatives_in<S>(t, kp, d);
                    // Lanes past m were loaded as 0 and get g = 0.
                    const V inside = (d[0] <= bound) & (d[0] >= bound.neg());
                    const V gi = V::blendv(zero, load_run(gm, j, m), inside);
                    if (gxm) store_run(gxm, j, m, gi * d[1]);
                    if (!need_coeffs) continue;
                    for (int p = 0; p < NUM_COEFFICIENTS; ++p) {
                      if (use[p]) v[p] = at::vec::fmadd(gi, d[OUTPUT_OF_COEFFICIENT[p]], v[p]);
                    }
                    if (any_neighbour) gi.store(masked + j);
                  }
                  for (int p = 0; p < NUM_COEFFICIENTS; ++p) acc.v[p] = v[p];
                });
                if (!need_coeffs) continue;
                if (any_neighbour) {
                  for_each_index(std::make_integer_sequence<int, NUM_GRAVITATION>(),
                                 [&](auto p) { neighbour_pass(p, acc, xm, m); });
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
