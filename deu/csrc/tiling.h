// How the fused CPU kernel walks its input: tiles of (neurons) x (rows) for the
// threads, contiguous runs of one neuron's elements (short rows transposed
// through per-thread scratch), vector loads and stores of a run, the output
// clamp and lane sums. Hand-written; included by deu_cpu.cpp.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

#include "vector_math.h"

namespace deu_cpu {

using deu_generated::Vec;

// Neurons per tile: for (N, C) inputs one cache line of a row holds them all.
constexpr int64_t TILE_NEURONS = 16;
// Elements per tile and neuron, roughly: enough to amortise the per-neuron set-up.
constexpr int64_t TILE_ELEMENTS = 8192;

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

}  // namespace deu_cpu
