// The causal attention core on the GPU (attention.h). Scores of one chunk of heads of sequence b
// sit in S[hc, T, T]; row n of S is head h0 + n / T, query t = n % T, which sees keys 0..t (under
// a document mask keys doc_start[b*T + t]..t; the softmax rows zero the rest).
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "framework/cuda/allocator.h"
#include "framework/cuda/attention.h"
#include "framework/cuda/check.h"
#include "framework/cuda/cudnn_attention.h"
#include "framework/cuda/gemm.h"
#include "framework/cuda/launch.cuh"
#include "framework/cuda/ops.h"
#include "framework/error.h"
#include "framework/kernels/latent_attention.h"
#include "framework/kernels/softmax.h"
#include "framework/sdpa_graph.h"

namespace moe::cuda {
namespace {

// The GEMM operands q, k, v and o (or dO) of the attention core: the caller's f32 rows, or at
// l.bf16 bf16 copies of them in the same layout (cast once per call), so every GEMM reads bf16 as
// the CPU core's does (framework/attention.cpp): products of bf16 values are exact in f32, so the
// two differ by the order of f32 accumulation only.
struct Operands {
  const void *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  DType type = DType::F32;
  DeviceBuffer<uint16_t> qb, kb, vb, ob;
};

// Elements from a head-strided operand's first element to its last one read.
int64_t extent(const AttentionLayout& l, int64_t ld, int64_t hs, int64_t width) {
  return (l.B * l.T - 1) * ld + (l.H - 1) * hs + width;
}

// A bf16 copy of x's n elements (in its layout) in b.
const uint16_t* cast_copy(DeviceBuffer<uint16_t>& b, const float* x, int64_t n, cudaStream_t s) {
  b = DeviceBuffer<uint16_t>(n);
  cast_f32_to_bf16(b.get(), x, n, s);
  return b.get();
}

// o_read: o is dO (backward, read by the GEMMs), not forward's output (written, never cast).
Operands operands(const float* q, const float* k, const float* v, const float* o, bool o_read,
                  const AttentionLayout& l, cudaStream_t s) {
  Operands ops;
  ops.q = q, ops.k = k, ops.v = v, ops.o = o;
  if (!l.bf16) return ops;
  ops.type = DType::BF16;
  ops.q = cast_copy(ops.qb, q, extent(l, l.q_ld, l.q_hs, l.dqk), s);
  ops.k = cast_copy(ops.kb, k, extent(l, l.k_ld, l.k_hs, l.dqk), s);
  ops.v = cast_copy(ops.vb, v, extent(l, l.v_ld, l.v_hs, l.dv), s);
  ops.o = o_read ? cast_copy(ops.ob, o, extent(l, l.o_ld, l.o_hs, l.dv), s) : nullptr;
  return ops;
}

// q, k and v kept as bf16 are read in place: the copies above, made by the caller.
Operands bf16_operands(const uint16_t* q, const uint16_t* k, const uint16_t* v, const float* dout,
                       const AttentionLayout& l, cudaStream_t s) {
  MOE_CHECK(l.bf16, "attention on bf16 q, k, v needs the layout's bf16 GEMMs");
  Operands ops;
  ops.type = DType::BF16;
  ops.q = q, ops.k = k, ops.v = v;
  ops.o = dout ? cast_copy(ops.ob, dout, extent(l, l.o_ld, l.o_hs, l.dv), s) : nullptr;
  return ops;
}

const void* element(const void* base, int64_t i, DType t) {
  if (!base) return nullptr;
  return static_cast<const char*>(base) + i * (t == DType::BF16 ? 2 : 4);
}

// The operands of heads h0.. of sequence b (pointers to head h0, position 0).
struct SequenceHeads {
  const void *q, *k, *v, *o;
  DType type;
  SequenceHeads(const Operands& ops, const AttentionLayout& l, int64_t b, int64_t h0)
      : q(element(ops.q, l.q_at(b, h0), ops.type)), k(element(ops.k, l.k_at(b, h0), ops.type)),
        v(element(ops.v, l.v_at(b, h0), ops.type)), o(element(ops.o, l.o_at(b, h0), ops.type)), type(ops.type) {}
};

// A [hc, T, T] block of probabilities (or dS) as the next GEMMs read it: in place at f32, else
// cast into bf16 storage.
struct Probabilities {
  DeviceBuffer<uint16_t> bf16;
  const void* of(const float* P, int64_t n, DType t, cudaStream_t s) {
    if (t == DType::F32) return P;
    if (bf16.size() < n) bf16 = DeviceBuffer<uint16_t>(n);
    cast_f32_to_bf16(bf16.get(), P, n, s);
    return bf16.get();
  }
};

// S[hc, T, T] = scale q k^T for hc heads (the upper triangle too; the softmax masks it).
void scores(float* S, const SequenceHeads& h, const AttentionLayout& l, int64_t hc, cudaStream_t s) {
  const int64_t T = l.T;
  gemm_strided_batched(false, true, T, T, l.dqk, l.scale, h.q, l.q_ld, l.q_hs, h.k, l.k_ld, l.k_hs, 0.f, S, T, T * T,
                       hc, h.type, DType::F32, s);
}

}  // namespace

int64_t attention_heads_per_chunk(int64_t H, int64_t T) {
  const int64_t per_head = T * T * int64_t(sizeof(float));
  const int64_t fit = int64_t(kAttentionScratchBytes) / (per_head > 0 ? per_head : 1);
  return fit < 1 ? 1 : (fit < H ? fit : H);
}

namespace {

void forward_on(float* o, float* lse, const Operands& ops, const AttentionLayout& l, cudaStream_t s) {
  const int64_t T = l.T, H = l.H;
  const int64_t chunk = attention_heads_per_chunk(H, T);
  DeviceBuffer<float> S_buf(chunk * T * T);
  float* S = S_buf.get();
  Probabilities Pb;
  for (int64_t b = 0; b < l.B; ++b)
    for (int64_t h0 = 0; h0 < H; h0 += chunk) {
      const int64_t hc = chunk < H - h0 ? chunk : H - h0;
      const SequenceHeads h(ops, l, b, h0);
      scores(S, h, l, hc, s);
      float* lse_chunk = lse + (b * H + h0) * T;  // lse[B, H, T]: row n of S is lse_chunk[n]
      const int32_t* ds = l.doc_start ? l.doc_start + b * T : nullptr;
      launch_rows(hc * T, row_threads(T), 0, [=] __device__(BlockRow & r, int64_t n) {
        float* row = S + n * T;
        const int64_t t = n % T;
        const float m = kern::softmax_span_forward(r, row, row, ds ? ds[t] : 0, t + 1, T, /*fast=*/true);
        if (r.leader()) lse_chunk[n] = m;
      }, s);
      // o[hc heads] = P v
      gemm_strided_batched(false, false, T, l.dv, T, 1.f, Pb.of(S, hc * T * T, h.type, s), T, T * T, h.v, l.v_ld,
                           l.v_hs, 0.f, o + l.o_at(b, h0), l.o_ld, l.o_hs, hc, h.type, DType::F32, s);
    }
}

// ops.o is dout (the layout of o).
void backward_on(float* dq, float* dk, float* dv, const Operands& ops, const float* lse, const AttentionLayout& l,
                 cudaStream_t s) {
  const int64_t T = l.T, H = l.H;
  const int64_t chunk = attention_heads_per_chunk(H, T);
  DeviceBuffer<float> P_buf(chunk * T * T), dP_buf(chunk * T * T);
  float *P = P_buf.get(), *dP = dP_buf.get();
  Probabilities Pb, dSb;
  for (int64_t b = 0; b < l.B; ++b)
    for (int64_t h0 = 0; h0 < H; h0 += chunk) {
      const int64_t hc = chunk < H - h0 ? chunk : H - h0;
      const SequenceHeads h(ops, l, b, h0);
      float* dq_b = dq + l.q_at(b, h0);
      float* dk_b = dk + l.k_at(b, h0);
      float* dv_b = dv + l.v_at(b, h0);
      // P again, from the saved log-sum-exp.
      scores(P, h, l, hc, s);
      const float* lse_chunk = lse + (b * H + h0) * T;
      const int32_t* ds = l.doc_start ? l.doc_start + b * T : nullptr;
      launch_rows(hc * T, row_threads(T), 0, [=] __device__(BlockRow & r, int64_t n) {
        float* row = P + n * T;
        const int64_t t = n % T;
        kern::softmax_span_recompute(r, row, row, lse_chunk[n], ds ? ds[t] : 0, t + 1, T, /*fast=*/true);
      }, s);
      // dv = P^T dout ; dP = dout v^T
      gemm_strided_batched(true, false, T, l.dv, T, 1.f, Pb.of(P, hc * T * T, h.type, s), T, T * T, h.o, l.o_ld,
                           l.o_hs, 0.f, dv_b, l.v_ld, l.v_hs, hc, h.type, DType::F32, s);
      gemm_strided_batched(false, true, T, T, l.dv, 1.f, h.o, l.o_ld, l.o_hs, h.v, l.v_ld, l.v_hs, 0.f, dP, T, T * T,
                           hc, h.type, DType::F32, s);
      // dS = P * (dP - rowsum(P * dP)), over dP (from the f32 P, as on the CPU)
      launch_rows(hc * T, row_threads(T), 0, [=] __device__(BlockRow & r, int64_t n) {
        const int64_t t = n % T;
        kern::softmax_span_backward(r, dP + n * T, P + n * T, dP + n * T, ds ? ds[t] : 0, t + 1, T);
      }, s);
      // dq = scale dS k ; dk = scale dS^T q
      const void* dS = dSb.of(dP, hc * T * T, h.type, s);
      gemm_strided_batched(false, false, T, l.dqk, T, l.scale, dS, T, T * T, h.k, l.k_ld, l.k_hs, 0.f, dq_b, l.q_ld,
                           l.q_hs, hc, h.type, DType::F32, s);
      gemm_strided_batched(true, false, T, l.dqk, T, l.scale, dS, T, T * T, h.q, l.q_ld, l.q_hs, 0.f, dk_b, l.k_ld,
                           l.k_hs, hc, h.type, DType::F32, s);
    }
}

bool empty(const AttentionLayout& l) { return l.B == 0 || l.T == 0 || l.H == 0; }

// ---- cuDNN's fused attention at bf16, checked once per shape and pass against the GEMM path ----
//
// The fused path rounds o, dq, dk and dv to bf16 (flash attention's outputs; the model keeps o in
// bf16 anyway) and accumulates in its own order, so it agrees with the GEMM path to bf16 rounding
// (~4e-3 relative), not bit for bit. A graph that computed something else (a wrong mask, scale or
// transpose) would be off by far more: the first call of each shape runs both paths and keeps the
// fused one only if every output is within kFusedTolerance (normalised max error), else it notes the
// disagreement and uses the GEMM path for that shape from then on.
constexpr double kFusedTolerance = 3e-2;

enum class Trust { Unchecked, Agrees, Disagrees };

Trust& trust(bool backward, const AttentionLayout& l) {
  static std::mutex mutex;
  static auto* verdicts = new std::map<std::pair<bool, std::string>, Trust>;
  std::lock_guard<std::mutex> lock(mutex);
  return (*verdicts)[{backward, cudnn_attention_shape(l)}];
}

// max |a - b| / max |b| over n device floats (synchronises).
double deviation(const float* a, const float* b, int64_t n, cudaStream_t s) {
  std::vector<float> ha(static_cast<size_t>(n)), hb(static_cast<size_t>(n));
  MOE_CUDA_CHECK(cudaStreamSynchronize(s));
  MOE_CUDA_CHECK(cudaMemcpy(ha.data(), a, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost));
  MOE_CUDA_CHECK(cudaMemcpy(hb.data(), b, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost));
  double diff = 0, scale = 0;
  for (size_t i = 0; i < ha.size(); ++i) {
    const double d = std::fabs(double(ha[i]) - double(hb[i]));
    diff = std::isnan(d) || d > diff ? d : diff;
    scale = std::fmax(scale, std::fabs(double(hb[i])));
  }
  return diff / (scale > 0 ? scale : 1);
}

// Records the first comparison of a shape; true when the fused results may stand.
bool judge(Trust& t, bool backward, const AttentionLayout& l, double worst) {
  const bool agrees = worst <= kFusedTolerance;  // false for NaN too
  t = agrees ? Trust::Agrees : Trust::Disagrees;
  std::fprintf(stderr, "moe: cuDNN fused attention %s for %s %s the GEMM path (max deviation %.2e)%s\n",
               backward ? "backward" : "forward", cudnn_attention_shape(l).c_str(),
               agrees ? "agrees with" : "DISAGREES with", worst, agrees ? "" : "; using the GEMM path");
  return agrees;
}

bool fused_forward(float* o, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                   const AttentionLayout& l, cudaStream_t s) {
  if (!cudnn_attention_enabled() || !sdpa::supported(l)) return false;
  Trust& t = trust(false, l);
  if (t == Trust::Disagrees) return false;
  const int64_t n = l.B * l.T * l.H * l.dv, n_lse = l.B * l.H * l.T;
  DeviceBuffer<uint16_t> ob(n);
  if (!cudnn_attention_forward(ob.get(), lse, q, k, v, l, s)) return false;
  cast_bf16_to_f32(o, ob.get(), n, s);  // dense o (sdpa::supported): one cast of the whole buffer
  if (t != Trust::Unchecked) return true;
  DeviceBuffer<float> o_ref(n), lse_ref(n_lse);
  forward_on(o_ref.get(), lse_ref.get(), bf16_operands(q, k, v, nullptr, l, s), l, s);
  const double worst = std::fmax(deviation(o, o_ref.get(), n, s), deviation(lse, lse_ref.get(), n_lse, s));
  if (judge(t, false, l, worst)) return true;
  MOE_CUDA_CHECK(cudaMemcpyAsync(o, o_ref.get(), size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice, s));
  MOE_CUDA_CHECK(cudaMemcpyAsync(lse, lse_ref.get(), size_t(n_lse) * sizeof(float), cudaMemcpyDeviceToDevice, s));
  return true;
}

bool fused_backward(float* dq, float* dk, float* dv, const float* dout, const uint16_t* o, const uint16_t* q,
                    const uint16_t* k, const uint16_t* v, const float* lse, const AttentionLayout& l, cudaStream_t s) {
  if (!o || !cudnn_attention_enabled() || !sdpa::supported(l)) return false;
  Trust& t = trust(true, l);
  if (t == Trust::Disagrees) return false;
  const int64_t nq = l.B * l.T * l.H * l.dqk, nv = l.B * l.T * l.H * l.dv;
  DeviceBuffer<uint16_t> dob, dqb(nq), dkb(nq), dvb(nv);
  cast_copy(dob, dout, nv, s);
  if (!cudnn_attention_backward(dqb.get(), dkb.get(), dvb.get(), dob.get(), o, q, k, v, lse, l, s)) return false;
  cast_bf16_to_f32(dq, dqb.get(), nq, s);  // dense, as o
  cast_bf16_to_f32(dk, dkb.get(), nq, s);
  cast_bf16_to_f32(dv, dvb.get(), nv, s);
  if (t != Trust::Unchecked) return true;
  DeviceBuffer<float> dq_ref(nq), dk_ref(nq), dv_ref(nv);
  backward_on(dq_ref.get(), dk_ref.get(), dv_ref.get(), bf16_operands(q, k, v, dout, l, s), lse, l, s);
  const double worst = std::fmax(std::fmax(deviation(dq, dq_ref.get(), nq, s), deviation(dk, dk_ref.get(), nq, s)),
                                 deviation(dv, dv_ref.get(), nv, s));
  if (judge(t, true, l, worst)) return true;
  const std::tuple<float*, const float*, int64_t> copies[] = {
      {dq, dq_ref.get(), nq}, {dk, dk_ref.get(), nq}, {dv, dv_ref.get(), nv}};
  for (const auto& [to, from, n] : copies)
    MOE_CUDA_CHECK(cudaMemcpyAsync(to, from, size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice, s));
  return true;
}

}  // namespace

void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const AttentionLayout& l,
                       cudaStream_t s) {
  if (!empty(l)) forward_on(o, lse, operands(q, k, v, o, /*o_read=*/false, l, s), l, s);
}

void attention_forward_bf16(float* o, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                            const AttentionLayout& l, cudaStream_t s) {
  if (!empty(l) && !fused_forward(o, lse, q, k, v, l, s))
    forward_on(o, lse, bf16_operands(q, k, v, nullptr, l, s), l, s);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* lse, const AttentionLayout& l, cudaStream_t s) {
  if (!empty(l)) backward_on(dq, dk, dv, operands(q, k, v, dout, /*o_read=*/true, l, s), lse, l, s);
}

void attention_backward_bf16(float* dq, float* dk, float* dv, const float* dout, const uint16_t* o, const uint16_t* q,
                             const uint16_t* k, const uint16_t* v, const float* lse, const AttentionLayout& l,
                             cudaStream_t s) {
  if (!empty(l) && !fused_backward(dq, dk, dv, dout, o, q, k, v, lse, l, s))
    backward_on(dq, dk, dv, bf16_operands(q, k, v, dout, l, s), lse, l, s);
}

void latent_attention(float* o, const float* q, const float* cache, const int64_t* row_offset, const int64_t* length,
                      int64_t n, int64_t H, int64_t C, int64_t L, int64_t max_len, float scale, cudaStream_t stream) {
  // The probabilities of a row live in shared memory: a cache of 12k positions fits in 48 KiB.
  const size_t smem = size_t(max_len) * sizeof(float);
  MOE_CHECK(smem <= 48 * 1024, "latent_attention: ", max_len, " positions exceed the shared-memory row (12288)");
  launch_rows(n * H, 128, smem, [=] __device__(BlockRow & r, int64_t row) {
    const int64_t i = row / H;
    kern::latent_attention_row(r, o + row * L, r.shared(), q + row * C, cache + row_offset[i], length[i], C, L, scale);
  }, stream);
}

}  // namespace moe::cuda
