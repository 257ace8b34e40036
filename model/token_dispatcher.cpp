#include "model/token_dispatcher.h"

#include "framework/backend.h"
#include "framework/error.h"
#include "framework/profiler.h"

namespace moe {

int64_t fp8_packed_width(int64_t cols) { return Fp8Rows::ld_of(cols) / 4 + Fp8Rows::tiles_of(cols); }

namespace {

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

// The rows saved in t (DispatchActs::xs_PD or xl_RD) as the experts read them: their bf16 values
// when they moved as bf16 (f32 null), else their f32 values.
void rows_of(const Tensor& t, const float*& x, const uint16_t*& xb) {
  const Activation r = kept(t);
  x = r.f32, xb = r.bf16;
}

}  // namespace

ExpertRows TokenDispatcher::dispatch(Activation x, const Tensor& idx_NK, int64_t N, DispatchActs& a,
                                     float* load_E) const {
  const int64_t P = N * K;
  // Dispatch plan: counting sort of the N*K choices by expert, stable in token order. The expert
  // offsets come to the host: they size the grouped GEMMs and the exchange, and count the load.
  a.offsets_dev.ensure({E + 1}, DType::I64);
  a.slot_of.ensure({P}, DType::I32);
  a.pos_of.ensure({P}, DType::I32);
  compute().moe_dispatch_plan(a.offsets_dev.data<int64_t>(), a.slot_of.data<int32_t>(), a.pos_of.data<int32_t>(),
                              idx_NK.data<int32_t>(), P, E);
  a.offsets.resize(size_t(E + 1));
  compute().download(a.offsets.data(), a.offsets_dev.raw(), a.offsets.size() * sizeof(int64_t));
  if (load_E)
    for (int64_t e = 0; e < E; ++e) load_E[e] += float(a.offsets[e + 1] - a.offsets[e]);

  // Rows move as floats: width per row, D of them or D / 2 holding bf16 pairs.
  const bool send_bf16 = x.bf16 && D % 2 == 0;
  const DType row_type = send_bf16 ? DType::BF16 : DType::F32;
  const int64_t width = send_bf16 ? D / 2 : D;
  a.xs_PD.ensure({P, D}, row_type);
  a.ys_PD.ensure({P, D}, row_type);
  float* xs = static_cast<float*>(a.xs_PD.raw());
  // At fp8, x's E4M3 rows travel with x to local experts, and with fp8_dispatch to remote ones too
  // (1x128 tiles lie inside a row: moving rows moves their codes and scales unchanged). With
  // fp8_dispatch the experts' backward reads the rows de-quantised, on every ep alike.
  const Fp8Rows* xq = x.e4m3;
  const bool send_fp8 = xq && fp8_dispatch;
  ExpertRows rows;
  ScratchFp8Rows xsq;
  if (xq && (!exchange || send_fp8)) {
    xsq = ScratchFp8Rows(P, D);
    compute().moe_permute_fp8(xs, xsq.get(), x.f32, *xq, a.slot_of.data<int32_t>(), K);
    // The local experts' backward reads xs (remote experts read what they receive).
    if (send_fp8 && !exchange) compute().dequantize_rows(xs, xsq.get());
  } else {
    const float* x_rows = send_bf16 ? reinterpret_cast<const float*>(x.bf16) : x.f32;
    compute().moe_permute(xs, x_rows, a.slot_of.data<int32_t>(), P, K, width);
  }

  if (!exchange) {
    MOE_CHECK(local_experts == E, "experts split into parts but no expert exchange to reach them");
    a.groups.sources = 1;
    a.groups.offsets = a.offsets;
    a.groups.source_offsets = a.offsets;
    rows_of(a.xs_PD, rows.x, rows.xb);
    rows.xq = xsq;
    if (send_bf16) {  // the outputs are rounded into ys by combine
      rows.outputs = scratch({P, D});
      rows.y = rows.outputs.f32();
    } else {
      rows.y = a.ys_PD.f32();
    }
    return rows;
  }

  std::vector<int64_t> counts(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) counts[e] = a.offsets[e + 1] - a.offsets[e];
  {
    MOE_PHASE("expert_dispatch");
    exchange->plan(counts.data(), E, a.plan);
  }
  const int64_t R = plan_blocks(a);
  rows.received = scratch({R, D});
  rows.outputs = scratch({R, D});
  a.xl_RD.ensure({R, D}, row_type);
  if (send_fp8) {
    const int64_t packed = fp8_packed_width(D);
    Tensor send = scratch({P, packed}), recv = scratch({R, packed}), local = scratch({R, packed});
    pack_fp8_rows(send.f32(), xsq.get());
    {
      MOE_PHASE("expert_dispatch");
      exchange->dispatch(a.plan, send.f32(), recv.f32(), packed);
    }
    move_blocks(a, local.f32(), recv.f32(), /*to_local=*/true, packed);
    rows.xq = ScratchFp8Rows(R, D);
    unpack_fp8_rows(rows.xq.get(), local.f32());
    compute().dequantize_rows(a.xl_RD.f32(), rows.xq.get());
  } else {
    {
      MOE_PHASE("expert_dispatch");
      exchange->dispatch(a.plan, xs, rows.received.f32(), width);
    }
    move_blocks(a, static_cast<float*>(a.xl_RD.raw()), rows.received.f32(), /*to_local=*/true, width);
  }
  rows_of(a.xl_RD, rows.x, rows.xb);
  rows.y = rows.outputs.f32();
  return rows;
}

void TokenDispatcher::combine(float* y, const ExpertRows& rows, const float* w_NK, int64_t N, bool accumulate,
                              DispatchActs& a) const {
  const int64_t P = N * K;
  if (a.ys_PD.dtype() == DType::BF16) {
    // At bf16 the outputs come back as their bf16 rounding (DeepSeek-V3 combines in bf16), kept so
    // for backward: half the bytes kept and exchanged. The weighted sum is f32.
    uint16_t* ysb = a.ys_PD.data<uint16_t>();
    if (exchange) {
      const int64_t R = a.xl_RD.dim(0);
      Tensor out = scratch({R, D}, DType::BF16);
      compute().cast_f32_to_bf16(out.data<uint16_t>(), rows.y, R * D);
      move_blocks(a, rows.received.f32(), static_cast<const float*>(out.raw()), /*to_local=*/false, D / 2);
      MOE_PHASE("expert_dispatch");
      exchange->combine(a.plan, rows.received.f32(), reinterpret_cast<float*>(ysb), D / 2);
    } else {
      compute().cast_f32_to_bf16(ysb, rows.y, P * D);
    }
    return compute().moe_unpermute_bf16(y, ysb, a.pos_of.data<int32_t>(), w_NK, N, K, D, accumulate);
  }
  if (exchange) {
    // The received buffer is free again: the outputs go back through it.
    move_blocks(a, rows.received.f32(), rows.y, /*to_local=*/false, D);
    MOE_PHASE("expert_dispatch");
    exchange->combine(a.plan, rows.received.f32(), a.ys_PD.f32(), D);
  }
  compute().moe_unpermute(y, a.ys_PD.f32(), a.pos_of.data<int32_t>(), w_NK, N, K, D, accumulate);
}

ExpertGradRows TokenDispatcher::combine_backward(float* dw_NK, const float* dy, const float* w_NK, int64_t N,
                                                 const DispatchActs& a) const {
  const int64_t P = N * K;
  // dw[n,k] = dy[n] . ys[p];  dys[p] = w[n,k] * dy[n].
  ExpertGradRows g;
  g.dy_permuted = scratch({P, D});
  if (a.ys_PD.dtype() == DType::BF16)
    compute().moe_unpermute_backward_bf16(dw_NK, g.dy_permuted.f32(), dy, a.ys_PD.data<uint16_t>(),
                                          a.pos_of.data<int32_t>(), w_NK, N, K, D);
  else
    compute().moe_unpermute_backward(dw_NK, g.dy_permuted.f32(), dy, a.ys_PD.f32(), a.pos_of.data<int32_t>(), w_NK,
                                     N, K, D);
  g.dx_permuted = scratch({P, D});
  if (!exchange) {
    rows_of(a.xs_PD, g.x, g.xb);
    g.dy = g.dy_permuted.f32();
    g.dx = g.dx_permuted.f32();
    return g;
  }
  const int64_t R = a.xl_RD.dim(0);
  g.received = scratch({R, D});
  g.dy_local = scratch({R, D});
  g.dx_local = scratch({R, D});
  {
    MOE_PHASE("expert_dispatch");
    exchange->dispatch(a.plan, g.dy_permuted.f32(), g.received.f32(), D);
  }
  move_blocks(a, g.dy_local.f32(), g.received.f32(), /*to_local=*/true, D);
  rows_of(a.xl_RD, g.x, g.xb);
  g.dy = g.dy_local.f32();
  g.dx = g.dx_local.f32();
  return g;
}

void TokenDispatcher::dispatch_backward(float* dx, const ExpertGradRows& g, int64_t N, const DispatchActs& a) const {
  if (exchange) {
    move_blocks(a, g.received.f32(), g.dx, /*to_local=*/false, D);
    MOE_PHASE("expert_dispatch");
    exchange->combine(a.plan, g.received.f32(), g.dx_permuted.f32(), D);
  }
  compute().moe_permute_backward(dx, g.dx_permuted.f32(), a.pos_of.data<int32_t>(), N, K, D);
}

// Where each (source rank s, local expert j) block of received rows sits: received order is
// [s][j] (each source sends its rows in expert order), local order [j][s] (each expert's rows
// contiguous, sources in rank order, so the result does not depend on arrival). The experts see
// the local order as a.groups. Returns R.
int64_t TokenDispatcher::plan_blocks(DispatchActs& a) const {
  const ExchangePlan& pl = a.plan;
  const int S = pl.ranks;
  const int64_t G = pl.local_experts;
  MOE_CHECK(G == local_experts, "exchange plan for ", G, " experts, layer computes ", local_experts);
  a.recv_block.assign(size_t(S * G), 0);
  a.local_block.assign(size_t(S * G), 0);
  ExpertGroups& groups = a.groups;
  groups.sources = S;
  groups.offsets.assign(size_t(G + 1), 0);
  groups.source_offsets.assign(size_t(G * S + 1), 0);
  int64_t at = 0;
  for (int s = 0; s < S; ++s)
    for (int64_t j = 0; j < G; ++j) a.recv_block[s * G + j] = at, at += pl.recv_rows[s * G + j];
  int64_t lat = 0;
  for (int64_t j = 0; j < G; ++j) {
    groups.offsets[j] = lat;
    for (int s = 0; s < S; ++s) {
      a.local_block[s * G + j] = groups.source_offsets[j * S + s] = lat;
      lat += pl.recv_rows[s * G + j];
    }
  }
  groups.offsets[G] = groups.source_offsets[G * S] = lat;
  return at;
}

// Copies rows of `width` floats between received order and local order (to_local) or back.
void TokenDispatcher::move_blocks(const DispatchActs& a, float* dst, const float* src, bool to_local,
                                  int64_t width) const {
  for (size_t b = 0; b < a.recv_block.size(); ++b) {
    int64_t n = a.plan.recv_rows[b], from = to_local ? a.recv_block[b] : a.local_block[b],
            to = to_local ? a.local_block[b] : a.recv_block[b];
    compute().copy(dst + to * width, src + from * width, size_t(n * width) * sizeof(float));
  }
}

}  // namespace moe
