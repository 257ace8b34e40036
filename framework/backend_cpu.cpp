// The CPU backend: framework/backend.h over the CPU ops (single-source kernels on the thread pool),
// and the registry of backends.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "framework/backend.h"
#include "framework/gemm.h"
#include "framework/fp8_rows.h"
#include "framework/kernels/moves.h"
#include "framework/launch.h"
#include "framework/moe_ops.h"
#include "framework/ops.h"
#include "framework/profiler.h"
#include "framework/threads.h"

namespace moe {
namespace {

// Runs fn(g, row_begin, rows) for each group with rows. Groups are spread over the thread pool in
// contiguous runs of about equal rows (a group goes to the thread its middle row falls in), and
// each group's GEMM runs whole on that thread: one large single-threaded call beats two halves.
template <class F>
void for_each_group(const int64_t* offsets, int64_t G, F&& fn) {
  const int64_t P = offsets[G] - offsets[0];
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), G));
  parallel_for(chunks, [&](int64_t c0, int64_t c1) {
    for (int64_t g = 0; g < G; ++g) {
      if (offsets[g + 1] == offsets[g]) continue;
      const int64_t mid = (offsets[g] + offsets[g + 1]) / 2 - offsets[0];
      const int64_t owner = std::min(chunks - 1, mid * chunks / std::max<int64_t>(P, 1));
      if (owner >= c0 && owner < c1) fn(g, offsets[g], offsets[g + 1] - offsets[g]);
    }
  });
}

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::CPU; }
  const char* name() const override { return "cpu"; }

  void* allocate(size_t bytes) override {
    void* p = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
    if (!p) throw std::bad_alloc();
    return p;
  }
  void deallocate(void* p) override { std::free(p); }
  void zero(void* p, size_t bytes) override { if (bytes) std::memset(p, 0, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { if (bytes) std::memmove(dst, src, bytes); }
  void upload(void* dst, const void* host, size_t bytes) override { copy(dst, host, bytes); }
  void download(void* host, const void* src, size_t bytes) override { copy(host, src, bytes); }
  void synchronize() override {}

  void add(float* y, const float* a, const float* b, int64_t n) override {
    parallel_for(n, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) y[i] = a[i] + b[i];
    }, 1 << 14);
  }
  // The single-source row moves (kernels/moves.h), a row per item.
  void copy_rows(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                 int64_t src_repeat) override {
    launch_elements(rows, 64, [&](int64_t r) {
      for (int64_t c = 0; c < cols; ++c) kern::copy_rows_element(dst, ld_dst, src, ld_src, src_repeat, r, c);
    });
  }
  void sum_row_groups(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                      int64_t group) override {
    launch_elements(rows, 64, [&](int64_t r) {
      for (int64_t c = 0; c < cols; ++c) kern::sum_row_groups_element(dst, ld_dst, src, ld_src, group, r, c);
    });
  }
  double sum(const float* x, int64_t n) override {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += x[i];
    return s;
  }
  double sum_squares(const float* x, int64_t n) override { return moe::sum_squares(x, n); }

  void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t N, int64_t D) override {
    moe::embedding_forward(out, ids, table, N, D);
  }
  void embedding_backward(float* dtable, const int32_t* ids, const float* dout, int64_t N, int64_t D) override {
    moe::embedding_backward(dtable, ids, dout, N, D);
  }
  void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D,
                       float eps) override {
    moe::rmsnorm_forward(y, rstd, x, w, N, D, eps);
  }
  void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                        int64_t N, int64_t D, bool accumulate_dx) override {
    moe::rmsnorm_backward(dx, dw, dy, x, w, rstd, N, D, accumulate_dx);
  }
  void swiglu_forward(float* h, const float* g, const float* u, int64_t n) override { moe::swiglu_forward(h, g, u, n); }
  void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) override {
    moe::swiglu_backward(dg, du, dh, g, u, n);
  }
  void rope_apply(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t heads,
                  int64_t row_stride, int64_t head_stride, int dim, bool backward) override {
    moe::rope_apply(x, cos, sin, B, T, heads, row_stride, head_stride, dim, backward);
  }
  void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N,
                             int64_t V) override {
    moe::cross_entropy_forward(losses, lse, logits, targets, N, V);
  }
  void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                              float scale, int64_t N, int64_t V) override {
    moe::cross_entropy_backward(dlogits, logits, lse, targets, scale, N, V);
  }

  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    moe::gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void linear_forward(float* y, const float* x, const float* W, int64_t M, int64_t in, int64_t out, bool accumulate,
                      Precision p) override {
    moe::linear_forward(y, x, W, M, in, out, accumulate, p);
  }
  void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int64_t M, int64_t in,
                       int64_t out, bool accumulate_dx, Precision p) override {
    moe::linear_backward(dx, dW, dy, x, W, M, in, out, accumulate_dx, p);
  }
  void grouped_linear_forward(float* y, const float* x, const float* const* W, const int64_t* offsets, int64_t G,
                              int64_t in, int64_t out, Precision p) override {
    for_each_group(offsets, G, [&](int64_t g, int64_t r0, int64_t n) {
      moe::linear_forward(y + r0 * out, x + r0 * in, W[g], n, in, out, false, p);
    });
  }
  void grouped_linear_backward(float* dx, float* const* dW, const float* dy, const float* x, const float* const* W,
                               const int64_t* offsets, int64_t G, int64_t in, int64_t out, bool accumulate_dx,
                               Precision p) override {
    for_each_group(offsets, G, [&](int64_t g, int64_t r0, int64_t n) {
      if (!dx && !dW[g]) return;  // a group without work (rows another call owns)
      moe::linear_backward(dx ? dx + r0 * in : nullptr, dW[g], dy + r0 * out, x + r0 * in, W[g], n, in, out,
                           accumulate_dx, p);
    });
  }

  void quantize_rows(const kern::Fp8Rows& q, const float* x) override { moe::quantize_rows(q, x); }
  void dequantize_rows(float* x, const kern::Fp8Rows& q) override { moe::dequantize_rows(x, q); }
  void rmsnorm_forward_fp8(float* y, float* rstd, const kern::Fp8Rows& q, const float* x, const float* w,
                           float eps) override {
    moe::rmsnorm_forward_fp8(y, rstd, q, x, w, eps);
  }
  void swiglu_forward_fp8(float* h, const kern::Fp8Rows& q, const float* g, const float* u) override {
    moe::swiglu_forward_fp8(h, q, g, u);
  }
  void moe_permute_fp8(float* xs, const kern::Fp8Rows& qs, const float* x, const kern::Fp8Rows& q,
                       const int32_t* slot_of, int64_t K) override {
    moe::moe_permute_fp8(xs, qs, x, q, slot_of, K);
  }
  void linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* W, int64_t out, bool accumulate) override {
    moe::linear_forward_fp8(y, x, W, out, accumulate);
  }
  void grouped_linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* const* W, const int64_t* offsets,
                                  int64_t G, int64_t out) override {
    for_each_group(offsets, G, [&](int64_t g, int64_t r0, int64_t n) {
      moe::linear_forward_fp8(y + r0 * out, x.slice(r0, n), W[g], out, false);
    });
  }

  void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v,
                         const AttentionLayout& l) override {
    moe::attention_forward(o, lse, q, k, v, l);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                          const float* v, const float* lse, const AttentionLayout& l) override {
    moe::attention_backward(dq, dk, dv, dout, q, k, v, lse, l);
  }

  void router_forward(float* scores, int32_t* idx, float* w, const float* logits, const float* bias, int64_t N,
                      const kern::RouterSpec& sp) override {
    moe::router_forward(scores, idx, w, logits, bias, N, sp);
  }
  void router_backward(float* dlogits, const float* scores, const float* logits, const int32_t* idx, const float* dw,
                       const float* f_BE, int64_t T, kern::RouterLossGrad lg, int64_t N,
                       const kern::RouterSpec& sp) override {
    moe::router_backward(dlogits, scores, logits, idx, dw, f_BE, T, lg, N, sp);
  }
  void router_bias_update(float* bias, const float* load, int64_t E, float rate) override {
    moe::router_bias_update(bias, load, E, rate);
  }
  // One pass of a counting sort (moe_ops.h's moe_dispatch_plan, the GPU's shape, scans the choices
  // once per expert); the same stable plan.
  void moe_dispatch_plan(int64_t* offsets, int32_t* slot_of, int32_t* pos_of, const int32_t* idx, int64_t P,
                         int64_t E) override {
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
  void moe_permute(float* xs, const float* x, const int32_t* slot_of, int64_t P, int64_t K, int64_t D) override {
    moe::moe_permute(xs, x, slot_of, P, K, D);
  }
  void moe_permute_backward(float* dx, const float* dxs, const int32_t* pos_of, int64_t N, int64_t K,
                            int64_t D) override {
    moe::moe_permute_backward(dx, dxs, pos_of, N, K, D);
  }
  void moe_unpermute(float* y, const float* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K, int64_t D,
                     bool accumulate) override {
    moe::moe_unpermute(y, ys, pos_of, w, N, K, D, accumulate);
  }
  void moe_unpermute_backward(float* dw, float* dys, const float* dy, const float* ys, const int32_t* pos_of,
                              const float* w, int64_t N, int64_t K, int64_t D) override {
    moe::moe_unpermute_backward(dw, dys, dy, ys, pos_of, w, N, K, D);
  }

  void adamw_update(float* w, float* m, float* v, const float* g, int64_t n, const kern::AdamWStep& s) override {
    moe::adamw_update(w, m, v, g, n, s);
  }
};

Backend* g_device = nullptr;   // the backend of Device::CUDA memory
Backend* g_compute = nullptr;  // null: the CPU

}  // namespace

Backend& cpu_backend() {
  static CpuBackend b;
  return b;
}

Backend& device_backend(Device device) {
  if (device == Device::CPU) return cpu_backend();
  MOE_CHECK(g_device && g_device->device() == device,
            "no backend for device memory is registered (a CUDA tensor without the CUDA backend)");
  return *g_device;
}

void register_device_backend(Backend* b) {
  MOE_CHECK(!b || b->device() != Device::CPU, "the CPU backend is always registered");
  g_device = b;
}

Backend& compute() { return g_compute ? *g_compute : cpu_backend(); }

void set_compute(Backend* b) { g_compute = b; }

}  // namespace moe
