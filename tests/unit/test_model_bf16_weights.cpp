// framework/bf16_weights.h: inside a scope a weight matrix is rounded to bf16 once and the copy is
// reused (a change to W inside the scope is not seen: that is the contract, and how the test tells a
// kept copy from a fresh rounding); forgetting a range and closing the last scope drop copies; the
// bf16 linear layer gives the same bits with and without a scope. And ParamStore::bind forgets
// what lived in storage it rebinds (FSDP's pooled gather buffers): a unit bound where another unit
// was gets its own weights, not the other's copy.
#include <gtest/gtest.h>

#include <vector>

#include "framework/bf16_weights.h"
#include "framework/dtype.h"
#include "framework/precision.h"
#include "model/params.h"
#include "tests/unit/test_random.h"

using namespace moe;

namespace {

std::vector<uint16_t> rounded_bits(const float* x, int64_t n) {
  std::vector<uint16_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = f32_to_bf16_bits(x[i]);
  return out;
}

std::vector<uint16_t> as_vector(const uint16_t* p, int64_t n) { return std::vector<uint16_t>(p, p + n); }

}  // namespace

TEST(Bf16Weights, NothingKeptWithoutAScope) {
  const auto W = test::randn(64, 1);
  EXPECT_EQ(bf16_weights(W.data(), 64), nullptr);
  EXPECT_EQ(bf16_weights_bytes(), 0);
}

TEST(Bf16Weights, RoundedOnceKeptUntilTheLastScopeCloses) {
  auto W = test::randn(1000, 2);
  const auto first = rounded_bits(W.data(), 1000);
  {
    Bf16WeightScope outer;
    const uint16_t* kept = bf16_weights(W.data(), 1000);
    ASSERT_NE(kept, nullptr);
    EXPECT_EQ(as_vector(kept, 1000), first);
    EXPECT_EQ(bf16_weights_bytes(), 2000);
    W[5] = 123.f;  // not seen while the scope is open
    {
      Bf16WeightScope inner;  // nested: the copy survives its close
      EXPECT_EQ(bf16_weights(W.data(), 1000), kept);
    }
    EXPECT_EQ(as_vector(bf16_weights(W.data(), 1000), 1000), first);
    // The same address with another size is another matrix.
    const uint16_t* prefix = bf16_weights(W.data(), 10);
    EXPECT_EQ(prefix[5], f32_to_bf16_bits(123.f));
    EXPECT_EQ(bf16_weights_bytes(), 2020);
  }
  EXPECT_EQ(bf16_weights_bytes(), 0);
  Bf16WeightScope again;
  EXPECT_EQ(bf16_weights(W.data(), 1000)[5], f32_to_bf16_bits(123.f));  // rounded afresh
}

TEST(Bf16Weights, ForgetDropsTheMatricesStartingInTheRange) {
  auto buf = test::randn(300, 3);
  Bf16WeightScope scope;
  bf16_weights(buf.data(), 100);
  bf16_weights(buf.data() + 100, 100);
  bf16_weights(buf.data() + 200, 100);
  buf[150] = 7.f;
  buf[250] = 9.f;
  bf16_weights_forget(buf.data() + 100, 100);  // the second only
  EXPECT_EQ(bf16_weights_bytes(), 400);
  EXPECT_EQ(bf16_weights(buf.data() + 100, 100)[50], f32_to_bf16_bits(7.f));
  EXPECT_NE(bf16_weights(buf.data() + 200, 100)[50], f32_to_bf16_bits(9.f));
}

TEST(Bf16Weights, LinearLayerSameBitsInAndOutOfAScope) {
  const int64_t M = 37, in = 160, out = 96;
  const auto x = test::randn(size_t(M * in), 4), W = test::randn(size_t(out * in), 5, 0.1f);
  const auto dy = test::randn(size_t(M * out), 6);
  auto run = [&] {
    std::vector<float> y(size_t(M * out)), dx(size_t(M * in)), dW(size_t(out * in), 0.f);
    linear_forward(y.data(), x.data(), W.data(), M, in, out, false, Precision::BF16);
    linear_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), M, in, out, false, Precision::BF16);
    y.insert(y.end(), dx.begin(), dx.end());
    y.insert(y.end(), dW.begin(), dW.end());
    return y;
  };
  const auto plain = run();
  Bf16WeightScope scope;
  EXPECT_EQ(run(), plain);
  EXPECT_EQ(run(), plain);
}

TEST(Bf16Weights, BindForgetsWhatLivedInTheStorage) {
  // Two units of one matrix each, bound in turn to one buffer, as FSDP's gather pool does.
  ParamStore ps;
  ps.begin_unit("a");
  const int wa = ps.add("a.weight", {4, 32}, Init::Normal, 0.02f);
  ps.begin_unit("b");
  const int wb = ps.add("b.weight", {4, 32}, Init::Normal, 0.02f);
  ps.allocate_unbound();
  const auto a = test::randn(128, 7), b = test::randn(128, 8);
  std::vector<float> pool(128);

  Bf16WeightScope scope;
  pool = a;
  ps.bind(0, pool.data(), nullptr);
  EXPECT_EQ(as_vector(bf16_weights(ps.param(wa).f32(), 128), 128), rounded_bits(a.data(), 128));
  ps.bind(0, nullptr, nullptr);
  pool = b;
  ps.bind(1, pool.data(), nullptr);
  EXPECT_EQ(as_vector(bf16_weights(ps.param(wb).f32(), 128), 128), rounded_bits(b.data(), 128));
}

// fp8 GEMMs read W fake-quantised in 128x128 blocks: inside a scope that happens once per matrix
// (WeightForm::Fp8Blocks), beside its bf16 copy if one is made, with the same bits as without it.
TEST(Bf16Weights, Fp8LinearLayerQuantisesEachWeightOnce) {
  const int64_t M = 37, in = 160, out = 96;
  const auto x = test::randn(size_t(M * in), 9), dy = test::randn(size_t(M * out), 10);
  auto W = test::randn(size_t(out * in), 11, 0.1f);
  auto run = [&] {
    std::vector<float> y(size_t(M * out)), dx(size_t(M * in)), dW(size_t(out * in), 0.f);
    linear_forward(y.data(), x.data(), W.data(), M, in, out, false, Precision::FP8);
    linear_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), M, in, out, false, Precision::FP8);
    y.insert(y.end(), dx.begin(), dx.end());
    y.insert(y.end(), dW.begin(), dW.end());
    return y;
  };
  const auto plain = run();
  std::vector<float> quantised(W.size());
  fp8_quantize_128x128(quantised.data(), W.data(), out, in);

  Bf16WeightScope scope;
  EXPECT_EQ(run(), plain);
  EXPECT_EQ(bf16_weights_bytes(), out * in * 4) << "one f32 copy, shared by forward and dgrad";
  const float* kept = fp8_weights(W.data(), out, in);
  EXPECT_EQ(std::vector<float>(kept, kept + out * in), quantised);
  W[3] = 100.f;  // not seen while the scope is open
  EXPECT_EQ(fp8_weights(W.data(), out, in), kept);
  EXPECT_EQ(kept[3], quantised[3]);
  bf16_weights(W.data(), out * in);  // another form of the same matrix: kept beside it
  EXPECT_EQ(bf16_weights_bytes(), out * in * 6);
  bf16_weights_forget(W.data(), out * in);
  EXPECT_EQ(bf16_weights_bytes(), 0) << "both forms forgotten with their storage";
}
