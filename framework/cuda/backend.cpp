#include "framework/cuda/backend.h"

#include "framework/cuda/allocator.h"
#include "framework/cuda/attention.h"
#include "framework/cuda/check.h"
#include "framework/cuda/gemm.h"
#include "framework/cuda/linear.h"
#include "framework/cuda/ops.h"

namespace moe::cuda {
namespace {

class CudaBackend final : public Backend {
 public:
  Device device() const override { return Device::CUDA; }
  const char* name() const override { return "cuda"; }

  // ---- memory ----
  // The caching allocator hands out whole cudaMalloc blocks (never split): 256-byte aligned.
  void* allocate(size_t bytes) override { return device_allocator().allocate(bytes); }
  void deallocate(void* p) override { device_allocator().free(p); }
  void zero(void* p, size_t bytes) override {
    if (bytes) MOE_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, nullptr));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, nullptr));
  }
  // cudaMemcpy on the legacy default stream runs after all queued work and returns when done: the
  // host buffer may be reused (upload) or read (download) at once.
  void upload(void* dst, const void* host, size_t bytes) override {
    if (bytes) MOE_CUDA_CHECK(cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice));
  }
  void download(void* host, const void* src, size_t bytes) override {
    if (bytes) MOE_CUDA_CHECK(cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost));
  }
  void synchronize() override { MOE_CUDA_CHECK(cudaDeviceSynchronize()); }

  // ---- element-wise and row moves ----
  void add(float* y, const float* a, const float* b, int64_t n) override { cuda::add(y, a, b, n); }
  void copy_rows(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                 int64_t src_repeat) override {
    cuda::copy_rows(dst, ld_dst, src, ld_src, rows, cols, src_repeat);
  }
  void sum_row_groups(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                      int64_t group) override {
    cuda::sum_row_groups(dst, ld_dst, src, ld_src, rows, cols, group);
  }
  double sum(const float* x, int64_t n) override { return sum_f64(x, n, false); }
  double sum_squares(const float* x, int64_t n) override { return sum_f64(x, n, true); }
  double sum_squares_segments(const float* x, const int64_t* begin, const int64_t* length, int64_t count) override {
    return sum_squares_segments_f64(x, begin, length, count);
  }

  // ---- layers ----
  void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t N, int64_t D) override {
    cuda::embedding_forward(out, ids, table, N, D);
  }
  void embedding_backward(float* dtable, const int32_t* ids, const float* dout, int64_t N, int64_t D) override {
    cuda::embedding_backward(dtable, ids, dout, N, D);
  }
  void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D,
                       float eps) override {
    cuda::rmsnorm_forward(y, rstd, x, w, N, D, eps);
  }
  void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                        int64_t N, int64_t D, bool accumulate_dx) override {
    cuda::rmsnorm_backward(dx, dw, dy, x, w, rstd, N, D, accumulate_dx);
  }
  void swiglu_forward(float* h, const float* g, const float* u, int64_t n) override {
    cuda::swiglu_forward(h, g, u, n);
  }
  void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) override {
    cuda::swiglu_backward(dg, du, dh, g, u, n);
  }
  void rope_apply(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t heads,
                  int64_t row_stride, int64_t head_stride, int dim, bool backward) override {
    cuda::rope_apply(x, cos, sin, B, T, heads, row_stride, head_stride, dim, backward);
  }
  void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N,
                             int64_t V) override {
    cuda::cross_entropy_forward(losses, lse, logits, targets, N, V);
  }
  void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                              float scale, int64_t N, int64_t V) override {
    cuda::cross_entropy_backward(dlogits, logits, lse, targets, scale, N, V);
  }

  // ---- GEMMs ----
  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    cuda::gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void linear_forward(float* y, const float* x, const float* W, int64_t M, int64_t in, int64_t out, bool accumulate,
                      Precision p) override {
    cuda::linear_forward(y, x, W, M, in, out, accumulate, p);
  }
  void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int64_t M, int64_t in,
                       int64_t out, bool accumulate_dx, Precision p) override {
    cuda::linear_backward(dx, dW, dy, x, W, M, in, out, accumulate_dx, p);
  }
  void grouped_linear_forward(float* y, const float* x, const float* const* W, const int64_t* offsets, int64_t G,
                              int64_t in, int64_t out, Precision p) override {
    cuda::grouped_linear_forward(y, x, W, offsets, G, in, out, p);
  }
  void quantize_rows(const kern::Fp8Rows& q, const float* x) override { cuda::quantize_rows(q, x); }
  void dequantize_rows(float* x, const kern::Fp8Rows& q) override { cuda::dequantize_rows(x, q); }
  void rmsnorm_forward_fp8(float* y, float* rstd, const kern::Fp8Rows& q, const float* x, const float* w,
                           float eps) override {
    cuda::rmsnorm_forward_fp8(y, rstd, q, x, w, eps);
  }
  void swiglu_forward_fp8(float* h, const kern::Fp8Rows& q, const float* g, const float* u) override {
    cuda::swiglu_forward_fp8(h, q, g, u);
  }
  void moe_permute_fp8(float* xs, const kern::Fp8Rows& qs, const float* x, const kern::Fp8Rows& q,
                       const int32_t* slot_of, int64_t K) override {
    cuda::moe_permute_fp8(xs, qs, x, q, slot_of, K);
  }
  void linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* W, int64_t out, bool accumulate) override {
    cuda::linear_forward_fp8(y, x, W, out, accumulate);
  }
  void grouped_linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* const* W, const int64_t* offsets,
                                  int64_t G, int64_t out) override {
    cuda::grouped_linear_forward_fp8(y, x, W, offsets, G, out);
  }
  void grouped_linear_backward(float* dx, float* const* dW, const float* dy, const float* x, const float* const* W,
                               const int64_t* offsets, int64_t G, int64_t in, int64_t out, bool accumulate_dx,
                               Precision p) override {
    cuda::grouped_linear_backward(dx, dW, dy, x, W, offsets, G, in, out, accumulate_dx, p);
  }

  // ---- attention ----
  void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v,
                         const AttentionLayout& l) override {
    cuda::attention_forward(o, lse, q, k, v, l);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                          const float* v, const float* lse, const AttentionLayout& l) override {
    cuda::attention_backward(dq, dk, dv, dout, q, k, v, lse, l);
  }

  // ---- MoE routing and dispatch ----
  void router_forward(float* scores, int32_t* idx, float* w, const float* logits, const float* bias, int64_t N,
                      const kern::RouterSpec& sp) override {
    cuda::router_forward(scores, idx, w, logits, bias, N, sp);
  }
  void router_backward(float* dlogits, const float* scores, const float* logits, const int32_t* idx, const float* dw,
                       const float* f_BE, int64_t T, kern::RouterLossGrad lg, int64_t N,
                       const kern::RouterSpec& sp) override {
    cuda::router_backward(dlogits, scores, logits, idx, dw, f_BE, T, lg, N, sp);
  }
  void router_bias_update(float* bias, const float* load, int64_t E, float rate) override {
    cuda::router_bias_update(bias, load, E, rate);
  }
  void moe_dispatch_plan(int64_t* offsets, int32_t* slot_of, int32_t* pos_of, const int32_t* idx, int64_t P,
                         int64_t E) override {
    cuda::moe_dispatch_plan(offsets, slot_of, pos_of, idx, P, E);
  }
  void moe_permute(float* xs, const float* x, const int32_t* slot_of, int64_t P, int64_t K, int64_t D) override {
    cuda::moe_permute(xs, x, slot_of, P, K, D);
  }
  void moe_permute_backward(float* dx, const float* dxs, const int32_t* pos_of, int64_t N, int64_t K,
                            int64_t D) override {
    cuda::moe_permute_backward(dx, dxs, pos_of, N, K, D);
  }
  void moe_unpermute(float* y, const float* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K, int64_t D,
                     bool accumulate) override {
    cuda::moe_unpermute(y, ys, pos_of, w, N, K, D, accumulate);
  }
  void moe_unpermute_backward(float* dw, float* dys, const float* dy, const float* ys, const int32_t* pos_of,
                              const float* w, int64_t N, int64_t K, int64_t D) override {
    cuda::moe_unpermute_backward(dw, dys, dy, ys, pos_of, w, N, K, D);
  }

  // ---- optimizer ----
  void adamw_update(float* w, float* m, float* v, const float* g, int64_t n, const kern::AdamWStep& s) override {
    cuda::adamw_update(w, m, v, g, n, s);
  }
};

}  // namespace

Backend& backend() {
  static Backend* const instance = [] {
    Backend* b = new CudaBackend;  // never deleted (backend.h)
    register_device_backend(b);
    return b;
  }();
  return *instance;
}

}  // namespace moe::cuda
