// An emulated device for tests: the CPU backend's ops over "device" memory that the host cannot
// touch outside an op. Its memory is one reserved address range kept PROT_NONE except while a
// backend op runs, and every op checks that its device pointers point into that range. So a model
// step run on it proves, on any machine, the two rules a GPU enforces only at run time:
//   - the host never reads or writes device memory (it would fault here: SIGSEGV);
//   - no host pointer reaches a device op (a moe::Error here; an illegal address on a GPU).
// Results are the CPU backend's, bit for bit. Registers itself as the Device::CUDA backend while
// alive. Single-threaded use (ops come from the test's thread; the CPU ops fan out inside).
#pragma once
#include <sys/mman.h>

#include <cstring>
#include <initializer_list>
#include <map>

#include "framework/backend.h"
#include "framework/error.h"

namespace moe::test {

class EmulatedDevice final : public Backend {
 public:
  static constexpr size_t kReserve = size_t(1) << 32;  // address space only (MAP_NORESERVE)

  EmulatedDevice() {
    void* p = mmap(nullptr, kReserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    MOE_CHECK(p != MAP_FAILED, "emulated device: cannot reserve address space");
    base_ = static_cast<char*>(p);
    register_device_backend(this);
  }
  ~EmulatedDevice() override {
    register_device_backend(nullptr);
    munmap(base_, kReserve);
  }
  EmulatedDevice(const EmulatedDevice&) = delete;
  EmulatedDevice& operator=(const EmulatedDevice&) = delete;

  Device device() const override { return Device::CUDA; }
  const char* name() const override { return "emulated-device"; }
  bool owns(const void* p) const { return p >= base_ && p < base_ + used_; }
  // Opens device memory to the host until the matching unhold(): for collectives on device
  // buffers, which MPI reads and writes (also during other MPI calls) from post to completion.
  void hold() {
    if (depth_++ == 0) protect(base_, used_, PROT_READ | PROT_WRITE);
  }
  void unhold() {
    if (--depth_ == 0) protect(base_, used_, PROT_NONE);
  }
  int64_t ops() const { return ops_; }

  // ---- memory: exact-size reuse of freed blocks, else the next free address ----
  void* allocate(size_t bytes) override {
    const size_t size = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
    auto it = free_.find(size);
    char* p;
    if (it != free_.end()) {
      p = it->second;
      free_.erase(it);
    } else {
      MOE_CHECK(used_ + size <= kReserve, "emulated device: out of memory");
      p = base_ + used_;
      used_ += size;
      if (depth_ > 0) protect(p, size, PROT_READ | PROT_WRITE);  // allocated inside an op
    }
    sizes_[p] = size;
    return p;
  }
  void deallocate(void* p) override {
    auto it = sizes_.find(static_cast<char*>(p));
    MOE_CHECK(it != sizes_.end(), "emulated device: free of a pointer it did not allocate");
    free_.emplace(it->second, it->first);
    sizes_.erase(it);
  }
  void zero(void* p, size_t bytes) override { Op op(this, {p}); cpu().zero(p, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { Op op(this, {dst, src}); cpu().copy(dst, src, bytes); }
  void upload(void* dst, const void* host, size_t bytes) override {
    host_only(host);
    Op op(this, {dst});
    std::memcpy(dst, host, bytes);
  }
  void download(void* host, const void* src, size_t bytes) override {
    host_only(host);
    Op op(this, {src});
    std::memcpy(host, src, bytes);
  }
  void synchronize() override {}

  void add(float* y, const float* a, const float* b, int64_t n) override {
    Op op(this, {y, a, b});
    cpu().add(y, a, b, n);
  }
  void copy_rows(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                 int64_t src_repeat) override {
    Op op(this, {dst, src});
    cpu().copy_rows(dst, ld_dst, src, ld_src, rows, cols, src_repeat);
  }
  void sum_row_groups(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                      int64_t group) override {
    Op op(this, {dst, src});
    cpu().sum_row_groups(dst, ld_dst, src, ld_src, rows, cols, group);
  }
  double sum(const float* x, int64_t n) override { Op op(this, {x}); return cpu().sum(x, n); }
  double sum_squares(const float* x, int64_t n) override { Op op(this, {x}); return cpu().sum_squares(x, n); }

  void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t N, int64_t D) override {
    Op op(this, {out, ids, table});
    cpu().embedding_forward(out, ids, table, N, D);
  }
  void embedding_backward(float* dtable, const int32_t* ids, const float* dout, int64_t N, int64_t D) override {
    Op op(this, {dtable, ids, dout});
    cpu().embedding_backward(dtable, ids, dout, N, D);
  }
  void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D,
                       float eps) override {
    Op op(this, {y, rstd, x, w});
    cpu().rmsnorm_forward(y, rstd, x, w, N, D, eps);
  }
  void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                        int64_t N, int64_t D, bool accumulate_dx) override {
    Op op(this, {dx, dw, dy, x, w, rstd});
    cpu().rmsnorm_backward(dx, dw, dy, x, w, rstd, N, D, accumulate_dx);
  }
  void swiglu_forward(float* h, const float* g, const float* u, int64_t n) override {
    Op op(this, {h, g, u});
    cpu().swiglu_forward(h, g, u, n);
  }
  void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) override {
    Op op(this, {dg, du, dh, g, u});
    cpu().swiglu_backward(dg, du, dh, g, u, n);
  }
  void rope_apply(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t heads,
                  int64_t row_stride, int64_t head_stride, int dim, bool backward) override {
    Op op(this, {x, cos, sin});
    cpu().rope_apply(x, cos, sin, B, T, heads, row_stride, head_stride, dim, backward);
  }
  void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N,
                             int64_t V) override {
    Op op(this, {losses, lse, logits, targets});
    cpu().cross_entropy_forward(losses, lse, logits, targets, N, V);
  }
  void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                              float scale, int64_t N, int64_t V) override {
    Op op(this, {dlogits, logits, lse, targets});
    cpu().cross_entropy_backward(dlogits, logits, lse, targets, scale, N, V);
  }

  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    Op op(this, {A, B, C});
    cpu().gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void linear_forward(float* y, const float* x, const float* W, int64_t M, int64_t in, int64_t out, bool accumulate,
                      Precision p) override {
    Op op(this, {y, x, W});
    cpu().linear_forward(y, x, W, M, in, out, accumulate, p);
  }
  void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int64_t M, int64_t in,
                       int64_t out, bool accumulate_dx, Precision p) override {
    Op op(this, {dx, dW, dy, x, W}, /*nulls=*/true);
    cpu().linear_backward(dx, dW, dy, x, W, M, in, out, accumulate_dx, p);
  }
  void grouped_linear_forward(float* y, const float* x, const float* const* W, const int64_t* offsets, int64_t G,
                              int64_t in, int64_t out, Precision p) override {
    host_only(W);
    host_only(offsets);
    Op op(this, {y, x});
    for (int64_t g = 0; g < G; ++g) op.check(W[g], false);
    cpu().grouped_linear_forward(y, x, W, offsets, G, in, out, p);
  }
  void quantize_rows(const kern::Fp8Rows& q, const float* x) override {
    Op op(this, {q.codes, q.scales, x});
    cpu().quantize_rows(q, x);
  }
  void dequantize_rows(float* x, const kern::Fp8Rows& q) override {
    Op op(this, {x, q.codes, q.scales});
    cpu().dequantize_rows(x, q);
  }
  void rmsnorm_forward_fp8(float* y, float* rstd, const kern::Fp8Rows& q, const float* x, const float* w,
                           float eps) override {
    Op op(this, {y, rstd, q.codes, q.scales, x, w});
    cpu().rmsnorm_forward_fp8(y, rstd, q, x, w, eps);
  }
  void swiglu_forward_fp8(float* h, const kern::Fp8Rows& q, const float* g, const float* u) override {
    Op op(this, {h, q.codes, q.scales, g, u});
    cpu().swiglu_forward_fp8(h, q, g, u);
  }
  void moe_permute_fp8(float* xs, const kern::Fp8Rows& qs, const float* x, const kern::Fp8Rows& q,
                       const int32_t* slot_of, int64_t K) override {
    Op op(this, {xs, qs.codes, qs.scales, x, q.codes, q.scales, slot_of});
    cpu().moe_permute_fp8(xs, qs, x, q, slot_of, K);
  }
  void linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* W, int64_t out, bool accumulate) override {
    Op op(this, {y, x.codes, x.scales, W});
    cpu().linear_forward_fp8(y, x, W, out, accumulate);
  }
  void grouped_linear_forward_fp8(float* y, const kern::Fp8Rows& x, const float* const* W, const int64_t* offsets,
                                  int64_t G, int64_t out) override {
    host_only(W);
    host_only(offsets);
    Op op(this, {y, x.codes, x.scales});
    for (int64_t g = 0; g < G; ++g) op.check(W[g], false);
    cpu().grouped_linear_forward_fp8(y, x, W, offsets, G, out);
  }
  void grouped_linear_backward(float* dx, float* const* dW, const float* dy, const float* x, const float* const* W,
                               const int64_t* offsets, int64_t G, int64_t in, int64_t out, bool accumulate_dx,
                               Precision p) override {
    host_only(W);
    host_only(dW);
    host_only(offsets);
    Op op(this, {dy, x});
    op.check(dx, true);
    for (int64_t g = 0; g < G; ++g) op.check(W[g], false), op.check(dW[g], true);
    cpu().grouped_linear_backward(dx, dW, dy, x, W, offsets, G, in, out, accumulate_dx, p);
  }

  void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v,
                         const AttentionLayout& l) override {
    Op op(this, {o, lse, q, k, v});
    cpu().attention_forward(o, lse, q, k, v, l);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                          const float* v, const float* lse, const AttentionLayout& l) override {
    Op op(this, {dq, dk, dv, dout, q, k, v, lse});
    cpu().attention_backward(dq, dk, dv, dout, q, k, v, lse, l);
  }

  void router_forward(float* scores, int32_t* idx, float* w, const float* logits, const float* bias, int64_t N,
                      const kern::RouterSpec& sp) override {
    Op op(this, {scores, idx, w, logits, bias});
    cpu().router_forward(scores, idx, w, logits, bias, N, sp);
  }
  void router_backward(float* dlogits, const float* scores, const float* logits, const int32_t* idx, const float* dw,
                       const float* f_BE, int64_t T, kern::RouterLossGrad lg, int64_t N,
                       const kern::RouterSpec& sp) override {
    Op op(this, {dlogits, scores, logits, idx, dw});
    op.check(f_BE, true);
    cpu().router_backward(dlogits, scores, logits, idx, dw, f_BE, T, lg, N, sp);
  }
  void router_bias_update(float* bias, const float* load, int64_t E, float rate) override {
    Op op(this, {bias, load});
    cpu().router_bias_update(bias, load, E, rate);
  }
  void moe_dispatch_plan(int64_t* offsets, int32_t* slot_of, int32_t* pos_of, const int32_t* idx, int64_t P,
                         int64_t E) override {
    Op op(this, {offsets, slot_of, pos_of, idx});
    cpu().moe_dispatch_plan(offsets, slot_of, pos_of, idx, P, E);
  }
  void moe_permute(float* xs, const float* x, const int32_t* slot_of, int64_t P, int64_t K, int64_t D) override {
    Op op(this, {xs, x, slot_of});
    cpu().moe_permute(xs, x, slot_of, P, K, D);
  }
  void moe_permute_backward(float* dx, const float* dxs, const int32_t* pos_of, int64_t N, int64_t K,
                            int64_t D) override {
    Op op(this, {dx, dxs, pos_of});
    cpu().moe_permute_backward(dx, dxs, pos_of, N, K, D);
  }
  void moe_unpermute(float* y, const float* ys, const int32_t* pos_of, const float* w, int64_t N, int64_t K, int64_t D,
                     bool accumulate) override {
    Op op(this, {y, ys, pos_of, w});
    cpu().moe_unpermute(y, ys, pos_of, w, N, K, D, accumulate);
  }
  void moe_unpermute_backward(float* dw, float* dys, const float* dy, const float* ys, const int32_t* pos_of,
                              const float* w, int64_t N, int64_t K, int64_t D) override {
    Op op(this, {dw, dys, dy, ys, pos_of, w});
    cpu().moe_unpermute_backward(dw, dys, dy, ys, pos_of, w, N, K, D);
  }
  void adamw_update(float* w, float* m, float* v, const float* g, int64_t n, const kern::AdamWStep& s) override {
    Op op(this, {w, m, v, g});
    cpu().adamw_update(w, m, v, g, n, s);
  }

 private:
  // One backend op: checks its device pointers, opens the memory to the host while it runs.
  class Op {
   public:
    Op(EmulatedDevice* d, std::initializer_list<const void*> ptrs, bool nulls = false) : d_(d) {
      for (const void* p : ptrs) check(p, nulls);
      if (d_->depth_++ == 0) d_->protect(d_->base_, d_->used_, PROT_READ | PROT_WRITE);
      ++d_->ops_;
    }
    ~Op() {
      if (--d_->depth_ == 0) d_->protect(d_->base_, d_->used_, PROT_NONE);
    }
    void check(const void* p, bool null_ok) const {
      if (!p && null_ok) return;
      MOE_CHECK(d_->owns(p), "emulated device: a device op got a pointer outside device memory (", p, ")");
    }

   private:
    EmulatedDevice* d_;
  };

  void host_only(const void* p) const {
    MOE_CHECK(!owns(p), "emulated device: a host argument points into device memory");
  }
  // Whole pages covering [p, p + bytes) (base_ is page-aligned, blocks only 256-byte aligned).
  void protect(char* p, size_t bytes, int prot) const {
    if (!bytes) return;
    char* first = base_ + size_t(p - base_) / 4096 * 4096;
    const size_t span = (size_t(p + bytes - first) + 4095) / 4096 * 4096;
    MOE_CHECK(mprotect(first, span, prot) == 0, "emulated device: mprotect failed");
  }
  static Backend& cpu() { return cpu_backend(); }

  char* base_ = nullptr;
  size_t used_ = 0;
  int depth_ = 0;
  int64_t ops_ = 0;
  std::multimap<size_t, char*> free_;
  std::map<char*, size_t> sizes_;
};

}  // namespace moe::test
