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

// Runs this rank's experts over rows grouped by expert (offsets[j]..offsets[j+1] for expert
// local_begin + j): y = expert(x) per row, each projection one grouped GEMM over all experts.
// Activations for backward go to a.experts.
void MoELayer::run_experts(const ParamStore& ps, const std::vector<int64_t>& offsets, const float* x, float* y,
                           MoEActs& a, const Fp8Rows* xq) const {
  MOE_PHASE("experts");
  const int64_t rows = offsets.back(), G = local_count;
  const Precision p = experts[local_begin].gate_proj.prec;
  a.experts.gate_NI.ensure({rows, I});
  a.experts.up_NI.ensure({rows, I});
  a.experts.h_NI.ensure({rows, I});
  Backend& c = compute();
  auto Wg = expert_weights(ps, &SwiGLUMLP::gate_proj, false), Wu = expert_weights(ps, &SwiGLUMLP::up_proj, false),
       Wd = expert_weights(ps, &SwiGLUMLP::down_proj, false);
  float *gate = a.experts.gate_NI.f32(), *up = a.experts.up_NI.f32(), *h = a.experts.h_NI.f32();
  if (p != Precision::FP8) {
    c.grouped_linear_forward(gate, x, Wg.data(), offsets.data(), G, D, I, p);
    c.grouped_linear_forward(up, x, Wu.data(), offsets.data(), G, D, I, p);
    c.swiglu_forward(h, gate, up, rows * I);
    return c.grouped_linear_forward(y, h, Wd.data(), offsets.data(), G, I, D, p);
  }
  // fp8: the GEMMs read E4M3 rows: x's from the permute (or, without them, quantised here: rows
  // that came through the expert exchange) and h's from SwiGLU.
  ScratchScope scope;
  ScratchFp8Rows own;
  if (!xq) {
    own = ScratchFp8Rows(rows, D);
    c.quantize_rows(own.get(), x);
    xq = own.ptr();
  }
  c.grouped_linear_forward_fp8(gate, *xq, Wg.data(), offsets.data(), G, I);
  c.grouped_linear_forward_fp8(up, *xq, Wu.data(), offsets.data(), G, I);
  const ScratchFp8Rows hq(rows, I);
  c.swiglu_forward_fp8(h, hq.get(), gate, up);
  c.grouped_linear_forward_fp8(y, hq.get(), Wd.data(), offsets.data(), G, D);
}

// dx (assigned) from dy over the same rows; the experts' parameter gradients accumulate
// (SwiGLUMLP::backward's order, grouped).
void MoELayer::run_experts_backward(const ParamStore& ps, const std::vector<int64_t>& offsets, const float* dy,
                                    float* dx, const float* x, MoEActs& a) const {
  MOE_PHASE("experts");
  const int64_t rows = offsets.back();
  const Precision p = experts[local_begin].gate_proj.prec;
  Backend& c = compute();
  auto Wg = expert_weights(ps, &SwiGLUMLP::gate_proj, false), Wu = expert_weights(ps, &SwiGLUMLP::up_proj, false),
       Wd = expert_weights(ps, &SwiGLUMLP::down_proj, false);
  auto dWg = expert_weights(ps, &SwiGLUMLP::gate_proj, true), dWu = expert_weights(ps, &SwiGLUMLP::up_proj, true),
       dWd = expert_weights(ps, &SwiGLUMLP::down_proj, true);
  ScratchScope scope;
  Tensor dh = scratch({rows, I}), dg = scratch({rows, I}), du = scratch({rows, I});
  projection_backward(offsets, a, dh.f32(), dWd.data(), dy, a.experts.h_NI.f32(), Wd.data(), I, D, false, p);
  c.swiglu_backward(dg.f32(), du.f32(), dh.f32(), a.experts.gate_NI.f32(), a.experts.up_NI.f32(), rows * I);
  projection_backward(offsets, a, dx, dWg.data(), dg.f32(), x, Wg.data(), D, I, false, p);
  projection_backward(offsets, a, dx, dWu.data(), du.f32(), x, Wu.data(), D, I, true, p);
}

// One projection's backward over the local experts' rows: dx (assigned, or added when
// accumulate_dx) in one grouped call. The weight gradients too when the rows came from one place;
// rows from several source ranks (grouped [expert][source]) take them one source at a time, over
// that source's block of each expert's rows (the rows between are groups without weights, which
// the backends skip). So an expert's weight gradient adds per-source partials in source order, and
// at fp8 its 128-token tiles restart at each source's block as one process's restart at each
// micro-batch: the same computation on any ep, where one GEMM over all sources would share tiles
// across them.
void MoELayer::projection_backward(const std::vector<int64_t>& offsets, const MoEActs& a, float* dx,
                                   float* const* dW, const float* dy, const float* x, const float* const* W,
                                   int64_t in, int64_t out, bool accumulate_dx, Precision p) const {
  Backend& c = compute();
  const int64_t G = local_count;
  const int S = exchange ? a.plan.ranks : 1;
  if (S == 1) return c.grouped_linear_backward(dx, dW, dy, x, W, offsets.data(), G, in, out, accumulate_dx, p);
  const std::vector<float*> no_dW(size_t(G), nullptr);
  c.grouped_linear_backward(dx, no_dW.data(), dy, x, W, offsets.data(), G, in, out, accumulate_dx, p);
  std::vector<int64_t> off;
  std::vector<float*> dWs;
  std::vector<const float*> Ws;
  for (int s = 0; s < S; ++s) {
    off.clear(), dWs.clear(), Ws.clear();
    for (int64_t j = 0; j < G; ++j) {
      const int64_t begin = a.local_block[size_t(s * G + j)], n = a.plan.recv_rows[size_t(s * G + j)];
      if (off.empty()) {
        off.push_back(begin);
      } else if (off.back() < begin) {  // other sources' rows: skipped
        Ws.push_back(W[j]), dWs.push_back(nullptr), off.push_back(begin);
      }
      Ws.push_back(W[j]), dWs.push_back(dW[j]), off.push_back(begin + n);
    }
    c.grouped_linear_backward(nullptr, dWs.data(), dy, x, Ws.data(), off.data(), int64_t(Ws.size()), in, out, false,
                              p);
  }
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

// Copies rows of `width` floats between received order and local order (to_local) or back.
void MoELayer::move_blocks(const MoEActs& a, float* dst, const float* src, bool to_local, int64_t width) const {
  for (size_t b = 0; b < a.recv_block.size(); ++b) {
    int64_t n = a.plan.recv_rows[b], from = to_local ? a.recv_block[b] : a.local_block[b],
            to = to_local ? a.local_block[b] : a.recv_block[b];
    compute().copy(dst + to * width, src + from * width, size_t(n * width) * sizeof(float));
  }
}

namespace {

// E4M3 rows packed for the exchange, which moves rows of floats: each row's ld codes as ld / 4
// 32-bit words (ld is a multiple of 128), then its scales. Copies move the bit patterns unchanged.
int64_t fp8_packed_width(int64_t cols) { return Fp8Rows::ld_of(cols) / 4 + Fp8Rows::tiles_of(cols); }

void pack_fp8_rows(float* packed, const Fp8Rows& q) {
  const int64_t words = q.ld() / 4, width = fp8_packed_width(q.cols);
  compute().copy_rows(packed, width, reinterpret_cast<const float*>(q.codes), words, q.rows, words);
  compute().copy_rows(packed + words, width, q.scales, q.tiles(), q.rows, q.tiles());
}

void unpack_fp8_rows(const Fp8Rows& q, const float* packed) {
  const int64_t words = q.ld() / 4, width = fp8_packed_width(q.cols);
  compute().copy_rows(reinterpret_cast<float*>(q.codes), words, packed, width, q.rows, words);
  compute().copy_rows(q.scales, q.tiles(), packed + words, width, q.rows, q.tiles());
}

}  // namespace

void MoELayer::forward(const ParamStore& ps, float* y, const float* x, int64_t B, int64_t T, MoEActs& a,
                       float* load_E, const Fp8Rows* xq) const {
  MOE_PHASE("moe_routing");  // router, dispatch and combine; the experts' own work is "experts"
  const int64_t N = B * T, P = N * K;
  gate.forward(ps, x, B, T, a.router);

  // Dispatch plan: counting sort of the N*K choices by expert, stable in token order. The expert
  // offsets come to the host: they size the grouped GEMMs and the exchange, and count the load.
  a.offsets_dev.ensure({E + 1}, DType::I64);
  a.slot_of.ensure({P}, DType::I32);
  a.pos_of.ensure({P}, DType::I32);
  compute().moe_dispatch_plan(a.offsets_dev.data<int64_t>(), a.slot_of.data<int32_t>(), a.pos_of.data<int32_t>(),
                              a.router.idx_NK.data<int32_t>(), P, E);
  a.offsets.resize(size_t(E + 1));
  compute().download(a.offsets.data(), a.offsets_dev.raw(), a.offsets.size() * sizeof(int64_t));
  if (load_E)
    for (int64_t e = 0; e < E; ++e) load_E[e] += float(a.offsets[e + 1] - a.offsets[e]);
  a.xs_PD.ensure({P, D});
  float* xs = a.xs_PD.f32();
  // At fp8, x's E4M3 rows travel with x to local experts, and with fp8_dispatch to remote ones too
  // (1x128 tiles lie inside a row: moving rows moves their codes and scales unchanged). With
  // fp8_dispatch the experts' backward reads the rows de-quantised, on every ep alike.
  const bool send_fp8 = xq && fp8_dispatch;
  ScratchScope fp8_scope;
  ScratchFp8Rows xsq;
  if (xq && (!exchange || send_fp8)) {
    xsq = ScratchFp8Rows(P, D);
    compute().moe_permute_fp8(xs, xsq.get(), x, *xq, a.slot_of.data<int32_t>(), K);
    // The local experts' backward reads xs (remote experts read what they receive).
    if (send_fp8 && !exchange) compute().dequantize_rows(xs, xsq.get());
  } else {
    compute().moe_permute(xs, x, a.slot_of.data<int32_t>(), P, K, D);
  }

  a.ys_PD.ensure({P, D});
  if (!exchange) {
    MOE_CHECK(local_count == E, "experts split into parts but no expert exchange to reach them");
    run_experts(ps, a.offsets, xs, a.ys_PD.f32(), a, xsq.ptr());
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
    a.xl_RD.ensure({R, D});
    ScratchFp8Rows xlq;
    if (send_fp8) {
      const int64_t width = fp8_packed_width(D);
      Tensor send = scratch({P, width}), recv = scratch({R, width}), local = scratch({R, width});
      pack_fp8_rows(send.f32(), xsq.get());
      {
        MOE_PHASE("expert_dispatch");
        exchange->dispatch(a.plan, send.f32(), recv.f32(), width);
      }
      move_blocks(a, local.f32(), recv.f32(), /*to_local=*/true, width);
      xlq = ScratchFp8Rows(R, D);
      unpack_fp8_rows(xlq.get(), local.f32());
      compute().dequantize_rows(a.xl_RD.f32(), xlq.get());
    } else {
      {
        MOE_PHASE("expert_dispatch");
        exchange->dispatch(a.plan, xs, xr.f32(), D);
      }
      move_blocks(a, a.xl_RD.f32(), xr.f32(), /*to_local=*/true, D);
    }
    run_experts(ps, a.local_offsets, a.xl_RD.f32(), yl.f32(), a, xlq.ptr());
    move_blocks(a, xr.f32(), yl.f32(), /*to_local=*/false, D);  // xr is free again: the outputs go there
    MOE_PHASE("expert_dispatch");
    exchange->combine(a.plan, xr.f32(), a.ys_PD.f32(), D);
  }

  // Combine: y = shared(x) + sum_k w * ys.
  if (has_shared) {
    MOE_PHASE("experts");
    shared_experts.forward(ps, y, x, N, a.shared, false, xq);
  }
  compute().moe_unpermute(y, a.ys_PD.f32(), a.pos_of.data<int32_t>(), a.router.weights_NK.f32(), N, K, D,
                          /*accumulate=*/has_shared);
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
  compute().moe_unpermute_backward(pdw, pdys, dy, ys, a.pos_of.data<int32_t>(), w, N, K, D);

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
    move_blocks(a, dyl.f32(), dyr.f32(), /*to_local=*/true, D);
    run_experts_backward(ps, a.local_offsets, dyl.f32(), dxl.f32(), a.xl_RD.f32(), a);
    move_blocks(a, dyr.f32(), dxl.f32(), /*to_local=*/false, D);
    MOE_PHASE("expert_dispatch");
    exchange->combine(a.plan, dyr.f32(), dxs.f32(), D);
  }

  // Shared experts write dx; routed copies are un-permuted and added in fixed k order.
  if (has_shared) {
    MOE_PHASE("experts");
    shared_experts.backward(ps, dx, dy, x, N, a.shared);
  } else
    compute().zero(dx, size_t(N * D) * sizeof(float));
  compute().moe_permute_backward(dx, dxs.f32(), a.pos_of.data<int32_t>(), N, K, D);

  gate.backward(ps, dx, pdw, x, B, T, a.router, loss_scale);
}

}  // namespace moe
