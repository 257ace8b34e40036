// Multi-token prediction (DeepSeek-V3 report, section 2.2): the MTP modules' parameters, forward
// and backward. The math is in model/model.h (MTPModule); this file is how it runs.
//
// The concatenation order of eh_proj's input, [enorm(embedding), hnorm(hidden)], is that of the
// released weights' users: vLLM's DeepSeekMultiTokenPredictorLayer
// (vllm/model_executor/models/deepseek_mtp.py) computes
//   eh_proj(torch.cat([enorm(inputs_embeds), hnorm(previous_hidden_states)], dim=-1)).
// Module k's sequences are the windows shifted by k: row b*(T-k)+i is position i of sequence b,
// whose input token is t_{i+k} = ids[b*T+i+k] and whose target is t_{i+k+1} = targets[b*T+i+k].
// Positions keep their index i (RoPE), as h^{k-1}_i sits at position i.
#include <algorithm>
#include <vector>

#include "framework/backend.h"
#include "framework/error.h"
#include "framework/scratch.h"
#include "model/model.h"

namespace moe {

void MTPModule::init(ParamStore& ps, int depth_k, const ModelConfig& c, const ModelPlacement& placement) {
  depth = depth_k;
  const int layer = c.layers + depth_k - 1;
  const std::string p = "model.layers." + std::to_string(layer);
  const int unit = ps.begin_unit(p);
  const float eps = float(c.rms_norm_eps);
  // Before the block's own parameters: its MoE opens the expert units after them.
  enorm.init(ps, p + ".enorm.weight", c.hidden, eps);
  hnorm.init(ps, p + ".hnorm.weight", c.hidden, eps);
  eh_proj.init(ps, p + ".eh_proj.weight", 2 * int64_t(c.hidden), c.hidden, float(c.init_std));
  shared_head_norm.init(ps, p + ".shared_head.norm.weight", c.hidden, eps);
  block.add_params(ps, unit, layer, c, placement);
}

void DeepSeekV3::add_mtp_modules() {
  mtp_.resize(size_t(cfg_.mtp_depth));
  for (int k = 1; k <= cfg_.mtp_depth; ++k) {
    mtp_[k - 1].init(ps_, k, cfg_, placement_);
    if (mtp_[k - 1].block.is_moe) mtp_moe_.push_back(k - 1);
  }
  mtp_weight_ = cfg_.mtp_loss_weight;
}

double DeepSeekV3::mtp_forward(const int32_t* ids, const int32_t* targets, bool count_load) {
  const int64_t B = B_, T = T_, D = cfg_.hidden;
  if (T <= cfg_.mtp_depth)
    throw error("model.mtp_depth is ", cfg_.mtp_depth, " but the sequences have ", T,
                " tokens (expected data.seq_len > model.mtp_depth)");
  std::vector<int32_t> shifted;
  double loss_sum = 0;
  int moe_i = 0;
  for (MTPModule& m : mtp_) {
    const int64_t k = m.depth, Tk = T - k, Tprev = Tk + 1, N = B * Tk;
    MTPActs& a = m.acts;
    shifted.resize(size_t(N));
    for (int64_t b = 0; b < B; ++b)
      std::copy(ids + b * T + k, ids + b * T + T, shifted.begin() + b * Tk);
    upload_tokens(a.ids_N, shifted.data(), N);
    for (int64_t b = 0; b < B; ++b)
      std::copy(targets + b * T + k, targets + b * T + T, shifted.begin() + b * Tk);
    upload_tokens(a.targets_N, shifted.data(), N);
    for (Tensor* t : {&a.hin_ND, &a.emb_ND, &a.e_ND, &a.hn_ND, &a.x_ND, &a.out_ND, &a.xf_ND}) t->ensure({N, D});
    for (Tensor* t : {&a.e_rstd_N, &a.hn_rstd_N, &a.xf_rstd_N, &a.lse_N, &a.losses_N}) t->ensure({N});
    a.cat_N2D.ensure({N, 2 * D});
    // h^{k-1}: the first T-k positions of each of the previous sequences (T-k+1 long).
    const float* hprev = k == 1 ? resid_[cfg_.layers].f32() : mtp_[size_t(k - 2)].acts.out_ND.f32();
    float* load = nullptr;
    if (m.block.is_moe) {
      load = count_load ? load_.f32() + int64_t(moe_blocks_.size() + moe_i) * cfg_.routed_experts : nullptr;
      ++moe_i;
    }
    units_.run(head_cu_ + int(k), Pass::Forward, [&] {
      compute().copy_rows(a.hin_ND.f32(), Tk * D, hprev, Tprev * D, B, Tk * D);
      compute().embedding_forward(a.emb_ND.f32(), a.ids_N.data<int32_t>(), ps_.param(embed_tokens).f32(), N, D);
      m.enorm.forward(ps_, a.e_ND.f32(), a.e_rstd_N.f32(), a.emb_ND.f32(), N);
      m.hnorm.forward(ps_, a.hn_ND.f32(), a.hn_rstd_N.f32(), a.hin_ND.f32(), N);
      compute().copy_rows(a.cat_N2D.f32(), 2 * D, a.e_ND.f32(), D, N, D);
      compute().copy_rows(a.cat_N2D.f32() + D, 2 * D, a.hn_ND.f32(), D, N, D);
      m.eh_proj.forward(ps_, a.x_ND.f32(), a.cat_N2D.f32(), N);
      m.block.forward(ps_, a.out_ND.f32(), a.x_ND.f32(), B, Tk, rope_, a.block, load);
      m.shared_head_norm.forward(ps_, a.xf_ND.f32(), a.xf_rstd_N.f32(), a.out_ND.f32(), N);
      head_rows_loss(a.xf_ND.f32(), a.targets_N.data<int32_t>(), a.lse_N.f32(), a.losses_N.f32(), N, nullptr);
    });
    if (m.block.is_moe) add_router_losses(m.block.moe.gate, a.block.moe.router);
    loss_sum += compute().sum(a.losses_N.f32(), N) / double(N);
  }
  mtp_ran_ = true;
  return loss_sum / double(mtp_.size());
}

// Module k's output feeds its own head and module k+1 (its first T-k-1 positions of each
// sequence): both gradients meet in dout before the block's backward.
void DeepSeekV3::mtp_backward(float* dresid, float loss_scale) {
  const int64_t B = B_, T = T_, D = cfg_.hidden;
  const float scale = loss_scale * float(mtp_weight_ / double(mtp_.size()));
  ScratchScope scope;
  Tensor carry;  // d loss / d h^k from module k+1, [B*(T-k), D] (the handle keeps its scratch alive)
  bool carried = false;
  for (size_t j = mtp_.size(); j-- > 0;) {
    MTPModule& m = mtp_[j];
    MTPActs& a = m.acts;
    const int64_t k = m.depth, Tk = T - k, Tprev = Tk + 1, N = B * Tk;
    Tensor dxf = scratch({N, D}), dout = scratch({N, D}), dx = scratch({N, D}), dcat = scratch({N, 2 * D});
    Tensor dhalf = scratch({N, D}), dsrc = scratch({N, D}), next = scratch({B * Tprev, D});
    units_.run(head_cu_ + int(k), Pass::Backward, [&] {
      head_rows_backward(dxf.f32(), a.xf_ND.f32(), a.targets_N.data<int32_t>(), a.lse_N.f32(), scale / float(N), N);
      m.shared_head_norm.backward(ps_, dout.f32(), dxf.f32(), a.out_ND.f32(), a.xf_rstd_N.f32(), N);
      if (carried) compute().add(dout.f32(), dout.f32(), carry.f32(), N * D);
      // Its activations are its own (kept with recompute too): no forward to re-run.
      m.block.backward(ps_, dx.f32(), dout.f32(), a.x_ND.f32(), B, Tk, rope_, a.block, loss_scale);
      m.eh_proj.backward(ps_, dcat.f32(), dx.f32(), a.cat_N2D.f32(), N);
      // dcat = [d enorm out | d hnorm out]
      compute().copy_rows(dhalf.f32(), D, dcat.f32(), 2 * D, N, D);
      m.enorm.backward(ps_, dsrc.f32(), dhalf.f32(), a.emb_ND.f32(), a.e_rstd_N.f32(), N);
      compute().embedding_backward(ps_.grad(embed_tokens).f32(), a.ids_N.data<int32_t>(), dsrc.f32(), N, D);
      compute().copy_rows(dhalf.f32(), D, dcat.f32() + D, 2 * D, N, D);
      m.hnorm.backward(ps_, dsrc.f32(), dhalf.f32(), a.hin_ND.f32(), a.hn_rstd_N.f32(), N);
    });
    // Back to h^{k-1}'s shape: its last position of each sequence fed no module-k row.
    compute().zero(next.raw(), size_t(next.nbytes()));
    compute().copy_rows(next.f32(), Tprev * D, dsrc.f32(), Tk * D, B, Tk * D);
    carry = next;
    carried = true;
  }
  compute().copy(dresid, carry.f32(), size_t(B * T * D) * sizeof(float));
}

}  // namespace moe

// ---- Self-speculative decoding: MTP module 1 with its own latent KV cache rows ----------------

namespace moe {

namespace {

// x[n, D] = eh_proj(cat[enorm(embed(ids)), hnorm(h)]) into scratch of the caller's scope.
void mtp_input(const ParamStore& ps, const MTPModule& m, int embed, float* x, const float* h, const int32_t* ids_d,
               int64_t n, int64_t D) {
  Tensor emb = scratch({n, D}), e = scratch({n, D}), hn = scratch({n, D}), rstd = scratch({n});
  Tensor cat = scratch({n, 2 * D});
  compute().embedding_forward(emb.f32(), ids_d, ps.param(embed).f32(), n, D);
  m.enorm.forward(ps, e.f32(), rstd.f32(), emb.f32(), n);
  m.hnorm.forward(ps, hn.f32(), rstd.f32(), h, n);
  compute().copy_rows(cat.f32(), 2 * D, e.f32(), D, n, D);
  compute().copy_rows(cat.f32() + D, 2 * D, hn.f32(), D, n, D);
  m.eh_proj.forward(ps, x, cat.f32(), n);
}

}  // namespace

void DeepSeekV3::mtp_prefill(KVCache& cache, int64_t slot, const int32_t* ids, int64_t T) {
  const int64_t D = cfg_.hidden, N = T - 1;
  cache.mtp_length[size_t(slot)] = std::max<int64_t>(N, 0);
  if (N <= 0) return;
  const MTPModule& m = mtp_[0];
  ScratchScope scope;
  Tensor x = scratch({N, D}), y = scratch({N, D}), tokens = scratch({N}, DType::I32);
  compute().upload(tokens.raw(), ids + 1, size_t(N) * sizeof(int32_t));
  units_.run(head_cu_ + 1, Pass::Forward, [&] {
    mtp_input(ps_, m, embed_tokens, x.f32(), resid_[cfg_.layers].f32(), tokens.data<int32_t>(), N, D);
    m.block.forward(ps_, y.f32(), x.f32(), 1, N, rope_, mtp_[0].acts.block, nullptr,
                    cache.mtp_rows.f32() + slot * cache.positions * cache.width);
  });
}

Tensor DeepSeekV3::mtp_draft(KVCache& cache, int64_t slot, int64_t first_row, const int32_t* ids, int64_t n) {
  MOE_CHECK(!mtp_.empty() && cache.mtp_rows.numel() > 0, "mtp_draft: the model has no MTP module");
  MOE_CHECK(first_row >= 0 && first_row + n <= hidden_.dim(0), "mtp_draft: rows ", first_row, "+", n, " of ",
            hidden_.dim(0));
  const int64_t D = cfg_.hidden, V = cfg_.vocab_size;
  const MTPModule& m = mtp_[0];
  ScratchScope scope;
  const std::vector<int64_t> slots(static_cast<size_t>(n), slot);
  LatentStep step;
  LatentStepBuffers buf;
  plan_latent_step(step, buf, cache, cache.mtp_length, slots.data(), n);
  Tensor x = scratch({n, D}), y = scratch({n, D}), xf = scratch({n, D}), rstd = scratch({n});
  Tensor logits = scratch({n, V}), tokens = scratch({n}, DType::I32);
  compute().upload(tokens.raw(), ids, size_t(n) * sizeof(int32_t));
  units_.run(head_cu_ + 1, Pass::Forward, [&] {
    mtp_input(ps_, m, embed_tokens, x.f32(), hidden_.f32() + first_row * D, tokens.data<int32_t>(), n, D);
    m.block.decode(ps_, y.f32(), x.f32(), step, cache.mtp_rows.f32(), cache.mtp_kv_b.f32(), decode_acts_);
    m.shared_head_norm.forward(ps_, xf.f32(), rstd.f32(), y.f32(), n);
    compute().linear_forward(logits.f32(), xf.f32(), ps_.param(lm_head).f32(), n, D, V, false, head_precision());
  });
  cache.mtp_length[size_t(slot)] += n;
  Tensor out = Tensor::empty({n, V});
  compute().download(out.raw(), logits.raw(), size_t(out.nbytes()));
  return out;
}

}  // namespace moe
