// DeepSeekMoE layer (Megatron's route -> dispatch -> compute -> combine):
//   y = shared_experts(x) + sum_k w[n,k] * expert_{idx[n,k]}(x[n])
// The TokenDispatcher (model/token_dispatcher.h) permutes the token copies into expert order so each
// expert runs one GEMM over its contiguous rows (dropless); with expert parallelism it sends them
// to the ranks owning their experts and brings the outputs back. Routing, weighting and the shared
// experts stay local; the experts see only their rows and group offsets.
// Letters: N tokens, D hidden, E routed experts, K experts per token, I expert intermediate,
// P = N*K routed token copies.
#pragma once
#include <string>
#include <vector>

#include "model/layers.h"
#include "model/placement.h"
#include "model/router.h"
#include "model/token_dispatcher.h"

namespace moe {

struct MoEActs {
  RouterActs router;
  MLPActs shared;
  DispatchActs dispatch;
  MLPActs experts;  // over the rows this rank's experts ran, in local expert order
  int64_t bytes() const { return router.bytes() + shared.bytes() + dispatch.bytes() + experts.bytes(); }
};

struct MoELayer {
  Router gate;
  TokenDispatcher dispatcher;
  std::vector<SwiGLUMLP> experts;
  SwiGLUMLP shared_experts;
  bool has_shared = false;
  int64_t D = 0, E = 0, K = 0, I = 0;
  // Experts this process computes: [local_begin, local_begin + local_count).
  int64_t local_begin = 0, local_count = 0;
  std::vector<int> expert_units;  // one unit per expert part
  Precision prec = Precision::FP32;  // the experts' GEMMs (set_precision)

  // Registers the router and shared experts in the current unit, then the routed experts in
  // `placement.expert_parts` units of their own.
  void init(ParamStore& ps, const std::string& prefix, const ModelConfig& c, const ModelPlacement& placement);
  // y[N,D] = moe(x[N,D]); expert loads are added to load_E when not null. x's E4M3 rows (when
  // given) are read by the shared experts and, dispatched with x, by the routed experts.
  void forward(const ParamStore& ps, float* y, Activation x, int64_t B, int64_t T, MoEActs& a, float* load_E) const;
  // dx[N,D] (assigned) ; loss_scale scales the router's auxiliary-loss gradients.
  // x as in forward (the shared experts read its bf16 rounding when given).
  void backward(const ParamStore& ps, float* dx, const float* dy, Activation x, int64_t B, int64_t T, MoEActs& a,
                float loss_scale) const;
  // GEMM precision of the experts (the router stays f32).
  void set_precision(Precision p) {
    prec = p;
    for (SwiGLUMLP& e : experts) e.set_precision(p);
    shared_experts.set_precision(p);
  }

 private:
  // The local experts over their rows, grouped by expert: each projection one grouped GEMM.
  void run_experts(const ParamStore& ps, const ExpertRows& rows, const ExpertGroups& groups, MLPActs& a) const;
  void run_experts_backward(const ParamStore& ps, const ExpertGradRows& g, const ExpertGroups& groups,
                            const MLPActs& a) const;
  std::vector<float*> expert_weights(const ParamStore& ps, Linear SwiGLUMLP::*proj, bool grad) const;
  // xb: x's bf16 rounding (bf16, kept by the forward), else null.
  void projection_backward(const ExpertGroups& groups, float* dx, float* const* dW, const float* dy, const float* x,
                           const uint16_t* xb, const float* const* W, int64_t in, int64_t out,
                           bool accumulate_dx) const;
};

}  // namespace moe
