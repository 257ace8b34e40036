#include "model/moe_layer.h"

#include "framework/gemm.h"
#include "framework/ops.h"
#include "framework/profiler.h"
#include "framework/scratch.h"
#include "framework/threads.h"

namespace moe {

void MoELayer::init(ParamStore& ps, const std::string& prefix, const ModelConfig& c) {
  D = c.hidden; E = c.routed_experts; K = c.experts_per_token; I = c.expert_inter;
  float std = float(c.init_std);
  gate.init(ps, prefix + ".gate", c);
  experts.resize(E);
  for (int64_t e = 0; e < E; ++e) experts[e].init(ps, prefix + ".experts." + std::to_string(e), D, I, std);
  has_shared = c.shared_experts > 0;
  if (has_shared) shared_experts.init(ps, prefix + ".shared_experts", D, I * c.shared_experts, std);
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

void MoELayer::forward(const ParamStore& ps, float* y, const float* x, int64_t B, int64_t T, MoEActs& a,
                       float* load_E) const {
  MOE_PHASE("moe_routing");  // router, dispatch and combine; the experts' own work is "experts"
  const int64_t N = B * T, P = N * K;
  gate.forward(ps, x, B, T, a.router, load_E);

  // Dispatch plan: counting sort of the N*K choices by expert, stable in token order.
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
  parallel_for(P, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* src = x + (a.slot_of[p] / K) * D;
      std::copy(src, src + D, xs + p * D);
    }
  }, 64);

  // Compute: every expert's SwiGLU over its rows (activations in one [P, I] buffer set).
  a.ys_PD.ensure({P, D});
  a.experts.gate_NI.ensure({P, I});
  a.experts.up_NI.ensure({P, I});
  a.experts.h_NI.ensure({P, I});
  {
    MOE_PHASE("experts");
    for_each_expert(a.offsets, [&](int64_t e, int64_t p0, int64_t n) {
      MLPActs view{a.experts.gate_NI.rows(p0, p0 + n), a.experts.up_NI.rows(p0, p0 + n), a.experts.h_NI.rows(p0, p0 + n)};
      experts[e].forward(ps, a.ys_PD.f32() + p0 * D, xs + p0 * D, n, view);
    });
  }

  // Combine: y = shared(x) + sum_k w * ys.
  if (has_shared) {
    MOE_PHASE("experts");
    shared_experts.forward(ps, y, x, N, a.shared);
  } else
    std::fill(y, y + N * D, 0.f);
  const float* ys = a.ys_PD.f32();
  const float* w = a.router.weights_NK.f32();
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t k = 0; k < K; ++k) axpy(y + n * D, ys + int64_t(a.pos_of[n * K + k]) * D, w[n * K + k], D);
  }, 64);
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
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t k = 0; k < K; ++k) {
        int64_t p = a.pos_of[n * K + k];
        float dot = 0.f;
        for (int64_t i = 0; i < D; ++i) {
          dot += dy[n * D + i] * ys[p * D + i];
          pdys[p * D + i] = w[n * K + k] * dy[n * D + i];
        }
        pdw[n * K + k] = dot;
      }
  }, 64);

  // Experts backward over their rows; dxs in expert order.
  Tensor dxs = scratch({P, D});
  {
    MOE_PHASE("experts");
    for_each_expert(a.offsets, [&](int64_t e, int64_t p0, int64_t n) {
      MLPActs view{a.experts.gate_NI.rows(p0, p0 + n), a.experts.up_NI.rows(p0, p0 + n), a.experts.h_NI.rows(p0, p0 + n)};
      experts[e].backward(ps, dxs.f32() + p0 * D, pdys + p0 * D, a.xs_PD.f32() + p0 * D, n, view);
    });
  }

  // Shared experts write dx; routed copies are un-permuted and added in fixed k order.
  if (has_shared) {
    MOE_PHASE("experts");
    shared_experts.backward(ps, dx, dy, x, N, a.shared);
  } else
    std::fill(dx, dx + N * D, 0.f);
  const float* pdxs = dxs.f32();
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t k = 0; k < K; ++k) axpy(dx + n * D, pdxs + int64_t(a.pos_of[n * K + k]) * D, 1.f, D);
  }, 64);

  gate.backward(ps, dx, pdw, x, B, T, a.router, loss_scale);
}

}  // namespace moe
