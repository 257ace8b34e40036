#include "model/moe_layer.h"

#include "framework/backend.h"
#include "framework/profiler.h"
#include "framework/scratch.h"

namespace moe {

void MoELayer::init(ParamStore& ps, const std::string& prefix, const ModelConfig& c,
                    const ModelPlacement& placement) {
  D = c.hidden; E = c.routed_experts; K = c.experts_per_token; I = c.expert_inter;
  float std = float(c.init_std);
  gate.init(ps, prefix + ".gate", c);
  has_shared = c.shared_experts > 0;
  if (has_shared) shared_experts.init(ps, prefix + ".shared_experts", D, I * c.shared_experts, std);
  const int parts = placement.expert_parts;
  MOE_CHECK(parts >= 1 && E % parts == 0, "routed experts ", E, " not divisible into ", parts, " parts");
  const int64_t per = E / parts;
  experts.resize(E);
  for (int p = 0; p < parts; ++p) {
    expert_units.push_back(ps.begin_unit(prefix + ".experts[" + std::to_string(p * per) + ":" +
                                         std::to_string((p + 1) * per) + "]", UnitKind::Expert, p));
    for (int64_t e = p * per; e < (p + 1) * per; ++e)
      experts[e].init(ps, prefix + ".experts." + std::to_string(e), D, I, std);
  }
  local_begin = placement.local_part * per;
  local_count = per;
  dispatcher.D = D, dispatcher.E = E, dispatcher.K = K, dispatcher.local_experts = local_count;
}

// The local experts' weights (or gradients) of one projection, as the grouped GEMMs take them.
std::vector<float*> MoELayer::expert_weights(const ParamStore& ps, Linear SwiGLUMLP::*proj, bool grad) const {
  std::vector<float*> out(static_cast<size_t>(local_count));
  for (int64_t j = 0; j < local_count; ++j) {
    const int id = (experts[local_begin + j].*proj).w;
    out[j] = grad ? ps.grad(id).f32() : ps.param(id).f32();
  }
  return out;
}

// Runs this rank's experts over rows grouped by expert (groups.offsets[j]..[j+1] for expert
// local_begin + j): rows.y = expert(rows.x) per row, each projection one grouped GEMM over all
// experts. Activations for backward go to a.
void MoELayer::run_experts(const ParamStore& ps, const ExpertRows& rows, const ExpertGroups& groups,
                           MLPActs& a) const {
  MOE_PHASE("experts");
  const int64_t R = groups.rows(), G = local_count;
  const int64_t* offsets = groups.offsets.data();
  const bool bf16 = prec == Precision::BF16;
  ensure_kept(a.gate_NI, R, I, bf16);
  ensure_kept(a.up_NI, R, I, bf16);
  Backend& c = compute();
  ScratchScope scope;  // h lives for the forward only (backward computes it again: swiglu_of)
  Tensor h;
  auto Wg = expert_weights(ps, &SwiGLUMLP::gate_proj, false), Wu = expert_weights(ps, &SwiGLUMLP::up_proj, false),
       Wd = expert_weights(ps, &SwiGLUMLP::down_proj, false);
  if (bf16) {
    // The GEMMs read the rows' bf16 rounding, kept for the weight gradients: as dispatched, or
    // (odd D, f32 rows) rounded here once instead of in each of those four GEMMs. gate and up are
    // kept in bf16 as SwiGLUMLP keeps them.
    const uint16_t* xb = rows.xb;
    if (!xb) {
      a.x_bf16.ensure({R, D}, DType::BF16);
      c.cast_f32_to_bf16(a.x_bf16.data<uint16_t>(), rows.x, R * D);
      xb = a.x_bf16.data<uint16_t>();
    }
    Tensor g = scratch({R, I}), u = scratch({R, I});
    c.grouped_linear_forward_bf16(g.f32(), xb, Wg.data(), offsets, G, D, I);
    c.grouped_linear_forward_bf16(u.f32(), xb, Wu.data(), offsets, G, D, I);
    keep_rounded(a, g.f32(), u.f32(), R * I);
    return c.grouped_linear_forward_bf16(rows.y, swiglu_of(a, R * I, h).bf16, Wd.data(), offsets, G, I, D);
  }
  float *gate = a.gate_NI.f32(), *up = a.up_NI.f32();
  if (prec != Precision::FP8) {
    c.grouped_linear_forward(gate, rows.x, Wg.data(), offsets, G, D, I, prec);
    c.grouped_linear_forward(up, rows.x, Wu.data(), offsets, G, D, I, prec);
    return c.grouped_linear_forward(rows.y, swiglu_of(a, R * I, h).f32, Wd.data(), offsets, G, I, D, prec);
  }
  // fp8: the GEMMs read E4M3 rows: x's from the dispatcher (or, without them, quantised here: f32
  // rows that came through the expert exchange) and h's from SwiGLU.
  ScratchFp8Rows own;
  const Fp8Rows* xq = rows.xq.ptr();
  if (!xq) {
    own = ScratchFp8Rows(R, D);
    c.quantize_rows(own.get(), rows.x);
    xq = own.ptr();
  }
  c.grouped_linear_forward_fp8(gate, *xq, Wg.data(), offsets, G, I);
  c.grouped_linear_forward_fp8(up, *xq, Wu.data(), offsets, G, I);
  h = scratch({R, I});
  const ScratchFp8Rows hq(R, I);
  c.swiglu_forward_fp8(h.f32(), hq.get(), gate, up);
  c.grouped_linear_forward_fp8(rows.y, hq.get(), Wd.data(), offsets, G, D);
}

// g.dx (assigned) from g.dy over the same rows; the experts' parameter gradients accumulate
// (SwiGLUMLP::backward's order, grouped).
void MoELayer::run_experts_backward(const ParamStore& ps, const ExpertGradRows& g, const ExpertGroups& groups,
                                    const MLPActs& a) const {
  MOE_PHASE("experts");
  const int64_t R = groups.rows();
  auto Wg = expert_weights(ps, &SwiGLUMLP::gate_proj, false), Wu = expert_weights(ps, &SwiGLUMLP::up_proj, false),
       Wd = expert_weights(ps, &SwiGLUMLP::down_proj, false);
  auto dWg = expert_weights(ps, &SwiGLUMLP::gate_proj, true), dWu = expert_weights(ps, &SwiGLUMLP::up_proj, true),
       dWd = expert_weights(ps, &SwiGLUMLP::down_proj, true);
  ScratchScope scope;
  Tensor dh = scratch({R, I}), dg = scratch({R, I}), du = scratch({R, I}), h_again;
  const Activation h = swiglu_of(a, R * I, h_again);
  projection_backward(groups, dh.f32(), dWd.data(), g.dy, h.f32, h.bf16, Wd.data(), I, D, false);
  swiglu_backward_kept(dg.f32(), du.f32(), dh.f32(), a, R * I);
  const uint16_t* xb = prec != Precision::BF16 ? nullptr : g.xb ? g.xb : a.x_bf16.data<uint16_t>();
  projection_backward(groups, g.dx, dWg.data(), dg.f32(), g.x, xb, Wg.data(), D, I, false);
  projection_backward(groups, g.dx, dWu.data(), du.f32(), g.x, xb, Wu.data(), D, I, true);
}

// One projection's backward over the local experts' rows: dx (assigned, or added when
// accumulate_dx) in one grouped call. The weight gradients too when the rows came from one source;
// rows from several source ranks (groups.source_offsets) take them one source at a time, over
// that source's share of each expert's rows (the rows between are groups without weights, which
// the backends skip). So an expert's weight gradient adds per-source partials in source order, and
// at fp8 its 128-token tiles restart at each source's share as one process's restart at each
// micro-batch: the same computation on any ep, where one GEMM over all sources would share tiles
// across them.
void MoELayer::projection_backward(const ExpertGroups& groups, float* dx, float* const* dW, const float* dy,
                                   const float* x, const uint16_t* xb, const float* const* W, int64_t in,
                                   int64_t out, bool accumulate_dx) const {
  Backend& c = compute();
  const int64_t G = local_count;
  const int S = groups.sources;
  const int64_t* offsets = groups.offsets.data();
  // One grouped backward: from x's bf16 rounding when the forward kept it, else from x.
  auto grouped_backward = [&](float* dx_, float* const* dW_, const float* const* W_, const int64_t* off,
                              int64_t groups_, bool accumulate) {
    if (xb) return c.grouped_linear_backward_bf16(dx_, dW_, dy, xb, W_, off, groups_, in, out, accumulate);
    c.grouped_linear_backward(dx_, dW_, dy, x, W_, off, groups_, in, out, accumulate, prec);
  };
  if (S == 1) return grouped_backward(dx, dW, W, offsets, G, accumulate_dx);
  const std::vector<float*> no_dW(size_t(G), nullptr);
  grouped_backward(dx, no_dW.data(), W, offsets, G, accumulate_dx);
  std::vector<int64_t> off;
  std::vector<float*> dWs;
  std::vector<const float*> Ws;
  for (int s = 0; s < S; ++s) {
    off.clear(), dWs.clear(), Ws.clear();
    for (int64_t j = 0; j < G; ++j) {
      const int64_t begin = groups.source_offsets[size_t(j * S + s)], end = groups.source_offsets[size_t(j * S + s + 1)];
      if (off.empty()) {
        off.push_back(begin);
      } else if (off.back() < begin) {  // other sources' rows: skipped
        Ws.push_back(W[j]), dWs.push_back(nullptr), off.push_back(begin);
      }
      Ws.push_back(W[j]), dWs.push_back(dW[j]), off.push_back(end);
    }
    grouped_backward(nullptr, dWs.data(), Ws.data(), off.data(), int64_t(Ws.size()), false);
  }
}

// Route -> dispatch -> experts -> combine (y = shared(x) + sum_k w * expert outputs).
void MoELayer::forward(const ParamStore& ps, float* y, Activation x, int64_t B, int64_t T, MoEActs& a,
                       float* load_E) const {
  MOE_PHASE("moe_routing");  // router, dispatch and combine; the experts' own work is "experts"
  const int64_t N = B * T;
  ScratchScope scope;  // the dispatched rows live until combine
  gate.forward(ps, x.f32, B, T, a.router);
  // x's bf16 rounding is dispatched (instead of x) only to bf16 experts.
  const Activation xd(x.f32, x.e4m3, prec == Precision::BF16 ? x.bf16 : nullptr);
  const ExpertRows rows = dispatcher.dispatch(xd, a.router.idx_NK, N, a.dispatch, load_E);
  run_experts(ps, rows, a.dispatch.groups, a.experts);
  if (has_shared) {
    MOE_PHASE("experts");
    shared_experts.forward(ps, y, x, N, a.shared);
  }
  dispatcher.combine(y, rows, a.router.weights_NK.f32(), N, /*accumulate=*/has_shared, a.dispatch);
}

void MoELayer::backward(const ParamStore& ps, float* dx, const float* dy, Activation x, int64_t B, int64_t T,
                        MoEActs& a, float loss_scale) const {
  MOE_PHASE("moe_routing");
  const int64_t N = B * T;
  ScratchScope scope;
  Tensor dw = scratch({N, K});
  const ExpertGradRows g = dispatcher.combine_backward(dw.f32(), dy, a.router.weights_NK.f32(), N, a.dispatch);
  run_experts_backward(ps, g, a.dispatch.groups, a.experts);
  // The shared experts write dx; the routed copies' gradients are added in fixed k order.
  if (has_shared) {
    MOE_PHASE("experts");
    shared_experts.backward(ps, dx, dy, x, N, a.shared);
  } else {
    compute().zero(dx, size_t(N * D) * sizeof(float));
  }
  dispatcher.dispatch_backward(dx, g, N, a.dispatch);
  gate.backward(ps, dx, dw.f32(), x.f32, B, T, a.router, loss_scale);
}

}  // namespace moe
