// The element helpers of deu_kernels.h for ATen's SIMD vectors: exp, sin, cos
// (inline in float), the capped exponential and the small helpers the formulas
// call. Hand-written; included by deu_cpu.cpp before the formulas.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cmath>

// EXP_FLOOR and MAX_EXP_CAP.
#include "deu_tables.h"

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
