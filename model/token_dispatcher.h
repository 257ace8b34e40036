// The MoE layer's token dispatcher (Megatron-Core's shape: router -> dispatcher -> experts ->
// combine). It takes x[N,D] and the router's choices idx[N,K] to the rows this process's experts
// compute, grouped by local expert, and brings the experts' outputs back:
//   dispatch:  permute the P = N*K token copies into expert order (a counting sort, stable in
//              token order); with expert parallelism send each expert's rows to its owner
//              (ExpertExchange, model/placement.h) and reorder what arrives from [source][expert]
//              to [expert][source], so each local expert's rows are contiguous and in source-rank
//              order whatever the arrival order.
//   combine:   the reverse route, then y[n] (+)= sum_k w[n,k] * out(copy n,k), in fixed k order.
// At fp8, x's E4M3 rows travel with x (1x128 tiles lie inside a row), packed into rows of floats
// when they cross the exchange (fp8_dispatch). Only dispatch and combine communicate.
// The experts see only ExpertRows and ExpertGroups: rows, group offsets, and the per-source
// sub-groups their weight gradient is summed over; nothing of the exchange.
// Letters: N tokens, D hidden, E routed experts, K experts per token, P = N*K routed copies,
// G local experts, S source ranks, R rows this process's experts compute.
#pragma once
#include <vector>

#include "framework/scratch.h"
#include "model/layers.h"
#include "model/placement.h"

namespace moe {

// How the R rows of the local experts are grouped. Expert j (of G) computes rows
// offsets[j]..offsets[j+1]; they came from `sources` processes, source s's share being rows
// source_offsets[j*S + s]..source_offsets[j*S + s + 1] (S = sources; with one source
// source_offsets == offsets).
struct ExpertGroups {
  int sources = 1;
  std::vector<int64_t> offsets;         // [G+1]
  std::vector<int64_t> source_offsets;  // [G*S+1]
  int64_t groups() const { return int64_t(offsets.size()) - 1; }
  int64_t rows() const { return offsets.back(); }
};

// What dispatch hands the experts; scratch (framework/scratch.h) of the caller's ScratchScope,
// valid until combine.
struct ExpertRows {
  const float* x = nullptr;      // [R, D] the experts' input rows, grouped by ExpertGroups; or, at bf16,
  const uint16_t* xb = nullptr;  // their bf16 rounding instead (x null): what bf16 experts read
  ScratchFp8Rows xq;         // their E4M3 rows at fp8 when they came with x (else none: quantise x)
  float* y = nullptr;        // [R, D] the experts write their outputs here
  Tensor outputs, received;  // the dispatcher's buffers behind y and combine's way back
};

// Backward: the experts' output gradients on the same rows and where their input gradients go;
// scratch of the caller's ScratchScope, valid until dispatch_backward.
struct ExpertGradRows {
  const float* x = nullptr;      // [R, D] the forward's input rows (saved in DispatchActs), or at
  const uint16_t* xb = nullptr;  // bf16 their rounding instead (x null)
  const float* dy = nullptr;  // [R, D]
  float* dx = nullptr;        // [R, D] assigned by the experts
  Tensor dy_permuted, dx_permuted, received, dy_local, dx_local;  // the dispatcher's buffers
};

// Floats per row of E4M3 rows packed for the exchange (parallel.fp8_dispatch), which moves rows of
// floats: each row's ld codes as ld / 4 32-bit words (ld is a multiple of 128), then its scales.
// Copies move the bit patterns unchanged.
int64_t fp8_packed_width(int64_t cols);

// Saved from forward for backward.
struct DispatchActs {
  // Dispatch plan (i32 on the compute device): copy p (in expert order) is token slot_of[p] / K,
  // choice slot_of[p] % K; pos_of[n*K + k] is the inverse. offsets[e]..offsets[e+1] are expert
  // e's copies (offsets_dev on the device, offsets its host copy).
  Tensor slot_of, pos_of, offsets_dev;
  std::vector<int64_t> offsets;
  Tensor xs_PD;  // permuted inputs (bf16 when they moved as bf16)
  Tensor ys_PD;  // the experts' outputs in expert order, before weighting (bf16 as xs_PD)
  ExpertGroups groups;
  // Expert parallelism: the exchange's counts, where each (source rank s, local expert j) block
  // sits in received order ([s][j]) and in local order ([j][s]), and the R rows received, in
  // local order.
  ExchangePlan plan;
  std::vector<int64_t> recv_block, local_block;
  Tensor xl_RD;  // (bf16 when the rows moved as bf16)
  int64_t bytes() const { return Tensor::total_bytes(slot_of, pos_of, offsets_dev, xs_PD, ys_PD, xl_RD); }
};

struct TokenDispatcher {
  int64_t D = 0, E = 0, K = 0;
  int64_t local_experts = 0;  // G: the experts this process computes
  const ExpertExchange* exchange = nullptr;  // null: every expert is local
  // At fp8: the experts' input is x's E4M3 rows, sent through the exchange as packed rows, and
  // their backward reads those rows de-quantised; the same on any ep, so the numbers do not depend
  // on it. Off: f32 rows cross the exchange and the backward reads x.
  // At bf16 (x.bf16 given, D even) the rows are dispatched as x's bf16 rounding, the only form bf16
  // experts read, in forward and for their weight gradients: the same bits as f32 rows rounded
  // by the experts, half the bytes kept and exchanged. Their outputs come back rounded to bf16
  // too (as DeepSeek-V3 combines), kept so for combine's backward.
  bool fp8_dispatch = false;

  // x[N,D] (with its E4M3 rows at fp8) and the router's choices idx_NK (i32 on the device) -> the
  // local experts' rows; their group layout goes to a.groups. Expert loads are added to load_E
  // when not null.
  ExpertRows dispatch(Activation x, const Tensor& idx_NK, int64_t N, DispatchActs& a, float* load_E) const;
  // y[N,D] (+)= sum_k w[n,k] * rows.y of copy (n,k); accumulate when y already holds something.
  void combine(float* y, const ExpertRows& rows, const float* w_NK, int64_t N, bool accumulate,
               DispatchActs& a) const;
  // Combine's backward: dw[N,K] (assigned) and the experts' output gradients.
  ExpertGradRows combine_backward(float* dw_NK, const float* dy, const float* w_NK, int64_t N,
                                  const DispatchActs& a) const;
  // Dispatch's backward: dx[N,D] += the gradients of x's copies (g.dx), in fixed k order.
  void dispatch_backward(float* dx, const ExpertGradRows& g, int64_t N, const DispatchActs& a) const;

 private:
  int64_t plan_blocks(DispatchActs& a) const;
  void move_blocks(const DispatchActs& a, float* dst, const float* src, bool to_local, int64_t width) const;
};

}  // namespace moe
