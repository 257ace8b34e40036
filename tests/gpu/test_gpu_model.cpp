// The whole model on the GPU (the CUDA backend, framework/cuda/backend.h) against the CPU backend:
// configs/tiny.yaml's loss and every parameter's gradient, at each precision, and 100 training
// steps whose loss curve must track the CPU's. The CPU side is the reference (tests/unit prove it
// against finite differences and PyTorch; test_model_device proves the model never touches device
// memory from the host). Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "framework/cuda/backend.h"
#include "framework/optimizer.h"
#include "framework/rng.h"
#include "framework/threads.h"
#include "model/model.h"
#include "tests/gpu/gpu_test.h"

using namespace moe;
using namespace moe::gpu_test;

namespace {

ModelConfig tiny() {
  const char* src = std::getenv("MOE_SOURCE_DIR");
  return load_config(std::string(src ? src : ".") + "/configs/tiny.yaml").model;
}

// One batch of text-like tokens: a repeating pattern with noise, so the loss can fall.
void batch(std::vector<int32_t>& ids, std::vector<int32_t>& tgt, int64_t N, int64_t V, uint64_t step) {
  ids.resize(size_t(N));
  tgt.resize(size_t(N));
  for (int64_t i = 0; i < N; ++i) {
    const uint64_t at = step * uint64_t(N) + uint64_t(i);
    ids[i] = int32_t((at * 7 + rng_bits(5, 1, at) % 3) % uint64_t(V));
    tgt[i] = int32_t((at * 7 + 7) % uint64_t(V));
  }
}

struct Result {
  double loss = 0;
  std::vector<float> grads;      // every parameter's gradient, flat
  std::vector<double> curve;     // losses of a training run
};

// Loss and gradients of one forward/backward on `b`.
Result gradients(Backend& b, const ModelConfig& c, Precision p) {
  ComputeScope scope(b);
  DeepSeekV3 m(c);
  m.set_precision(p);
  m.params().initialize(7);
  std::vector<int32_t> ids, tgt;
  const int64_t B = 4, T = 32;
  batch(ids, tgt, B * T, c.vocab_size, 0);
  m.params().zero_grads();
  Result r;
  ForwardStats s = m.forward(ids.data(), tgt.data(), B, T);
  m.backward(1.f);
  r.loss = s.loss + s.aux_loss + s.z_loss;
  r.grads.resize(size_t(m.params().numel()));
  b.download(r.grads.data(), m.params().grads(), r.grads.size() * sizeof(float));
  return r;
}

Result train(Backend& b, const ModelConfig& c, int steps) {
  ComputeScope scope(b);
  DeepSeekV3 m(c);
  m.params().initialize(7);
  TrainConfig tc;
  AdamW opt(m.params().numel(), trainable_segments(m.params()), tc);
  std::vector<int32_t> ids, tgt;
  const int64_t B = 4, T = 32;
  Result r;
  for (int s = 0; s < steps; ++s) {
    batch(ids, tgt, B * T, c.vocab_size, uint64_t(s % 4));
    m.params().zero_grads();
    ForwardStats st = m.forward(ids.data(), tgt.data(), B, T);
    m.backward(1.f);
    const double gn = grad_norm(m.params());
    opt.step(m.params().params(), m.params().grads(), 3e-3, gn > 1.0 ? float(1.0 / gn) : 1.f);
    m.update_router_bias(0.001f);
    r.curve.push_back(st.loss);
  }
  return r;
}

// The GEMM path's attention, whose math is the CPU's (test_gpu_fused_attention covers cuDNN's).
class GpuModel : public GpuTest {
  FusedAttentionOff gemm_attention_;
};

}  // namespace

TEST_F(GpuModel, LossAndEveryGradientMatchTheCpu) {
  const ModelConfig c = tiny();
  // Tolerances: fp32 differs from the CPU by reduction order only; bf16/fp8 GEMM inputs are rounded
  // identically, their sums accumulate in another order.
  for (auto [p, loss_tol, grad_tol] : {std::tuple{Precision::FP32, 1e-5, 1e-3}, std::tuple{Precision::BF16, 1e-4, 5e-3},
                                       std::tuple{Precision::FP8, 1e-4, 5e-3}}) {
    Result cpu = gradients(cpu_backend(), c, p), gpu = gradients(cuda::backend(), c, p);
    EXPECT_NEAR(gpu.loss, cpu.loss, loss_tol * std::abs(cpu.loss)) << precision_name(p);
    // Parameter by parameter, so a failure names the tensor.
    DeepSeekV3 layout(c);
    for (const ParamInfo& info : layout.params().infos()) {
      if (!info.trainable) continue;
      const int64_t n = shape_numel(info.shape);
      std::vector<float> g(gpu.grads.begin() + info.offset, gpu.grads.begin() + info.offset + n),
          want(cpu.grads.begin() + info.offset, cpu.grads.begin() + info.offset + n);
      expect_close(g, want, grad_tol, (std::string(precision_name(p)) + " " + info.name).c_str());
    }
  }
}

TEST_F(GpuModel, HundredStepsTrackTheCpuLossCurve) {
  const ModelConfig c = tiny();
  Result cpu = train(cpu_backend(), c, 100), gpu = train(cuda::backend(), c, 100);
  ASSERT_EQ(gpu.curve.size(), cpu.curve.size());
  for (size_t s = 0; s < cpu.curve.size(); ++s)
    EXPECT_NEAR(gpu.curve[s], cpu.curve[s], 2e-2 * cpu.curve[s]) << "step " << s;
  EXPECT_LT(cpu.curve.back(), 0.5 * cpu.curve.front());  // the run learned something
}

// data.document_mask on the GPU: a packed window of documents (starting inside and at the edges of
// rows) against the CPU, per-token losses and every gradient; and packed against each document alone.
TEST_F(GpuModel, DocumentMaskMatchesTheCpuAndEachDocumentAlone) {
  const ModelConfig c = tiny();
  const int64_t B = 2, T = 48;
  const std::vector<std::vector<int64_t>> docs = {{1, 20, 27}, {30, 18}};
  std::vector<int32_t> ids, tgt, doc_start(size_t(B * T));
  batch(ids, tgt, B * T, c.vocab_size, 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t at = 0, k = 0; k < int64_t(docs[size_t(b)].size()); at += docs[size_t(b)][size_t(k++)])
      for (int64_t t = at; t < at + docs[size_t(b)][size_t(k)]; ++t) doc_start[size_t(b * T + t)] = int32_t(at);
  auto run = [&](Backend& be, std::vector<float>& losses, std::vector<float>& grads, std::vector<float>& alone) {
    ComputeScope scope(be);
    DeepSeekV3 m(c);
    m.params().initialize(7);
    m.params().zero_grads();
    m.forward(ids.data(), tgt.data(), B, T, true, doc_start.data());
    m.backward(1.f);
    losses = m.token_losses();
    grads.resize(size_t(m.params().numel()));
    be.download(grads.data(), m.params().grads(), grads.size() * sizeof(float));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t at = 0, k = 0; k < int64_t(docs[size_t(b)].size()); at += docs[size_t(b)][size_t(k++)]) {
        const int64_t len = docs[size_t(b)][size_t(k)];
        m.forward(ids.data() + b * T + at, tgt.data() + b * T + at, 1, len, false);
        const std::vector<float> l = m.token_losses();
        alone.insert(alone.end(), l.begin(), l.end());
      }
  };
  std::vector<float> cpu_losses, cpu_grads, cpu_alone, gpu_losses, gpu_grads, gpu_alone;
  run(cpu_backend(), cpu_losses, cpu_grads, cpu_alone);
  run(cuda::backend(), gpu_losses, gpu_grads, gpu_alone);
  expect_close(gpu_losses, cpu_losses, 1e-4, "document-masked token losses");
  expect_close(gpu_grads, cpu_grads, 1e-3, "document-masked gradients");
  expect_close(gpu_losses, gpu_alone, 1e-4, "packed vs alone on the GPU");
}

// Two runs on the GPU give the same bits (deterministic reductions, no atomics).
TEST_F(GpuModel, Deterministic) {
  const ModelConfig c = tiny();
  Result a = train(cuda::backend(), c, 5), b = train(cuda::backend(), c, 5);
  EXPECT_EQ(a.curve, b.curve);
}

// Generation with the latent KV cache on the GPU: prefill and batched decode logits against the
// CPU's (reduction order only at fp32; rounded GEMM inputs at bf16).
std::vector<float> decode_logits(Backend& b, const ModelConfig& c, Precision p) {
  ComputeScope scope(b);
  DeepSeekV3 m(c);
  m.set_precision(p);
  m.params().initialize(3);
  KVCache cache(m, 2, 32);
  std::vector<int32_t> a = {1, 5, 9, 2}, s = {7, 3, 3, 8, 30, 11};
  std::vector<float> out;
  auto keep = [&](const Tensor& t) { out.insert(out.end(), t.f32(), t.f32() + t.numel()); };
  keep(m.prefill(cache, 0, a.data(), int64_t(a.size())));
  keep(m.prefill(cache, 1, s.data(), int64_t(s.size())));
  const int64_t slots[2] = {1, 0};
  for (int32_t step = 0; step < 8; ++step) {
    const int32_t ids[2] = {step, 2 * step + 1};
    keep(m.decode(cache, slots, ids, 2));
  }
  return out;
}

TEST_F(GpuModel, KVCacheDecodeMatchesTheCpu) {
  const ModelConfig c = tiny();
  for (auto [p, tol] : {std::tuple{Precision::FP32, 1e-4}, std::tuple{Precision::BF16, 1e-2}}) {
    std::vector<float> cpu = decode_logits(cpu_backend(), c, p), gpu = decode_logits(cuda::backend(), c, p);
    expect_close(gpu, cpu, tol, precision_name(p));
  }
}

