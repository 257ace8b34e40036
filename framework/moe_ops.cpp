#include "framework/moe_ops.h"

#include <algorithm>
#include <vector>

#include "framework/kernels/permute.h"
#include "framework/launch.h"
#include "framework/scratch.h"

namespace moe {

void router_forward(float* scores, int32_t* idx, float* w, const float* logits, const float* bias, int64_t N,
                    const kern::RouterSpec& sp) {
  const int64_t E = sp.E, K = sp.K;
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    ScratchScope scope;
    float* scratch = scratch_floats(kern::router_scratch_floats(sp));
    std::vector<int32_t> iscratch(size_t(kern::router_scratch_ints(sp)));
    for (int64_t n = n0; n < n1; ++n)
      kern::router_row_forward(scores + n * E, idx + n * K, w + n * K, logits + n * E, bias, sp, scratch,
                               iscratch.data());
  }, 32);
}

void router_backward(float* dlogits, const float* scores, const float* logits, const int32_t* idx, const float* dw,
                     const float* f_BE, int64_t T, kern::RouterLossGrad lg, int64_t N, const kern::RouterSpec& sp) {
  const int64_t E = sp.E, K = sp.K;
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    ScratchScope scope;
    float* ds = scratch_floats(E);
    kern::RouterLossGrad g = lg;
    for (int64_t n = n0; n < n1; ++n) {
      g.f = f_BE ? f_BE + (n / T) * E : nullptr;
      kern::router_row_backward(dlogits + n * E, ds, scores + n * E, logits + n * E, idx + n * K, dw + n * K, g, sp);
    }
  }, 32);
}

void router_loss_stats(float* losses, float* f_BE, const float* scores, const float* logits, const int32_t* idx,
                       int64_t B, int64_t T, float aux_coef, float z_coef, const kern::RouterSpec& sp) {
  const int64_t N = B * T, E = sp.E, K = sp.K, BE = aux_coef > 0 ? B * E : 0, NZ = z_coef > 0 ? N : 0;
  std::vector<float> tot(static_cast<size_t>(BE > 0 ? N : 0)), z(static_cast<size_t>(NZ));
  std::vector<double> fP(static_cast<size_t>(BE));
  launch_rows(N, 32, [&](kern::SerialRow& r, int64_t n) {
    kern::router_token_stats(r, BE > 0 ? &tot[size_t(n)] : nullptr, NZ > 0 ? &z[size_t(n)] : nullptr, scores + n * E,
                             logits + n * E, E);
  });
  launch_rows(BE, 4, [&](kern::SerialRow& r, int64_t row) {
    const int64_t b = row / E, e = row % E, t0 = b * T;
    kern::router_balance_row(r, f_BE + row, &fP[size_t(row)], scores + t0 * E, idx + t0 * K, tot.data() + t0, T, e,
                             sp);
  });
  kern::SerialRow one;
  kern::router_loss_totals(one, losses, fP.data(), BE, B, z.data(), NZ, aux_coef, z_coef);
}

void router_bias_update(float* bias, const float* load, int64_t E, float rate) {
  const double mean = kern::router_mean_load(load, E);
  for (int64_t e = 0; e < E; ++e) kern::router_bias_update(bias + e, load[e], mean, rate);
}

// One pass of a counting sort. The GPU's shape (kern::dispatch_count_segment and
// dispatch_fill_segment, one block per expert, each scanning all choices) gives the same stable
// plan; tests compare the two.
void moe_dispatch_plan(int64_t* offsets, int32_t* slot_of, int32_t* pos_of, const int32_t* idx, int64_t P,
                       int64_t E) {
  std::fill(offsets, offsets + E + 1, 0);
  for (int64_t i = 0; i < P; ++i) offsets[idx[i] + 1]++;
  for (int64_t e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
  for (int64_t i = 0; i < P; ++i) {
    const int64_t p = offsets[idx[i]]++;  // offsets[e] runs to offsets[e + 1] ...
    slot_of[p] = int32_t(i);
    pos_of[i] = int32_t(p);
  }
  for (int64_t e = E; e > 0; --e) offsets[e] = offsets[e - 1];  // ... and is shifted back
  offsets[0] = 0;
}

void moe_permute(float* xs, const float* x, const int32_t* slot_of, int64_t P, int64_t K, int64_t D) {
  launch_rows(P, 64, [&](kern::SerialRow& r, int64_t p) {
    kern::copy_row(r, xs + p * D, x + (slot_of[p] / K) * D, D);
  });
}

void moe_permute_backward(float* dx, const float* dxs, const int32_t* pos_of, int64_t N, int64_t K, int64_t D) {
  launch_rows(N, 64, [&](kern::SerialRow& r, int64_t n) {
    kern::permute_row_backward(r, dx + n * D, dxs, pos_of + n * K, K, D);
  });
}

namespace {

// The combine and its backward over outputs of element type Y (f32, or bf16 bits).
template <class Y>
void unpermute_rows(float* y, const Y* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K, int64_t D,
                    bool accumulate) {
  launch_rows(N, 64, [&](kern::SerialRow& r, int64_t n) {
    kern::unpermute_row(r, y + n * D, ys, pos_of + n * K, w + n * K, K, D, accumulate);
  });
}

template <class Y>
void unpermute_rows_backward(float* dw, float* dys, const float* dy, const Y* ys, const int32_t* pos_of,
                             const float* w, int64_t N, int64_t K, int64_t D) {
  launch_rows(N, 64, [&](kern::SerialRow& r, int64_t n) {
    kern::unpermute_row_backward(r, dw + n * K, dys, dy + n * D, ys, pos_of + n * K, w + n * K, K, D);
  });
}

}  // namespace

void moe_unpermute(float* y, const float* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K, int64_t D,
                   bool accumulate) {
  unpermute_rows(y, ys, pos_of, w, N, K, D, accumulate);
}

void moe_unpermute_backward(float* dw, float* dys, const float* dy, const float* ys, const int32_t* pos_of,
                            const float* w, int64_t N, int64_t K, int64_t D) {
  unpermute_rows_backward(dw, dys, dy, ys, pos_of, w, N, K, D);
}

void moe_unpermute_bf16(float* y, const uint16_t* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K,
                        int64_t D, bool accumulate) {
  unpermute_rows(y, ys, pos_of, w, N, K, D, accumulate);
}

void moe_unpermute_backward_bf16(float* dw, float* dys, const float* dy, const uint16_t* ys, const int32_t* pos_of,
                                 const float* w, int64_t N, int64_t K, int64_t D) {
  unpermute_rows_backward(dw, dys, dy, ys, pos_of, w, N, K, D);
}

}  // namespace moe
