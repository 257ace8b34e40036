// DeepSeek-V3 router (Hugging Face DeepseekV3TopkRouter), computed in f32:
//   logits = x W^T                                   [N, E]
//   s      = sigmoid(logits)  (or softmax over E)
//   choice = s + e_score_correction_bias (the bias only steers the choice)
//   group-limited: groups ranked by the sum of their top-2 choice scores; experts outside the best
//   groups_per_token groups get choice score 0 (not -inf, as in Hugging Face)
//   idx    = top-k(choice)                           [N, K]
//   w      = s[idx] / (sum s[idx] + 1e-20) * routed_scaling
// Optional losses: the sequence-wise balance loss of DeepSeek-V3 (aux_loss_coef) and the router
// z-loss (z_loss_coef). The bias is updated by the trainer after each optimizer step from the loads
// counted by the MoE layer (aux-loss-free balancing): b_e += rate * sign(mean_load - load_e).
// Letters: N tokens, E routed experts, K experts per token, B sequences of T tokens.
#pragma once
#include <string>
#include <vector>

#include "framework/config.h"
#include "model/params.h"

namespace moe {

struct RouterActs {
  Tensor logits_NE, scores_NE;
  Tensor idx_NK;  // i32
  Tensor weights_NK;
  // With a loss coefficient set (Router::has_losses): losses_2 = {aux, z} of this forward and the
  // balance frequencies f_BE backward needs, both computed and kept on the compute device (the
  // model sums the layers' losses there and downloads the total once per forward).
  Tensor losses_2, f_BE;
  int64_t bytes() const { return Tensor::total_bytes(logits_NE, scores_NE, idx_NK, weights_NK, losses_2, f_BE); }
};

struct Router {
  int w = -1, bias = -1;
  int64_t E = 0, K = 0, D = 0, groups = 1, groups_per_token = 1;
  bool softmax = false;
  float routed_scaling = 1.f, aux_coef = 0.f, z_coef = 0.f;

  void init(ParamStore& ps, const std::string& prefix, const ModelConfig& c);
  bool has_losses() const { return aux_coef > 0 || z_coef > 0; }
  // Fills a.idx_NK / a.weights_NK, and a.losses_2 / a.f_BE when has_losses().
  void forward(const ParamStore& ps, const float* x, int64_t B, int64_t T, RouterActs& a) const;
  // dweights_NK: gradient of the loss w.r.t. the combine weights. dx[N,D] += ...; W's grad accumulates.
  // loss_scale multiplies the aux and z-loss gradients (as it does the main loss).
  void backward(const ParamStore& ps, float* dx, const float* dweights_NK, const float* x, int64_t B, int64_t T,
                const RouterActs& a, float loss_scale) const;
  // Aux-loss-free balancing: b_e += rate * sign(mean(load) - load_e); load_E on the host.
  void update_bias(const ParamStore& ps, const float* load_E, float rate) const;
};

}  // namespace moe
