// cuDNN's fused attention (framework/cuda/cudnn_attention.h) against the GEMM path it replaces at
// bf16 (which test_gpu_backend proves against the CPU core) and against the CPU core itself: the op on small heads, on MLA's
// DeepSeek-V3 head widths (qk 192, v 128), on a length that is no multiple of 64 and with packed
// documents (data.document_mask), then the whole
// tiny model's gradients and a 100-step loss curve. The fused path rounds o, dq, dk and dv to bf16
// and sums in its own order, so the tolerance is bf16's (3e-2 normalised, the one the runtime check
// in attention.cu uses); a wrong mask, scale or transpose is off by O(1). Each case also requires
// that the fused path ran: a decline is printed on stderr with cuDNN's reason and fails here.
// Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <iterator>
#include <string>
#include <vector>

#include "framework/cuda/attention.h"
#include "framework/cuda/backend.h"
#include "framework/cuda/cudnn_attention.h"
#include "framework/cuda/ops.h"
#include "framework/optimizer.h"
#include "model/model.h"
#include "tests/gpu/gpu_test.h"

using namespace moe;
using namespace moe::gpu_test;

namespace {

constexpr double kTolerance = 3e-2;

// The model's packed layout at bf16.
AttentionLayout dense_layout(int64_t B, int64_t T, int64_t H, int64_t dqk, int64_t dv) {
  AttentionLayout l = AttentionLayout::dense(B, T, H, dqk, dv, 1.f / std::sqrt(float(dqk)));
  l.bf16 = true;
  return l;
}

struct Inputs {
  std::vector<float> q, k, v, dout;
  Inputs(const AttentionLayout& l, uint64_t seed) {
    const int64_t N = l.B * l.T;
    q = randn(size_t(N * l.q_ld), seed), k = randn(size_t(N * l.k_ld), seed + 1);
    v = randn(size_t(N * l.v_ld), seed + 2), dout = randn(size_t(N * l.o_ld), seed + 3);
  }
};

// The same on the CPU core (framework/attention.h), on the same bf16 inputs.
std::vector<std::vector<float>> cpu_attention(const AttentionLayout& l, uint64_t seed) {
  const Inputs in(l, seed);
  const auto qb = test::bf16_bits(in.q), kb = test::bf16_bits(in.k), vb = test::bf16_bits(in.v);
  std::vector<float> o(in.dout.size()), lse(size_t(l.B * l.H * l.T)), dq(in.q.size()), dk(in.k.size()),
      dv(in.v.size());
  attention_forward_bf16(o.data(), lse.data(), qb.data(), kb.data(), vb.data(), l);
  const auto ob = test::bf16_bits(o);
  attention_backward_bf16(dq.data(), dk.data(), dv.data(), in.dout.data(), ob.data(), qb.data(), kb.data(), vb.data(),
                          lse.data(), l);
  return {o, lse, dq, dk, dv};
}

// o, lse, dq, dk, dv of one forward and backward on bf16 q, k, v (with the chosen path).
std::vector<std::vector<float>> attention(const AttentionLayout& l, bool fused, uint64_t seed) {
  const int64_t N = l.B * l.T;
  cuda::set_cudnn_attention(fused);
  const Inputs in(l, seed);
  const auto &q = in.q, &k = in.k, &v = in.v, &dout = in.dout;
  auto Q = to_device(q), K = to_device(k), V = to_device(v), dO = to_device(dout);
  cuda::DeviceBuffer<uint16_t> Qb(int64_t(q.size())), Kb(int64_t(k.size())), Vb(int64_t(v.size())),
      Ob(N * l.o_ld);
  cuda::cast_f32_to_bf16(Qb.get(), Q.get(), Qb.size());
  cuda::cast_f32_to_bf16(Kb.get(), K.get(), Kb.size());
  cuda::cast_f32_to_bf16(Vb.get(), V.get(), Vb.size());
  cuda::DeviceBuffer<float> O(N * l.o_ld), lse(l.B * l.H * l.T), dQ(N * l.q_ld), dK(N * l.k_ld), dV(N * l.v_ld);
  cuda::attention_forward_bf16(O.get(), lse.get(), Qb.get(), Kb.get(), Vb.get(), l);
  cuda::cast_f32_to_bf16(Ob.get(), O.get(), Ob.size());  // the model keeps o in bf16
  cuda::attention_backward_bf16(dQ.get(), dK.get(), dV.get(), dO.get(), Ob.get(), Qb.get(), Kb.get(), Vb.get(),
                                lse.get(), l);
  cuda::set_cudnn_attention(true);
  return {to_host(O), to_host(lse), to_host(dQ), to_host(dK), to_host(dV)};
}

class GpuFusedAttention : public GpuTest {};

}  // namespace

TEST_F(GpuFusedAttention, MatchesTheGemmPath) {
  if (!cuda::cudnn_attention_enabled()) GTEST_SKIP() << "built without cuDNN, or MOE_CUDNN_ATTENTION=0";
  const char* names[] = {"o", "lse", "dq", "dk", "dv"};
  // The last case packs documents (data.document_mask): sequence b's documents start every 30 + b
  // positions.
  const AttentionLayout cases[] = {dense_layout(2, 64, 2, 16, 8), dense_layout(1, 256, 4, 192, 128),
                                   dense_layout(2, 100, 3, 32, 32), dense_layout(2, 100, 3, 32, 32)};
  std::vector<int32_t> doc_start;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 100; ++t) doc_start.push_back(int32_t(t - t % (30 + b)));
  const auto doc_start_d = to_device(doc_start);
  for (size_t c = 0; c < std::size(cases); ++c) {
    AttentionLayout l = cases[c], l_cpu = cases[c];
    if (c == 3) l.doc_start = doc_start_d.get(), l_cpu.doc_start = doc_start.data();
    const std::string shape = cuda::cudnn_attention_shape(l);
    const int64_t runs = cuda::cudnn_attention_runs();
    const auto want = attention(l, false, 70), got = attention(l, true, 70), cpu = cpu_attention(l_cpu, 70);
    EXPECT_EQ(cuda::cudnn_attention_runs() - runs, 2) << "the fused forward and backward did not both run for "
                                                      << shape << " (cuDNN's reason is on stderr)";
    for (size_t i = 0; i < want.size(); ++i) {
      expect_close(got[i], want[i], kTolerance, (shape + " " + names[i] + " vs the GEMM path").c_str());
      expect_close(got[i], cpu[i], kTolerance, (shape + " " + names[i] + " vs the CPU core").c_str());
    }
  }
}

// Layouts outside sdpa::supported take the GEMM path: the same bits with the fused path on or off.
TEST_F(GpuFusedAttention, DeclinedLayoutsTakeTheGemmPath) {
  AttentionLayout l = dense_layout(1, 48, 2, 12, 8);  // dqk not a whole number of 16-byte groups
  const int64_t runs = cuda::cudnn_attention_runs();
  const auto off = attention(l, false, 80), on = attention(l, true, 80);
  EXPECT_EQ(cuda::cudnn_attention_runs(), runs);
  for (size_t i = 0; i < off.size(); ++i) EXPECT_EQ(on[i], off[i]) << i;
}

namespace {

ModelConfig tiny() {
  const char* src = std::getenv("MOE_SOURCE_DIR");
  return load_config(std::string(src ? src : ".") + "/configs/tiny.yaml").model;
}

struct TrainRun {
  std::vector<double> losses;
  std::vector<float> grads;  // of the first step
};

// `steps` AdamW steps of the tiny model at bf16 on the GPU on a repeating, learnable batch.
TrainRun train(int steps, bool fused) {
  cuda::set_cudnn_attention(fused);
  ComputeScope scope(cuda::backend());
  const ModelConfig c = tiny();
  DeepSeekV3 m(c);
  m.set_precision(Precision::BF16);
  m.params().initialize(7);
  TrainConfig tc;
  AdamW opt(m.params().numel(), trainable_segments(m.params()), tc);
  const int64_t B = 4, T = 32;
  std::vector<int32_t> ids(size_t(B * T)), tgt(ids.size());
  TrainRun r;
  for (int s = 0; s < steps; ++s) {
    for (size_t i = 0; i < ids.size(); ++i) {
      ids[i] = int32_t((i * 7 + size_t(s % 4)) % size_t(c.vocab_size));
      tgt[i] = int32_t((size_t(ids[i]) * 3 + 1) % size_t(c.vocab_size));
    }
    m.params().zero_grads();
    const ForwardStats st = m.forward(ids.data(), tgt.data(), B, T);
    m.backward(1.f);
    if (s == 0) {
      r.grads.resize(size_t(m.params().numel()));
      cuda::backend().download(r.grads.data(), m.params().grads(), r.grads.size() * sizeof(float));
    }
    const double gn = grad_norm(m.params());
    opt.step(m.params().params(), m.params().grads(), 3e-3, gn > 1.0 ? float(1.0 / gn) : 1.f);
    m.update_router_bias(0.001f);
    r.losses.push_back(st.loss);
  }
  cuda::set_cudnn_attention(true);
  return r;
}

}  // namespace

TEST_F(GpuFusedAttention, TinyModelTracksTheGemmPath) {
  if (!cuda::cudnn_attention_enabled()) GTEST_SKIP() << "built without cuDNN, or MOE_CUDNN_ATTENTION=0";
  const int64_t runs = cuda::cudnn_attention_runs();
  const TrainRun gemm = train(100, false), fused = train(100, true);
  EXPECT_GE(cuda::cudnn_attention_runs() - runs, 200) << "the model did not run the fused path (stderr says why)";
  expect_close(fused.grads, gemm.grads, kTolerance, "first step's gradients");
  for (size_t s = 0; s < gemm.losses.size(); ++s)
    EXPECT_NEAR(fused.losses[s], gemm.losses[s], 2e-2 * gemm.losses[s]) << "step " << s;
  EXPECT_LT(fused.losses.back(), 0.5 * fused.losses.front());  // it learned
}
