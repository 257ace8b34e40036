// Weight-only int8 quantisation of a matrix, symmetric, one f32 scale per output row (a Linear
// weight [out, in] has one row per output feature):
//   s[r] = max_c |W[r, c]| / 127        (a row of zeros gets s = 0)
//   q[r, c] = clamp(round(W[r, c] / s[r]), -127, 127)   (0 where s = 0)
//   W'[r, c] = q[r, c] * s[r]           (a zero row comes back as exact zeros)
// so every element comes back within half a step (s[r] / 2) of its value. -128 is never used,
// keeping the grid symmetric.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "framework/tensor.h"

namespace moe {

struct Int8Rows {
  std::vector<int8_t> q;     // rows x cols, row-major
  std::vector<float> scale;  // one per row
};

// `w` is a 2-D f32 tensor; `what` names it in the error for a non-finite value.
Int8Rows quantize_rows_int8(const Tensor& w, const std::string& what);
// q * scale per row, into `out` (rows x cols f32).
void dequantize_rows_int8(const int8_t* q, const float* scale, int64_t rows, int64_t cols, float* out);

}  // namespace moe
