// DeepSeekMoE layer (Megatron's route -> dispatch -> compute -> combine):
//   y = shared_experts(x) + sum_k w[n,k] * expert_{idx[n,k]}(x[n])
// Dispatch: token copies are permuted into expert order so each expert runs one GEMM over its
// contiguous rows (dropless). With expert parallelism (an ExpertExchange, model/placement.h) the
// permuted rows go by all-to-all to the ranks owning their experts and come back the same way;
// routing, weighting and the shared experts stay local. Only dispatch and combine communicate.
// Letters: N tokens, D hidden, E routed experts, K experts per token, I expert intermediate,
// P = N*K routed token copies.
#pragma once
#include <string>
#include <vector>

#include "model/layers.h"
#include "model/placement.h"
#include "model/router.h"

namespace moe {

struct MoEActs {
  RouterActs router;
  MLPActs shared;
  // Dispatch plan (i32 on the compute device): copy p (in expert order) is token slot_of[p] / K,
  // choice slot_of[p] % K; pos_of[n*K + k] is the inverse. offsets[e]..offsets[e+1] are expert
  // e's copies (offsets_dev on the device, offsets its host copy).
  Tensor slot_of, pos_of, offsets_dev;
  std::vector<int64_t> offsets;
  Tensor xs_PD;   // permuted inputs
  MLPActs experts;  // over the rows this rank's experts ran, in local expert order
  Tensor ys_PD;   // expert outputs before weighting
  // Expert parallelism: the exchange's counts, where each (source rank, local expert) block sits
  // in the received order ([rank][expert]) and in local order ([expert][rank]), and the R rows
  // received, in local order.
  ExchangePlan plan;
  std::vector<int64_t> recv_block, local_block, local_offsets;
  Tensor xl_RD;
};

struct MoELayer {
  Router gate;
  std::vector<SwiGLUMLP> experts;
  SwiGLUMLP shared_experts;
  bool has_shared = false;
  int64_t D = 0, E = 0, K = 0, I = 0;
  // Experts this process computes: [local_begin, local_begin + local_count).
  int64_t local_begin = 0, local_count = 0;
  std::vector<int> expert_units;  // one unit per expert part
  const ExpertExchange* exchange = nullptr;  // null: every expert is local
  // At fp8: the routed experts' input is x's E4M3 rows, sent through the exchange as packed rows
  // (fp8_packed_width floats each), and their backward reads those rows de-quantised; the same on
  // any ep, so the numbers do not depend on it. Off: f32 rows, the backward reads x.
  bool fp8_dispatch = false;

  // Registers the router and shared experts in the current unit, then the routed experts in
  // `placement.expert_parts` units of their own.
  void init(ParamStore& ps, const std::string& prefix, const ModelConfig& c, const ModelPlacement& placement);
  // y[N,D] = moe(x[N,D]); expert loads are added to load_E when not null. xq: x's E4M3 rows
  // (Linear::forward), read by the shared experts and, permuted with x, by the local routed experts.
  void forward(const ParamStore& ps, float* y, const float* x, int64_t B, int64_t T, MoEActs& a, float* load_E,
               const Fp8Rows* xq = nullptr) const;
  // dx[N,D] (assigned) ; loss_scale scales the router's auxiliary-loss gradients.
  void backward(const ParamStore& ps, float* dx, const float* dy, const float* x, int64_t B, int64_t T, MoEActs& a,
                float loss_scale) const;
  // GEMM precision of the experts (the router stays f32).
  void set_precision(Precision p) {
    for (SwiGLUMLP& e : experts) e.set_precision(p);
    shared_experts.set_precision(p);
  }

 private:
  void run_experts(const ParamStore& ps, const std::vector<int64_t>& offsets, const float* x, float* y,
                   MoEActs& a, const Fp8Rows* xq) const;
  void run_experts_backward(const ParamStore& ps, const std::vector<int64_t>& offsets, const float* dy, float* dx,
                            const float* x, MoEActs& a) const;
  std::vector<float*> expert_weights(const ParamStore& ps, Linear SwiGLUMLP::*proj, bool grad) const;
  void projection_backward(const std::vector<int64_t>& offsets, const MoEActs& a, float* dx, float* const* dW,
                           const float* dy, const float* x, const float* const* W, int64_t in, int64_t out,
                           bool accumulate_dx, Precision p) const;
  int64_t plan_blocks(MoEActs& a) const;
  void move_blocks(const MoEActs& a, float* dst, const float* src, bool to_local, int64_t width) const;
};

}  // namespace moe
