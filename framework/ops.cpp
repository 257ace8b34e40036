#include "framework/ops.h"

#include <cmath>
#include <vector>

#include "framework/kernels/rows.h"
#include "framework/scratch.h"
#include "framework/threads.h"

namespace moe {

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps) {
  parallel_for(N, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) kern::rmsnorm_row_forward(y + r * D, rstd + r, x + r * D, w, D, eps);
  }, 64);
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t D, bool accumulate_dx) {
  // Each chunk accumulates dw into its own partial; partials are summed in chunk order, so the
  // result does not depend on thread timing.
  int chunks = num_threads();
  ScratchScope scope;
  float* partial = scratch_floats(int64_t(chunks) * D);
  float* row = scratch_floats(int64_t(chunks) * D);
  std::fill(partial, partial + int64_t(chunks) * D, 0.f);
  parallel_for(chunks, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int64_t r0 = N * c / chunks, r1 = N * (c + 1) / chunks;
      float* pw = partial + c * D;
      for (int64_t r = r0; r < r1; ++r) {
        if (accumulate_dx) {
          float* tmp = row + c * D;
          kern::rmsnorm_row_backward(tmp, pw, dy + r * D, x + r * D, w, rstd[r], D);
          for (int64_t i = 0; i < D; ++i) dx[r * D + i] += tmp[i];
        } else {
          kern::rmsnorm_row_backward(dx + r * D, pw, dy + r * D, x + r * D, w, rstd[r], D);
        }
      }
    }
  });
  for (int c = 0; c < chunks; ++c)
    for (int64_t i = 0; i < D; ++i) dw[i] += partial[c * D + i];
}

void swiglu_forward(float* h, const float* g, const float* u, int64_t n) {
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) h[i] = kern::swiglu(g[i], u[i]);
  }, 4096);
}

void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) {
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) kern::swiglu_backward(dg + i, du + i, dh[i], g[i], u[i]);
  }, 4096);
}

void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t N, int64_t D) {
  parallel_for(N, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t i = 0; i < D; ++i) out[r * D + i] = table[int64_t(ids[r]) * D + i];
  }, 256);
}

void embedding_backward(float* dtable, const int32_t* ids, const float* dout, int64_t N, int64_t D) {
  // Serial over rows: ids repeat, and a fixed order keeps the sum deterministic.
  for (int64_t r = 0; r < N; ++r)
    for (int64_t i = 0; i < D; ++i) dtable[int64_t(ids[r]) * D + i] += dout[r * D + i];
}

double cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N,
                             int64_t V) {
  parallel_for(N, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      lse[r] = kern::logsumexp_row(logits + r * V, V);
      losses[r] = lse[r] - logits[r * V + targets[r]];
    }
  }, 16);
  double total = 0;
  for (int64_t r = 0; r < N; ++r) total += losses[r];
  return N ? total / double(N) : 0.0;
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                            float scale, int64_t N, int64_t V) {
  parallel_for(N, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      kern::cross_entropy_row_backward(dlogits + r * V, logits + r * V, lse[r], targets[r], scale, V);
  }, 16);
}

void rope_tables(float* cos, float* sin, int64_t T, int dim, double theta) {
  int half = dim / 2;
  for (int64_t t = 0; t < T; ++t)
    for (int i = 0; i < half; ++i) {
      double inv_freq = 1.0 / std::pow(theta, double(2 * i) / double(dim));
      // f32 angle as in Hugging Face (positions and inv_freq are f32 there).
      float angle = float(t) * float(inv_freq);
      cos[t * half + i] = std::cos(angle);
      sin[t * half + i] = std::sin(angle);
    }
}

void rope_apply(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t heads,
                int64_t row_stride, int64_t head_stride, int dim, bool backward) {
  int half = dim / 2;
  parallel_for(B * T, [&](int64_t r0, int64_t r1) {
    ScratchScope scope;
    float* tmp = scratch_floats(dim);
    for (int64_t r = r0; r < r1; ++r) {
      int64_t t = r % T;
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + r * row_stride + h * head_stride;
        if (backward)
          kern::rope_backward(v, cos + t * half, sin + t * half, dim, tmp);
        else
          kern::rope_forward(v, cos + t * half, sin + t * half, dim, tmp);
      }
    }
  }, 64);
}

void axpy(float* y, const float* x, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

double sum_squares(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return s;
}

}  // namespace moe
