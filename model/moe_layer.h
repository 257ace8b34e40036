// DeepSeekMoE layer (Megatron's route -> dispatch -> compute -> combine):
//   y = shared_experts(x) + sum_k w[n,k] * expert_{idx[n,k]}(x[n])
// Dispatch is local here: token copies are permuted into expert order so each expert runs one GEMM
// over its contiguous rows (dropless). The distributed wrapper replaces dispatch/combine with an
// all-to-all without the experts knowing.
// Letters: N tokens, D hidden, E routed experts, K experts per token, I expert intermediate,
// P = N*K routed token copies.
#pragma once
#include <string>
#include <vector>

#include "model/layers.h"
#include "model/router.h"

namespace moe {

struct MoEActs {
  RouterActs router;
  MLPActs shared;
  // Dispatch plan: copy p (in expert order) is token slot_of[p] / K, choice slot_of[p] % K;
  // pos_of[n*K + k] is the inverse. offsets[e]..offsets[e+1] are expert e's copies.
  std::vector<int32_t> slot_of, pos_of;
  std::vector<int64_t> offsets, fill;  // fill: next free copy of each expert while planning
  Tensor xs_PD;   // permuted inputs
  MLPActs experts;  // over all P copies, rows in expert order
  Tensor ys_PD;   // expert outputs before weighting
};

struct MoELayer {
  Router gate;
  std::vector<SwiGLUMLP> experts;
  SwiGLUMLP shared_experts;
  bool has_shared = false;
  int64_t D = 0, E = 0, K = 0, I = 0;

  void init(ParamStore& ps, const std::string& prefix, const ModelConfig& c);
  // y[N,D] = moe(x[N,D]); expert loads are added to load_E when not null.
  void forward(const ParamStore& ps, float* y, const float* x, int64_t B, int64_t T, MoEActs& a, float* load_E) const;
  // dx[N,D] (assigned) ; loss_scale scales the router's auxiliary-loss gradients.
  void backward(const ParamStore& ps, float* dx, const float* dy, const float* x, int64_t B, int64_t T, MoEActs& a,
                float loss_scale) const;
  // GEMM precision of the experts (the router stays f32).
  void set_precision(Precision p) {
    for (SwiGLUMLP& e : experts) e.set_precision(p);
    shared_experts.set_precision(p);
  }
};

}  // namespace moe
