// The model on a device backend (framework/backend.h): training steps on the emulated device
// (tests/unit/emulated_device.h: the CPU ops over memory the host may not touch) must equal the
// same steps on the CPU bit for bit. This is what lets the GPU path be right without a GPU here:
// any host access to device memory faults, any host pointer given to a device op throws, and the
// numbers prove that nothing was skipped or computed twice.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "emulated_device.h"
#include "framework/optimizer.h"
#include "framework/rng.h"
#include "framework/threads.h"
#include "model/model.h"

using namespace moe;

namespace {

ModelConfig small_model() {
  ModelConfig c;
  c.vocab_size = 40; c.hidden = 32; c.layers = 3; c.dense_layers = 1; c.dense_inter = 48;
  c.heads = 2; c.q_lora_rank = 24; c.kv_lora_rank = 16; c.qk_nope_dim = 8; c.qk_rope_dim = 8; c.v_head_dim = 12;
  c.shared_experts = 1; c.routed_experts = 4; c.experts_per_token = 2; c.expert_inter = 16;
  c.router.aux_loss_coef = 0.01; c.router.z_loss_coef = 0.001;
  c.init_std = 0.1;
  return c;
}

// Everything a few steps produce that a device could get wrong.
struct Trace {
  std::vector<double> loss, aux, z, mtp, grad_norm;
  std::vector<float> load, params, moments, logits;
};

// Steps of forward, backward, AdamW and the bias update, computed on `b`; results read back through
// downloads only.
Trace train(Backend& b, const ModelConfig& c, Precision p, bool recompute, int steps = 3) {
  ComputeScope scope(b);
  const int64_t B = 2, T = 24, N = B * T;
  DeepSeekV3 m(c);
  m.set_recompute(recompute);
  m.set_precision(p);
  m.params().initialize(11);
  TrainConfig tc;
  AdamW opt(m.params().numel(), trainable_segments(m.params()), tc);
  Trace t;
  std::vector<int32_t> ids(N), tgt(N);  // one batch, so that the loss must go down
  for (int64_t i = 0; i < N; ++i) {
    ids[i] = int32_t(rng_bits(3, 1, uint64_t(i)) % uint64_t(c.vocab_size));
    tgt[i] = int32_t(rng_bits(3, 2, uint64_t(i)) % uint64_t(c.vocab_size));
  }
  for (int s = 0; s < steps; ++s) {
    m.params().zero_grads();
    ForwardStats st = m.forward(ids.data(), tgt.data(), B, T);
    m.backward(1.f);
    double gn = grad_norm(m.params());
    opt.step(m.params().params(), m.params().grads(), 1e-2, float(1.0 / std::max(1.0, gn)));
    const float* load = m.expert_load().f32();  // a host tensor
    t.load.insert(t.load.end(), load, load + m.expert_load().numel());
    m.update_router_bias(0.01f);
    t.loss.push_back(st.loss);
    t.aux.push_back(st.aux_loss);
    t.z.push_back(st.z_loss);
    t.mtp.push_back(st.mtp_loss);
    t.grad_norm.push_back(gn);
  }
  t.params.resize(size_t(m.params().numel()));
  b.download(t.params.data(), m.params().params(), t.params.size() * sizeof(float));
  t.moments.resize(t.params.size());
  b.download(t.moments.data(), opt.exp_avg_sq().raw(), t.moments.size() * sizeof(float));
  Tensor logits = m.last_logits(ids.data(), B, T);
  EXPECT_EQ(logits.device(), Device::CPU);
  t.logits.assign(logits.f32(), logits.f32() + logits.numel());
  return t;
}

void expect_bitwise_equal(const Trace& a, const Trace& b) {
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.aux, b.aux);
  EXPECT_EQ(a.z, b.z);
  EXPECT_EQ(a.mtp, b.mtp);
  EXPECT_EQ(a.grad_norm, b.grad_norm);
  EXPECT_EQ(a.load, b.load);
  EXPECT_EQ(a.logits, b.logits);
  ASSERT_EQ(a.params.size(), b.params.size());
  EXPECT_EQ(0, std::memcmp(a.params.data(), b.params.data(), a.params.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(a.moments.data(), b.moments.data(), a.moments.size() * sizeof(float)));
}

class ModelOnDevice : public ::testing::TestWithParam<std::tuple<Precision, bool>> {
 protected:
  void SetUp() override { set_num_threads(2); }
};

}  // namespace

TEST_P(ModelOnDevice, TrainsBitwiseLikeTheCpu) {
  const auto [precision, recompute] = GetParam();
  const ModelConfig c = small_model();
  Trace cpu = train(cpu_backend(), c, precision, recompute);
  test::EmulatedDevice device;
  Trace dev = train(device, c, precision, recompute);
  EXPECT_GT(device.ops(), 500);  // the model really ran on it
  expect_bitwise_equal(cpu, dev);
  EXPECT_LT(cpu.loss.back(), cpu.loss.front());  // and trained
}

INSTANTIATE_TEST_SUITE_P(Precisions, ModelOnDevice,
                         ::testing::Combine(::testing::Values(Precision::FP32, Precision::BF16, Precision::FP8),
                                            ::testing::Bool()));

// With two MTP modules (MoE blocks, the shared embedding and head read again): the same.
TEST(ModelOnDeviceMTP, TrainsBitwiseLikeTheCpu) {
  set_num_threads(2);
  ModelConfig c = small_model();
  c.mtp_depth = 2;
  for (Precision p : {Precision::FP32, Precision::BF16, Precision::FP8}) {
    Trace cpu = train(cpu_backend(), c, p, /*recompute=*/p == Precision::BF16);
    test::EmulatedDevice device;
    Trace dev = train(device, c, p, p == Precision::BF16);
    expect_bitwise_equal(cpu, dev);
    EXPECT_GT(cpu.mtp.front(), 0.0);
    EXPECT_LT(cpu.mtp.back(), cpu.mtp.front());
  }
}

// Generation with the latent KV cache on the device: prefill two slots, decode both together a
// few steps; the logits must be the CPU's bit for bit.
std::vector<float> decode_logits(Backend& b, const ModelConfig& c, Precision p) {
  ComputeScope scope(b);
  DeepSeekV3 m(c);
  m.set_precision(p);
  m.params().initialize(3);
  KVCache cache(m, 2, 16);
  std::vector<int32_t> a = {1, 5, 9, 2}, s = {7, 3, 3, 8, 30, 11};
  std::vector<float> out;
  auto keep = [&](const Tensor& t) {
    EXPECT_EQ(t.device(), Device::CPU);
    out.insert(out.end(), t.f32(), t.f32() + t.numel());
  };
  keep(m.prefill(cache, 0, a.data(), int64_t(a.size())));
  keep(m.prefill(cache, 1, s.data(), int64_t(s.size())));
  const int64_t slots[2] = {1, 0};
  for (int32_t step = 0; step < 4; ++step) {
    const int32_t ids[2] = {step, 2 * step + 1};
    keep(m.decode(cache, slots, ids, 2));
  }
  return out;
}

TEST(KVCacheOnDevice, DecodesBitwiseLikeTheCpu) {
  set_num_threads(2);
  for (Precision p : {Precision::FP32, Precision::BF16, Precision::FP8}) {
    std::vector<float> cpu = decode_logits(cpu_backend(), small_model(), p);
    test::EmulatedDevice device;
    std::vector<float> dev = decode_logits(device, small_model(), p);
    EXPECT_GT(device.ops(), 100);
    ASSERT_EQ(cpu.size(), dev.size());
    EXPECT_EQ(0, std::memcmp(cpu.data(), dev.data(), cpu.size() * sizeof(float))) << precision_name(p);
  }
}

// The emulation's own guarantees, which the test above relies on.
TEST(EmulatedDevice, HostAccessToDeviceMemoryFaults) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        test::EmulatedDevice device;
        Tensor t = Tensor::zeros({16}, DType::F32, Device::CUDA);
        volatile float x = t.f32()[3];
        (void)x;
      },
      "");
}

TEST(EmulatedDevice, HostPointerToADeviceOpThrows) {
  test::EmulatedDevice device;
  Tensor d = Tensor::zeros({8}, DType::F32, Device::CUDA);
  std::vector<float> host(8, 1.f);
  EXPECT_THROW(device.add(d.f32(), d.f32(), host.data(), 8), InternalError);
  EXPECT_THROW(device.upload(d.f32(), d.f32(), 32), InternalError);  // a "host" source inside device memory
  // The op table's other kinds of device arguments: a host array of device pointers (itself host
  // memory, every entry device memory) and E4M3 rows (codes and scales).
  Tensor y = Tensor::zeros({4, 8}, DType::F32, Device::CUDA), W = Tensor::zeros({8, 8}, DType::F32, Device::CUDA);
  const int64_t offsets[2] = {0, 4};
  const float* weights[1] = {W.f32()};
  device.grouped_linear_forward(y.f32(), y.f32(), weights, offsets, 1, 8, 8, Precision::FP32);  // legal
  const float* host_weights[1] = {host.data()};
  EXPECT_THROW(device.grouped_linear_forward(y.f32(), y.f32(), host_weights, offsets, 1, 8, 8, Precision::FP32),
               InternalError);
  Tensor offsets_on_device = Tensor::zeros({2}, DType::I64, Device::CUDA);
  EXPECT_THROW(device.grouped_linear_forward(y.f32(), y.f32(), weights, offsets_on_device.data<int64_t>(), 1, 8, 8,
                                             Precision::FP32),
               InternalError);
  std::vector<uint8_t> host_codes(4 * 128);
  Tensor scales = Tensor::zeros({4}, DType::F32, Device::CUDA);
  kern::Fp8Rows q{host_codes.data(), scales.f32(), 4, 8};
  EXPECT_THROW(device.quantize_rows(q, y.f32()), InternalError);
  // Through the tensor API, host <-> device copies are legal and round-trip.
  Tensor h = Tensor::empty({8});
  h.fill_(2.5f);
  d.copy_from(h);
  Tensor back = d.to(Device::CPU);
  EXPECT_EQ(back.f32()[7], 2.5f);
  d.fill_(-1.f);
  EXPECT_EQ(d.to(Device::CPU).f32()[0], -1.f);
}
