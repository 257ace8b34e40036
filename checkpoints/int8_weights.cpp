#include "checkpoints/int8_weights.h"

#include <algorithm>
#include <cmath>

#include "framework/error.h"

namespace moe {

Int8Rows quantize_rows_int8(const Tensor& w, const std::string& what) {
  MOE_CHECK(w.ndim() == 2 && w.dtype() == DType::F32, what, ": int8 quantisation takes a 2-D f32 tensor");
  const int64_t rows = w.shape()[0], cols = w.shape()[1];
  Int8Rows out;
  out.q.resize(size_t(rows * cols));
  out.scale.resize(size_t(rows));
  const float* src = w.f32();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = src + r * cols;
    float amax = 0;
    for (int64_t c = 0; c < cols; ++c) {
      if (!std::isfinite(row[c])) throw error(what, ": row ", r, " holds ", row[c], " (expected finite weights to quantise)");
      amax = std::max(amax, std::fabs(row[c]));
    }
    const float s = amax / 127.f;
    out.scale[size_t(r)] = s;
    int8_t* q = out.q.data() + r * cols;
    for (int64_t c = 0; c < cols; ++c)
      q[c] = s > 0 ? int8_t(std::clamp(std::nearbyint(row[c] / s), -127.f, 127.f)) : int8_t(0);
  }
  return out;
}

void dequantize_rows_int8(const int8_t* q, const float* scale, int64_t rows, int64_t cols, float* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = float(q[r * cols + c]) * scale[r];
}

}  // namespace moe
