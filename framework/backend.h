// Compute backends: every op the model runs over tensors, on the memory of one device. Model code
// calls compute().op(...) (never a CPU function directly) with pointers into tensors that live on
// compute().device(), so the same model code trains on the CPU and on a GPU:
//   - the CPU backend (framework/backend_cpu.cpp) runs the ops of framework/ops.h, moe_ops.h,
//     gemm.h, precision.h and attention.h, i.e. the single-source kernels on the thread pool;
//   - the CUDA backend (framework/cuda/backend.h) runs the same kernels through the CUDA launchers
//     and cuBLASLt, on device memory;
//   - tests add an emulated device (tests/unit/emulated_device.h): the CPU ops over memory the host
//     may not touch outside an op, which proves on any machine that the model never reads device
//     memory from the host and never hands a host pointer to a device op.
// Pointers are device pointers except where a comment says "host". Host-side values the model
// needs (losses, expert counts, router statistics) come back through download() or the ops that
// return a number; each is a synchronisation point on a GPU, so the model keeps them few.
// Letters as in framework/ops.h; G groups (experts), P routed copies.
#pragma once
#include <cstddef>
#include <cstdint>

#include "framework/attention.h"
#include "framework/kernels/adamw.h"
#include "framework/kernels/fp8_rows.h"
#include "framework/kernels/router.h"
#include "framework/precision.h"
#include "framework/tensor.h"

namespace moe {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual const char* name() const = 0;

  // ---- memory (bytes) ----
  virtual void* allocate(size_t bytes) = 0;  // 256-byte aligned; throws moe::Error when out of memory
  virtual void deallocate(void* p) = 0;
  virtual void zero(void* p, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;           // within the device
  virtual void upload(void* dst, const void* host, size_t bytes) = 0;        // host -> device
  virtual void download(void* host, const void* src, size_t bytes) = 0;      // device -> host; waits
  virtual void synchronize() = 0;                                            // all queued work done

  // ---- element-wise and row moves ----
  // y[i] = a[i] + b[i]; y may alias a or b.
  virtual void add(float* y, const float* a, const float* b, int64_t n) = 0;
  // dst row r (cols elements, row stride ld_dst) = src row r / src_repeat (row stride ld_src).
  virtual void copy_rows(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                         int64_t src_repeat = 1) = 0;
  // dst row r = sum over j < group, in j order, of src row r * group + j.
  virtual void sum_row_groups(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows,
                              int64_t cols, int64_t group) = 0;
  // Sums in f64, the same order for every call of the same n (deterministic).
  virtual double sum(const float* x, int64_t n) = 0;
  virtual double sum_squares(const float* x, int64_t n) = 0;
  // The sum over `count` segments [begin[i], begin[i] + length[i]) of x of sum_squares(segment),
  // added in segment order: the gradient norm over the optimizer's segments. A device computes all
  // segments before it waits once; the result equals the loop over sum_squares bit for bit.
  virtual double sum_squares_segments(const float* x, const int64_t* begin, const int64_t* length, int64_t count) {
    double s = 0;
    for (int64_t i = 0; i < count; ++i) s += sum_squares(x + begin[i], length[i]);
    return s;
  }

  // ---- layers ----
  virtual void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t N, int64_t D) = 0;
  virtual void embedding_backward(float* dtable, const int32_t* ids, const float* dout, int64_t N, int64_t D) = 0;
  virtual void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D,
                               float eps) = 0;
  virtual void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                                const float* rstd, int64_t N, int64_t D, bool accumulate_dx) = 0;
  virtual void swiglu_forward(float* h, const float* g, const float* u, int64_t n) = 0;
  virtual void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) = 0;
  virtual void rope_apply(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t heads,
                          int64_t row_stride, int64_t head_stride, int dim, bool backward) = 0;
  // losses[N], lse[N] (the mean is the caller's: sum(losses) / N).
  virtual void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                                     int64_t N, int64_t V) = 0;
  virtual void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                                      float scale, int64_t N, int64_t V) = 0;

  // ---- GEMMs (f32 row-major operands; precision p rounds or quantises the inputs: precision.h) ----
  virtual void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) = 0;
  virtual void linear_forward(float* y, const float* x, const float* W, int64_t M, int64_t in, int64_t out,
                              bool accumulate, Precision p) = 0;
  virtual void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int64_t M,
                               int64_t in, int64_t out, bool accumulate_dx, Precision p) = 0;
  // Grouped linear layers (the routed experts): rows offsets[g]..offsets[g+1] of x go through W[g]
  // ([out, in]); y assigned. offsets (G+1) and the pointer arrays W, dW (G) are host arrays of
  // device pointers. Groups without rows are skipped (their dW untouched).
  virtual void grouped_linear_forward(float* y, const float* x, const float* const* W, const int64_t* offsets,
                                      int64_t G, int64_t in, int64_t out, Precision p) = 0;
  // dx (assigned, or added when accumulate_dx; may be null), dW[g] += dy_g^T x_g (skipped where
  // dW[g] is null: with dx null too, the group is not computed at all).
  virtual void grouped_linear_backward(float* dx, float* const* dW, const float* dy, const float* x,
                                       const float* const* W, const int64_t* offsets, int64_t G, int64_t in,
                                       int64_t out, bool accumulate_dx, Precision p) = 0;

  // ---- FP8 activations (train.precision fp8; framework/kernels/fp8_rows.h, framework/fp8_rows.h) ----
  // Producers that also write their output's E4M3 rows q (q.rows x q.cols is the output's shape;
  // q's codes and scales are device pointers), and the forward GEMMs that read them: the producer
  // and linear_forward / grouped_linear_forward at Precision::FP8, bit for bit on the CPU.
  virtual void quantize_rows(const kern::Fp8Rows& q, const float* x) = 0;
  // x[q.rows, q.cols] = the de-quantised values of q (the fake-quantised values).
  virtual void dequantize_rows(float* x, const kern::Fp8Rows& q) = 0;
  virtual void rmsnorm_forward_fp8(float* y, float* rstd, const kern::Fp8Rows& q, const float* x, const float* w,
                                   float eps) = 0;
  virtual void swiglu_forward_fp8(float* h, const kern::Fp8Rows& q, const float* g, const float* u) = 0;
  // moe_permute of x and of its rows q into xs and qs (P = qs.rows, D = q.cols).
  virtual void moe_permute_fp8(float* xs, const kern::Fp8Rows& qs, const float* x, const kern::Fp8Rows& q,
                               const int32_t* slot_of, int64_t K) = 0;
  // y[x.rows, out] (+)= x W^T, in = x.cols.
  virtual void linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* W, int64_t out, bool accumulate) = 0;
  // Rows offsets[g]..offsets[g+1] of x through W[g] (host offsets and pointer array, as
  // grouped_linear_forward); y assigned.
  virtual void grouped_linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* const* W,
                                          const int64_t* offsets, int64_t G, int64_t out) = 0;

  // ---- causal attention core: o = softmax(scale q k^T, causal) v, lse[B, H, T] saved ----
  virtual void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v,
                                 const AttentionLayout& l) = 0;
  // dq, dk, dv assigned (layouts of q, k, v), from dout (layout of o) and the saved lse.
  virtual void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                                  const float* v, const float* lse, const AttentionLayout& l) = 0;

  // ---- MoE routing and dispatch (framework/moe_ops.h) ----
  virtual void router_forward(float* scores, int32_t* idx, float* w, const float* logits, const float* bias, int64_t N,
                              const kern::RouterSpec& sp) = 0;
  virtual void router_backward(float* dlogits, const float* scores, const float* logits, const int32_t* idx,
                               const float* dw, const float* f_BE, int64_t T, kern::RouterLossGrad lg, int64_t N,
                               const kern::RouterSpec& sp) = 0;
  virtual void router_bias_update(float* bias, const float* load, int64_t E, float rate) = 0;
  // offsets[E+1] (int64, device), slot_of[P], pos_of[P]: the stable counting sort of idx by expert.
  virtual void moe_dispatch_plan(int64_t* offsets, int32_t* slot_of, int32_t* pos_of, const int32_t* idx, int64_t P,
                                 int64_t E) = 0;
  virtual void moe_permute(float* xs, const float* x, const int32_t* slot_of, int64_t P, int64_t K, int64_t D) = 0;
  virtual void moe_permute_backward(float* dx, const float* dxs, const int32_t* pos_of, int64_t N, int64_t K,
                                    int64_t D) = 0;
  virtual void moe_unpermute(float* y, const float* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K,
                             int64_t D, bool accumulate) = 0;
  virtual void moe_unpermute_backward(float* dw, float* dys, const float* dy, const float* ys, const int32_t* pos_of,
                                      const float* w, int64_t N, int64_t K, int64_t D) = 0;

  // ---- optimizer ----
  virtual void adamw_update(float* w, float* m, float* v, const float* g, int64_t n, const kern::AdamWStep& s) = 0;
};

// The CPU backend (always there).
Backend& cpu_backend();
// The backend owning memory of `device` (Tensor uses it for device tensors). Device::CUDA has one
// only after register_device_backend (the CUDA backend registers itself when first used; tests
// register the emulated device).
Backend& device_backend(Device device);
void register_device_backend(Backend* b);  // b->device() must not be CPU; null unregisters
// The backend the model computes with: the CPU unless a ComputeScope (or set_compute) says otherwise.
Backend& compute();
void set_compute(Backend* b);  // null: the CPU

// Computes on `b` while alive, then restores the previous backend.
class ComputeScope {
 public:
  explicit ComputeScope(Backend& b) : prev_(&compute()) { set_compute(&b); }
  ~ComputeScope() { set_compute(prev_); }
  ComputeScope(const ComputeScope&) = delete;
  ComputeScope& operator=(const ComputeScope&) = delete;

 private:
  Backend* prev_;
};

}  // namespace moe
