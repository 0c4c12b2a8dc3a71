// A deu.DEU layer's parametrisation (how its weight becomes the coefficients), for
// the layer's eager path; deu/_parametrisation.py's coefficients_from_weight says
// what it computes and why. Bit for bit that Python form's values, and its
// gradients wherever the weight is not NaN: expm1 is ATen's own operator, on a
// contiguous buffer laid out as the Python form's clamped w is (so the same vector and scalar
// lanes compute each element), and the rest is exact (abs, negation, choice) or
// one IEEE operation in the tensor's dtype, as ATen computes a tensor-scalar
// product (the scalar rounded to the dtype) and e + 1. From C++ the whole map is
// one call with one ATen operator, instead of nine Python dispatches, which at
// small shapes was most of the layer's per-call time. Included by deu_cpu.cpp.
#pragma once

#include <torch/extension.h>

#include <vector>

#include "deu_tables.h"  // NUM_CLASSIFIED

namespace deu_parametrisation {

// The classified coefficients (a, b, c) are shaped; the initial conditions stay linear.
constexpr int64_t kShaped = deu_generated::NUM_CLASSIFIED;

inline void check_weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) > kShaped, "deu: parametrise expects a (neurons, ",
              kShaped, " + initial conditions) weight, got shape ", weight.sizes());
}

// (coefficients, expm1(|w|) of the shaped columns, or an undefined tensor for "linear").
inline std::vector<at::Tensor> parametrise(const at::Tensor& weight_in, double scale, bool symlog) {
  check_weight(weight_in);
  if (!symlog) return {weight_in * scale, at::Tensor()};
  const at::Tensor weight = weight_in.contiguous();
  const int64_t rows = weight.size(0), columns = weight.size(1);
  at::Tensor e = at::empty({rows, kShaped}, weight.options());
  at::Tensor out = at::empty_like(weight);
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "deu_parametrise", [&] {
    const scalar_t* w = weight.data_ptr<scalar_t>();
    scalar_t* ep = e.data_ptr<scalar_t>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < kShaped; ++k) ep[r * kShaped + k] = std::abs(w[r * columns + k]);
    e.expm1_();
    const scalar_t s = static_cast<scalar_t>(scale);
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < columns; ++k) {
        const scalar_t v = w[r * columns + k];
        // w = +-0 and NaN come through as they are, with their sign, as in the
        // Python form (whose clamp passes -0 and NaN through).
        const scalar_t e_k = k < kShaped ? ep[r * kShaped + k] : scalar_t(0);
        const scalar_t shaped = k < kShaped ? (v > 0 ? e_k : (v < 0 ? -e_k : v)) : v;
        o[r * columns + k] = shaped * s;
      }
  });
  return {out, e};
}

// d loss / d weight from d loss / d coefficients and parametrise's second result.
inline at::Tensor parametrise_backward(const at::Tensor& grad_in, const c10::optional<at::Tensor>& saved,
                                       double scale) {
  check_weight(grad_in);
  if (!saved.has_value() || !saved->defined()) return grad_in * scale;
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor e = saved->contiguous();
  const int64_t rows = grad.size(0), columns = grad.size(1);
  at::Tensor out = at::empty_like(grad);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "deu_parametrise_backward", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* ep = e.data_ptr<scalar_t>();
    const scalar_t s = static_cast<scalar_t>(scale);
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < columns; ++k) {
        const scalar_t scaled = g[r * columns + k] * s;
        o[r * columns + k] = k < kShaped ? scaled * (ep[r * kShaped + k] + scalar_t(1)) : scaled;
      }
  });
  return out;
}

}  // namespace deu_parametrisation
