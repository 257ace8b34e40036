#include "framework/ops.h"

#include <algorithm>
#include <cmath>

#include "framework/kernels/activation.h"
#include "framework/kernels/cast.h"
#include "framework/kernels/moves.h"
#include "framework/kernels/norm.h"
#include "framework/kernels/rope.h"
#include "framework/kernels/softmax.h"
#include "framework/launch.h"
#include "framework/scratch.h"
#include "framework/threads.h"

namespace moe {

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps) {
  launch_rows(N, 64, [&](kern::SerialRow& r, int64_t n) {
    kern::rmsnorm_row_forward(r, y + n * D, rstd + n, x + n * D, w, D, eps);
  });
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t D, bool accumulate_dx) {
  // Each run of rows accumulates dw into its own partial; partials are summed in run order, so the
  // result does not depend on thread timing.
  const int64_t S = num_threads();
  ScratchScope scope;
  float* partial = scratch_floats(S * D);
  std::fill(partial, partial + S * D, 0.f);
  launch_segments(N, S, [&](kern::SerialRow& r, int64_t s, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      kern::rmsnorm_row_backward(r, dx + n * D, partial + s * D, dy + n * D, x + n * D, w, rstd[n], D, accumulate_dx);
  });
  for (int64_t i = 0; i < D; ++i) kern::sum_partials(dw, partial, S, D, i);
}

// The element-wise ops of backend_ops.inc: BODY for every i, at least 4096 elements a thread.
#define MOE_OP(ret, name, params, args, device)
#define MOE_ELEMENTWISE_OP(name, params, args, n, ...) \
  void name params { launch_elements(n, 4096, [&](int64_t i) { __VA_ARGS__; }); }
#include "framework/backend_ops.inc"
#undef MOE_OP
#undef MOE_ELEMENTWISE_OP

// The single-source row moves (kernels/moves.h), a row per item.
void copy_rows(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
               int64_t src_repeat) {
  launch_elements(rows, 64, [&](int64_t r) {
    for (int64_t c = 0; c < cols; ++c) kern::copy_rows_element(dst, ld_dst, src, ld_src, src_repeat, r, c);
  });
}

void sum_row_groups(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                    int64_t group) {
  launch_elements(rows, 64, [&](int64_t r) {
    for (int64_t c = 0; c < cols; ++c) kern::sum_row_groups_element(dst, ld_dst, src, ld_src, group, r, c);
  });
}

void embedding_backward(float* dtable, const int32_t* ids, const float* dout, int64_t N, int64_t D) {
  // A walker per column range (ids repeat): every element's additions in token order, on any thread.
  parallel_for(D, [&](int64_t d0, int64_t d1) { kern::embedding_backward_columns(dtable, ids, dout, N, D, d0, d1); },
               16);
}

void softmax_forward(float* y, float* lse, const float* x, int64_t N, int64_t V, bool causal, int64_t q0) {
  launch_rows(N, 16, [&](kern::SerialRow& r, int64_t n) {
    const int64_t valid = kern::softmax_valid(n, V, causal, q0);
    lse[n] = kern::softmax_row_forward(r, y + n * V, x + n * V, valid, V, /*fast=*/false);
  });
}

void softmax_backward(float* dx, const float* y, const float* dy, int64_t N, int64_t V, bool causal, int64_t q0) {
  launch_rows(N, 16, [&](kern::SerialRow& r, int64_t n) {
    kern::softmax_row_backward(r, dx + n * V, y + n * V, dy + n * V, kern::softmax_valid(n, V, causal, q0), V);
  });
}

double cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N,
                             int64_t V) {
  launch_rows(N, 16, [&](kern::SerialRow& r, int64_t n) {
    kern::cross_entropy_row_forward(r, losses + n, lse + n, logits + n * V, targets[n], V);
  });
  double total = 0;
  for (int64_t n = 0; n < N; ++n) total += losses[n];
  return N ? total / double(N) : 0.0;
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                            float scale, int64_t N, int64_t V) {
  launch_rows(N, 16, [&](kern::SerialRow& r, int64_t n) {
    kern::cross_entropy_row_backward(r, dlogits + n * V, logits + n * V, lse[n], targets[n], scale, V);
  });
}

void target_ranks(int32_t* ranks, const float* logits, const int32_t* targets, int64_t N, int64_t V) {
  launch_rows(N, 16, [&](kern::SerialRow& r, int64_t n) {
    kern::target_rank_row(r, ranks + n, logits + n * V, targets[n], V);
  });
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
  const int half = dim / 2;
  parallel_for(B * T, [&](int64_t r0, int64_t r1) {
    ScratchScope scope;
    float* tmp = scratch_floats(dim);
    kern::SerialRow r;
    for (int64_t bt = r0; bt < r1; ++bt) {
      const int64_t t = bt % T;
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + bt * row_stride + h * head_stride;
        if (backward)
          kern::rope_row_backward(r, v, cos + t * half, sin + t * half, dim, tmp);
        else
          kern::rope_row_forward(r, v, cos + t * half, sin + t * half, dim, tmp);
      }
    }
  }, 64);
}

void adamw_update(float* w, float* m, float* v, const float* g, int64_t n, const kern::AdamWStep& s) {
  launch_elements(n, 1 << 14, [&](int64_t i) { kern::adamw_update(w + i, m + i, v + i, g[i], s); });
}

// Segment by segment: each element's update is the same kern::adamw_update as the GPU's one pass.
void adamw_update_segments(float* w, float* m, float* v, const float* g, const kern::AdamWSegment* segs,
                           int64_t count, const kern::AdamWStep& s) {
  for (int64_t i = 0; i < count; ++i) {
    kern::AdamWStep st = s;
    if (!segs[i].decay) st.decay = 1.f;
    const int64_t b = segs[i].begin;
    adamw_update(w + b, m + b, v + b, g + b, segs[i].n, st);
  }
}

void axpy(float* y, const float* x, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

double sum(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  return s;
}

double sum_squares(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return s;
}

}  // namespace moe
