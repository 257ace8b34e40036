#include "model/moe_layer.h"

#include "framework/moe_ops.h"
#include "framework/profiler.h"
#include "framework/scratch.h"
#include "framework/threads.h"

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
}

// Runs fn(e, row_begin, rows) for each expert with tokens. Experts are spread over the thread pool
// in contiguous runs of about equal rows (an expert goes to the thread its middle row falls in),
// and each expert's GEMMs run whole on that thread: one large single-threaded call beats two
// halves that synchronise after every GEMM.
template <class F>
static void for_each_expert(const std::vector<int64_t>& offsets, F&& fn) {
  const int64_t E = int64_t(offsets.size()) - 1, P = offsets.back();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), E));
  parallel_for(chunks, [&](int64_t c0, int64_t c1) {
    for (int64_t e = 0; e < E; ++e) {
      if (offsets[e + 1] == offsets[e]) continue;
      int64_t owner = std::min(chunks - 1, (offsets[e] + offsets[e + 1]) / 2 * chunks / std::max<int64_t>(P, 1));
      if (owner >= c0 && owner < c1) fn(e, offsets[e], offsets[e + 1] - offsets[e]);
    }
  });
}

// Runs this rank's experts over rows grouped by expert (offsets[j]..offsets[j+1] for expert
// local_begin + j): y = expert(x) per row. Activations for backward go to a.experts.
void MoELayer::run_experts(const ParamStore& ps, const std::vector<int64_t>& offsets, const float* x, float* y,
                           MoEActs& a) const {
  MOE_PHASE("experts");
  const int64_t rows = offsets.back();
  a.experts.gate_NI.ensure({rows, I});
  a.experts.up_NI.ensure({rows, I});
  a.experts.h_NI.ensure({rows, I});
  for_each_expert(offsets, [&](int64_t e, int64_t p0, int64_t n) {
    MLPActs view{a.experts.gate_NI.rows(p0, p0 + n), a.experts.up_NI.rows(p0, p0 + n), a.experts.h_NI.rows(p0, p0 + n)};
    experts[local_begin + e].forward(ps, y + p0 * D, x + p0 * D, n, view);
  });
}

// dx (assigned) from dy over the same rows; the experts' parameter gradients accumulate.
void MoELayer::run_experts_backward(const ParamStore& ps, const std::vector<int64_t>& offsets, const float* dy,
                                    float* dx, const float* x, MoEActs& a) const {
  MOE_PHASE("experts");
  for_each_expert(offsets, [&](int64_t e, int64_t p0, int64_t n) {
    MLPActs view{a.experts.gate_NI.rows(p0, p0 + n), a.experts.up_NI.rows(p0, p0 + n), a.experts.h_NI.rows(p0, p0 + n)};
    experts[local_begin + e].backward(ps, dx + p0 * D, dy + p0 * D, x + p0 * D, n, view);
  });
}

// Where each (source rank s, local expert j) block of received rows sits: received order is
// [s][j] (each source sends its rows in expert order), local order [j][s] (each expert's rows
// contiguous, sources in rank order, so the result does not depend on arrival). Returns R.
int64_t MoELayer::plan_blocks(MoEActs& a) const {
  const ExchangePlan& pl = a.plan;
  const int S = pl.ranks;
  const int64_t El = pl.local_experts;
  MOE_CHECK(El == local_count, "exchange plan for ", El, " experts, layer computes ", local_count);
  a.recv_block.assign(size_t(S * El), 0);
  a.local_block.assign(size_t(S * El), 0);
  a.local_offsets.assign(size_t(El + 1), 0);
  int64_t at = 0;
  for (int s = 0; s < S; ++s)
    for (int64_t j = 0; j < El; ++j) a.recv_block[s * El + j] = at, at += pl.recv_rows[s * El + j];
  int64_t lat = 0;
  for (int64_t j = 0; j < El; ++j) {
    a.local_offsets[j] = lat;
    for (int s = 0; s < S; ++s) a.local_block[s * El + j] = lat, lat += pl.recv_rows[s * El + j];
  }
  a.local_offsets[El] = lat;
  return at;
}

// Copies rows between received order and local order (to_local) or back.
void MoELayer::move_blocks(const MoEActs& a, float* dst, const float* src, bool to_local) const {
  const int64_t blocks = int64_t(a.recv_block.size());
  parallel_for(blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      int64_t n = a.plan.recv_rows[b], from = to_local ? a.recv_block[b] : a.local_block[b],
              to = to_local ? a.local_block[b] : a.recv_block[b];
      std::copy(src + from * D, src + (from + n) * D, dst + to * D);
    }
  });
}

void MoELayer::forward(const ParamStore& ps, float* y, const float* x, int64_t B, int64_t T, MoEActs& a,
                       float* load_E) const {
  MOE_PHASE("moe_routing");  // router, dispatch and combine; the experts' own work is "experts"
  const int64_t N = B * T, P = N * K;
  gate.forward(ps, x, B, T, a.router, load_E);

  // Dispatch plan: counting sort of the N*K choices by expert, stable in token order (one pass;
  // moe_dispatch_plan computes the same plan with one segment per expert, as the GPU wants it).
  a.offsets.assign(size_t(E + 1), 0);
  for (int64_t i = 0; i < P; ++i) a.offsets[a.router.idx_NK[i] + 1]++;
  for (int64_t e = 0; e < E; ++e) a.offsets[e + 1] += a.offsets[e];
  a.slot_of.resize(size_t(P));
  a.pos_of.resize(size_t(P));
  a.fill.assign(a.offsets.begin(), a.offsets.end() - 1);
  for (int64_t i = 0; i < P; ++i) {
    int64_t p = a.fill[a.router.idx_NK[i]]++;
    a.slot_of[p] = int32_t(i);
    a.pos_of[i] = int32_t(p);
  }
  a.xs_PD.ensure({P, D});
  float* xs = a.xs_PD.f32();
  moe_permute(xs, x, a.slot_of.data(), P, K, D);

  a.ys_PD.ensure({P, D});
  if (!exchange) {
    MOE_CHECK(local_count == E, "experts split into parts but no expert exchange to reach them");
    run_experts(ps, a.offsets, xs, a.ys_PD.f32(), a);
  } else {
    ScratchScope scope;
    std::vector<int64_t> counts(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) counts[e] = a.offsets[e + 1] - a.offsets[e];
    {
      MOE_PHASE("expert_dispatch");
      exchange->plan(counts.data(), E, a.plan);
    }
    const int64_t R = plan_blocks(a);
    Tensor xr = scratch({R, D}), yl = scratch({R, D});
    {
      MOE_PHASE("expert_dispatch");
      exchange->dispatch(a.plan, xs, xr.f32(), D);
    }
    a.xl_RD.ensure({R, D});
    move_blocks(a, a.xl_RD.f32(), xr.f32(), /*to_local=*/true);
    run_experts(ps, a.local_offsets, a.xl_RD.f32(), yl.f32(), a);
    move_blocks(a, xr.f32(), yl.f32(), /*to_local=*/false);  // xr is free again: the outputs go there
    MOE_PHASE("expert_dispatch");
    exchange->combine(a.plan, xr.f32(), a.ys_PD.f32(), D);
  }

  // Combine: y = shared(x) + sum_k w * ys.
  if (has_shared) {
    MOE_PHASE("experts");
    shared_experts.forward(ps, y, x, N, a.shared);
  }
  moe_unpermute(y, a.ys_PD.f32(), a.pos_of.data(), a.router.weights_NK.f32(), N, K, D, /*accumulate=*/has_shared);
}

void MoELayer::backward(const ParamStore& ps, float* dx, const float* dy, const float* x, int64_t B, int64_t T,
                        MoEActs& a, float loss_scale) const {
  MOE_PHASE("moe_routing");
  const int64_t N = B * T, P = N * K;
  const float* ys = a.ys_PD.f32();
  const float* w = a.router.weights_NK.f32();

  // Combine backward: dw[n,k] = dy[n] . ys[p];  dys[p] = w[n,k] * dy[n].
  ScratchScope scope;
  Tensor dw = scratch({N, K}), dys = scratch({P, D});
  float *pdw = dw.f32(), *pdys = dys.f32();
  moe_unpermute_backward(pdw, pdys, dy, ys, a.pos_of.data(), w, N, K, D);

  // Experts backward over their rows; dxs in expert order.
  Tensor dxs = scratch({P, D});
  if (!exchange) {
    run_experts_backward(ps, a.offsets, pdys, dxs.f32(), a.xs_PD.f32(), a);
  } else {
    const int64_t R = a.xl_RD.dim(0);
    Tensor dyr = scratch({R, D}), dyl = scratch({R, D}), dxl = scratch({R, D});
    {
      MOE_PHASE("expert_dispatch");
      exchange->dispatch(a.plan, pdys, dyr.f32(), D);
    }
    move_blocks(a, dyl.f32(), dyr.f32(), /*to_local=*/true);
    run_experts_backward(ps, a.local_offsets, dyl.f32(), dxl.f32(), a.xl_RD.f32(), a);
    move_blocks(a, dyr.f32(), dxl.f32(), /*to_local=*/false);
    MOE_PHASE("expert_dispatch");
    exchange->combine(a.plan, dyr.f32(), dxs.f32(), D);
  }

  // Shared experts write dx; routed copies are un-permuted and added in fixed k order.
  if (has_shared) {
    MOE_PHASE("experts");
    shared_experts.backward(ps, dx, dy, x, N, a.shared);
  } else
    std::fill(dx, dx + N * D, 0.f);
  moe_permute_backward(dx, dxs.f32(), a.pos_of.data(), N, K, D);

  gate.backward(ps, dx, pdw, x, B, T, a.router, loss_scale);
}

}  // namespace moe
