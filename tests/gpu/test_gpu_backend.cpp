// Every method of the CUDA backend (framework/cuda/backend.h) against the CPU backend, both called
// through the Backend interface on their own memory with the same random inputs. Tolerances as in
// docs/cuda.md ("Running the GPU tests"): memory ops, row moves, the embedding, the dispatch plan and
// the fp8 quantised values must match exactly; the rest to rounding. Deterministic ops run twice
// must give the same bits. Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "framework/backend.h"
#include "framework/bf16_weights.h"
#include "framework/cuda/attention.h"
#include "framework/cuda/backend.h"
#include "framework/cuda/linear.h"
#include "framework/cuda/ops.h"
#include "framework/ops.h"
#include "framework/precision.h"
#include "framework/tensor.h"
#include "tests/gpu/gpu_test.h"

using namespace moe;
using namespace moe::gpu_test;

namespace {

class GpuBackend : public GpuTest {
 protected:
  Backend& gpu() { return cuda::backend(); }
  Backend& cpu() { return cpu_backend(); }
};

// n elements of T in a backend's memory, filled from the host (or left as allocated).
template <class T>
class Buf {
 public:
  Buf(Backend& b, const std::vector<T>& host) : b_(b), n_(int64_t(host.size())) {
    p_ = static_cast<T*>(b_.allocate(bytes()));
    b_.upload(p_, host.data(), bytes());
  }
  ~Buf() { b_.deallocate(p_); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  T* get() const { return p_; }
  std::vector<T> host() const {
    std::vector<T> v(static_cast<size_t>(n_));
    b_.download(v.data(), p_, bytes());
    return v;
  }

 private:
  size_t bytes() const { return size_t(n_) * sizeof(T); }
  Backend& b_;
  int64_t n_;
  T* p_ = nullptr;
};

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Equal bits, except that any NaN equals any NaN (the GPU makes canonical NaNs, the CPU keeps the
// payload of its operands).
bool same_values(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::memcmp(&a[i], &b[i], 4) != 0) return false;
  }
  return true;
}

std::vector<float> zeros(int64_t n) { return std::vector<float>(static_cast<size_t>(n), 0.f); }

}  // namespace

TEST_F(GpuBackend, RegistersItselfAndMovesMemory) {
  Backend& g = gpu();
  EXPECT_EQ(&device_backend(Device::CUDA), &g);
  EXPECT_EQ(g.device(), Device::CUDA);
  EXPECT_STREQ(g.name(), "cuda");
  Tensor t = Tensor::empty({3, 5}, DType::F32, Device::CUDA);
  EXPECT_EQ(t.device(), Device::CUDA);

  const std::vector<float> x = randn(1000, 1);
  void* a = g.allocate(4000);
  void* b = g.allocate(4000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 256, 0u);
  g.upload(a, x.data(), 4000);
  g.copy(b, a, 4000);
  std::vector<float> back(1000);
  g.download(back.data(), b, 4000);
  EXPECT_TRUE(same_bits(back, x));
  g.zero(static_cast<float*>(b) + 10, 400);
  g.download(back.data(), b, 4000);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(back[size_t(i)], (i >= 10 && i < 110) ? 0.f : x[size_t(i)]) << i;
  g.synchronize();
  g.deallocate(a);
  g.deallocate(b);
}

TEST_F(GpuBackend, ElementwiseAndRowMovesAreExact) {
  const int64_t n = 100003, rows = 40, cols = 37, ld_src = 41, ld_dst = 50, rep = 4, group = 3;
  auto a = randn(size_t(n), 2), b = randn(size_t(n), 3);
  auto src = randn(size_t(rows * group * ld_src), 4), dst0 = randn(size_t(rows * ld_dst), 5);
  auto run = [&](Backend& be) {
    Buf<float> A(be, a), B(be, b), Y(be, zeros(n)), S(be, src), D1(be, dst0), D2(be, dst0);
    be.add(Y.get(), A.get(), B.get(), n);
    be.add(A.get(), A.get(), B.get(), n);  // y aliasing a
    be.copy_rows(D1.get(), ld_dst, S.get(), ld_src, rows, cols, rep);
    be.sum_row_groups(D2.get(), ld_dst, S.get(), ld_src, rows, cols, group);
    return std::vector<std::vector<float>>{Y.host(), A.host(), D1.host(), D2.host()};
  };
  const auto want = run(cpu()), got = run(gpu());
  EXPECT_TRUE(same_bits(got[0], want[0])) << "add";
  EXPECT_TRUE(same_bits(got[1], want[1])) << "add in place";
  EXPECT_TRUE(same_bits(got[2], want[2])) << "copy_rows";
  EXPECT_TRUE(same_bits(got[3], want[3])) << "sum_row_groups";
}

TEST_F(GpuBackend, SumsAreF64AndDeterministic) {
  for (int64_t n : {int64_t(1), int64_t(77), int64_t(1) << 20, (int64_t(1) << 22) + 5}) {
    auto x = randn(size_t(n), 6, 2.f);
    Buf<float> X(gpu(), x);
    const double s = gpu().sum(X.get(), n), q = gpu().sum_squares(X.get(), n);
    EXPECT_NEAR(s, cpu().sum(x.data(), n), 1e-9 * std::sqrt(double(n)) + 1e-12) << n;
    EXPECT_NEAR(q, cpu().sum_squares(x.data(), n), 1e-12 * double(n)) << n;
    EXPECT_EQ(gpu().sum(X.get(), n), s) << "run twice";
    EXPECT_EQ(gpu().sum_squares(X.get(), n), q) << "run twice";
  }
}

// The optimizer's gradient norm: all segments before one wait, the same bits as one call each.
TEST_F(GpuBackend, SumSquaresOverSegmentsEqualsTheLoop) {
  auto x = randn(size_t(100000), 9);
  Buf<float> X(gpu(), x);
  const std::vector<int64_t> begin{0, 16, 1000, 5000, 99990}, length{10, 0, 3000, 90000, 10};
  double loop = 0;
  for (size_t i = 0; i < begin.size(); ++i) loop += gpu().sum_squares(X.get() + begin[i], length[i]);
  EXPECT_EQ(gpu().sum_squares_segments(X.get(), begin.data(), length.data(), int64_t(begin.size())), loop);
  EXPECT_NEAR(loop, cpu().sum_squares_segments(x.data(), begin.data(), length.data(), int64_t(begin.size())),
              1e-12 * 1e5);
}

TEST_F(GpuBackend, EmbeddingExactAndDeterministic) {
  const int64_t V = 500, D = 96, N = 3000;
  std::mt19937 rng(7);
  std::vector<int32_t> ids(static_cast<size_t>(N));
  for (auto& id : ids) id = int32_t(std::min(rng() % V, rng() % V));  // skewed: many repeats
  auto table = randn(size_t(V * D), 8), dout = randn(size_t(N * D), 9), dtable = randn(size_t(V * D), 10);
  auto run = [&](Backend& be) {
    Buf<int32_t> I(be, ids);
    Buf<float> Tb(be, table), O(be, zeros(N * D)), dO(be, dout), dT(be, dtable);
    be.embedding_forward(O.get(), I.get(), Tb.get(), N, D);
    be.embedding_backward(dT.get(), I.get(), dO.get(), N, D);
    return std::vector<std::vector<float>>{O.host(), dT.host()};
  };
  const auto want = run(cpu()), got = run(gpu()), again = run(gpu());
  EXPECT_TRUE(same_bits(got[0], want[0])) << "embedding forward";
  EXPECT_TRUE(same_bits(got[1], want[1])) << "embedding backward: the CPU's additions in the CPU's order";
  EXPECT_TRUE(same_bits(again[1], got[1])) << "embedding backward run twice";
}

TEST_F(GpuBackend, Layers) {
  const int64_t N = 200, D = 192, V = 1000;
  auto x = randn(size_t(N * D), 11), w = randn(size_t(D), 12), dy = randn(size_t(N * D), 13);
  auto logits = randn(size_t(N * V), 14, 3.f);
  std::vector<int32_t> targets(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) targets[size_t(i)] = int32_t((i * 37) % V);
  const int64_t T = 20, B = N / T, H = 2;  // rope over [B, T, H, 96] with dim 64 at offset 32
  std::vector<float> cos(size_t(T * 32)), sin(size_t(T * 32));
  rope_tables(cos.data(), sin.data(), T, 64, 10000.0);
  auto run = [&](Backend& be) {
    Buf<float> X(be, x), W(be, w), dY(be, dy), Y(be, zeros(N * D)), R(be, zeros(N)), dX(be, x), dW(be, w);
    be.rmsnorm_forward(Y.get(), R.get(), X.get(), W.get(), N, D, 1e-6f);
    be.rmsnorm_backward(dX.get(), dW.get(), dY.get(), X.get(), W.get(), R.get(), N, D, /*accumulate_dx=*/true);
    Buf<float> H1(be, zeros(N * D)), dG(be, zeros(N * D)), dU(be, zeros(N * D));
    be.swiglu_forward(H1.get(), X.get(), dY.get(), N * D);
    be.swiglu_backward(dG.get(), dU.get(), Y.get(), X.get(), dY.get(), N * D);
    // SwiGLU at bf16 (MLPs at bf16 keep g and u in bf16): h widened back to compare.
    Buf<uint16_t> Gb(be, std::vector<uint16_t>(size_t(N * D))), Ub(be, std::vector<uint16_t>(size_t(N * D))),
        Hb(be, std::vector<uint16_t>(size_t(N * D)));
    Buf<float> H2(be, zeros(N * D)), dG2(be, zeros(N * D)), dU2(be, zeros(N * D));
    be.cast_f32_to_bf16(Gb.get(), X.get(), N * D);
    be.cast_f32_to_bf16(Ub.get(), dY.get(), N * D);
    be.swiglu_forward_bf16(Hb.get(), Gb.get(), Ub.get(), N * D);
    be.cast_bf16_to_f32(H2.get(), Hb.get(), N * D);
    be.swiglu_backward_bf16(dG2.get(), dU2.get(), Y.get(), Gb.get(), Ub.get(), N * D);
    Buf<float> C(be, cos), S(be, sin), Q(be, x);
    be.rope_apply(Q.get() + 32, C.get(), S.get(), B, T, H, 2 * 96, 96, 64, false);
    be.rope_apply(Q.get() + 32 + 96, C.get(), S.get(), B, T, 1, 2 * 96, 0, 64, true);
    Buf<float> L(be, logits), loss(be, zeros(N)), lse(be, zeros(N)), dL(be, zeros(N * V));
    Buf<int32_t> tg(be, targets);
    be.cross_entropy_forward(loss.get(), lse.get(), L.get(), tg.get(), N, V);
    be.cross_entropy_backward(dL.get(), L.get(), lse.get(), tg.get(), 0.5f, N, V);
    return std::vector<std::vector<float>>{Y.host(), R.host(),    dX.host(),  dW.host(), H1.host(), dG.host(),
                                           dU.host(), Q.host(), loss.host(), lse.host(), dL.host(), H2.host(),
                                           dG2.host(), dU2.host()};
  };
  const auto want = run(cpu()), got = run(gpu());
  const char* names[] = {"rmsnorm y", "rstd",      "rmsnorm dx", "rmsnorm dw", "swiglu h", "swiglu dg",
                         "swiglu du", "rope",      "ce losses",  "ce lse",     "ce dlogits", "swiglu h bf16",
                         "swiglu dg bf16", "swiglu du bf16"};
  const double tols[] = {1e-5, 1e-5, 1e-4, 1e-4, 1e-6, 1e-6, 1e-6, 1e-6, 1e-5, 1e-5, 1e-6, 1e-2, 1e-6, 1e-6};
  for (size_t i = 0; i < want.size(); ++i) expect_close(got[i], want[i], tols[i], names[i]);
}

TEST_F(GpuBackend, GemmAndLinearAtEveryPrecision) {
  const int64_t M = 200, in = 300, out = 260;  // partial fp8 tiles along every axis
  auto x = randn(size_t(M * in), 15), W = randn(size_t(out * in), 16, 0.05f), dy = randn(size_t(M * out), 17);
  auto y0 = randn(size_t(M * out), 18), dx0 = randn(size_t(M * in), 19), dW0 = randn(size_t(out * in), 20);
  for (Precision p : {Precision::FP32, Precision::BF16, Precision::FP8}) {
    auto run = [&](Backend& be) {
      Buf<float> X(be, x), Wt(be, W), dY(be, dy), Y(be, y0), Y2(be, y0), dX(be, dx0), dW(be, dW0), G(be, y0);
      be.linear_forward(Y.get(), X.get(), Wt.get(), M, in, out, false, p);
      be.linear_forward(Y2.get(), X.get(), Wt.get(), M, in, out, true, p);
      be.linear_backward(dX.get(), dW.get(), dY.get(), X.get(), Wt.get(), M, in, out, /*accumulate_dx=*/true, p);
      be.gemm(false, true, M, out, in, 0.5f, X.get(), in, Wt.get(), in, 0.25f, G.get(), out);
      return std::vector<std::vector<float>>{Y.host(), Y2.host(), dX.host(), dW.host(), G.host()};
    };
    const auto want = run(cpu()), got = run(gpu());
    const std::string tag = precision_name(p);
    expect_close(got[0], want[0], 1e-5, (tag + " y").c_str());
    expect_close(got[1], want[1], 1e-5, (tag + " y accumulated").c_str());
    expect_close(got[2], want[2], 1e-5, (tag + " dx").c_str());
    expect_close(got[3], want[3], 1e-5, (tag + " dW").c_str());
    expect_close(got[4], want[4], 1e-5, "gemm");
  }
  // bf16 with x cast once (linear_*_bf16) against the CPU's (the same bits as its f32-input layer).
  auto run_bf16_input = [&](Backend& be) {
    Buf<float> X(be, x), Wt(be, W), dY(be, dy), Y(be, y0), dX(be, dx0), dW(be, dW0);
    Buf<uint16_t> Xb(be, std::vector<uint16_t>(size_t(M * in)));
    be.cast_f32_to_bf16(Xb.get(), X.get(), M * in);
    be.linear_forward_bf16(Y.get(), Xb.get(), Wt.get(), M, in, out, true);
    be.linear_backward_bf16(dX.get(), dW.get(), dY.get(), Xb.get(), Wt.get(), M, in, out, /*accumulate_dx=*/true);
    return std::vector<std::vector<float>>{Y.host(), dX.host(), dW.host()};
  };
  const auto want = run_bf16_input(cpu()), got = run_bf16_input(gpu());
  for (size_t i = 0; i < want.size(); ++i)
    expect_close(got[i], want[i], 1e-5, ("bf16 input, output " + std::to_string(i)).c_str());
}

TEST_F(GpuBackend, Fp8QuantisedValuesAreTheCpus) {
  const int64_t R = 300, C = 260;
  auto x = randn(size_t(R * C), 21, 4.f);
  for (int64_t c = 0; c < 128; ++c) x[size_t(c)] = 0.f;  // an all-zero tile
  x[size_t(3 * C + 140)] = INFINITY;                      // a non-finite tile
  x[size_t(9 * C + 7)] = 1e-30f;
  for (auto [tr, tc] : {std::pair<int64_t, int64_t>{1, 128}, {128, 1}, {128, 128}}) {
    std::vector<float> want(x.size());
    fp8_quantize(want.data(), nullptr, nullptr, x.data(), R, C, tr, tc);
    auto xd = to_device(x);
    cuda::DeviceBuffer<float> q(R * C);
    cuda::fp8_quantize(q.get(), xd.get(), R, C, tr, tc);
    EXPECT_TRUE(same_values(to_host(q), want)) << tr << "x" << tc;
    cuda::fp8_quantize(xd.get(), xd.get(), R, C, tr, tc);  // in place
    EXPECT_TRUE(same_values(to_host(xd), want)) << tr << "x" << tc << " in place";
  }
}

namespace {

// Expert groups of different sizes, one of them empty, and weights per group.
struct Groups {
  int64_t G = 5, in = 136, out = 200;
  std::vector<int64_t> offsets{0, 37, 37, 200, 201, 330};
  int64_t rows() const { return offsets.back(); }
};

}  // namespace

TEST_F(GpuBackend, GroupedLinearMatchesTheLoopAndTheCpu) {
  const Groups gr;
  const int64_t G = gr.G, in = gr.in, out = gr.out, P = gr.rows();
  auto x = randn(size_t(P * in), 22), dy = randn(size_t(P * out), 23), dx0 = randn(size_t(P * in), 24);
  std::vector<std::vector<float>> W, dW0;
  for (int64_t g = 0; g < G; ++g) {
    W.push_back(randn(size_t(out * in), 30 + uint32_t(g), 0.05f));
    dW0.push_back(randn(size_t(out * in), 40 + uint32_t(g)));
  }
  for (Precision p : {Precision::FP32, Precision::BF16, Precision::FP8})
    for (bool accumulate_dx : {false, true}) {
      // mode 0: the backend (grouped), 1: the per-group loop (GPU only), 2: dx null, 3: x cast to
      // bf16 first and the grouped_linear_*_bf16 ops (bf16 only)
      auto run = [&](Backend& be, int mode) {
        Buf<float> X(be, x), dY(be, dy), Y(be, zeros(P * out)), dX(be, dx0);
        std::vector<std::unique_ptr<Buf<float>>> Wb, dWb;
        std::vector<const float*> Wp;
        std::vector<float*> dWp;
        for (int64_t g = 0; g < G; ++g) {
          Wb.push_back(std::make_unique<Buf<float>>(be, W[size_t(g)]));
          dWb.push_back(std::make_unique<Buf<float>>(be, dW0[size_t(g)]));
          Wp.push_back(Wb.back()->get());
          dWp.push_back(dWb.back()->get());
        }
        const int64_t* off = gr.offsets.data();
        float* dx = mode == 2 ? nullptr : dX.get();
        if (mode == 3) {
          Buf<uint16_t> Xb(be, std::vector<uint16_t>(size_t(P * in)));
          be.cast_f32_to_bf16(Xb.get(), X.get(), P * in);
          be.grouped_linear_forward_bf16(Y.get(), Xb.get(), Wp.data(), off, G, in, out);
          be.grouped_linear_backward_bf16(dx, dWp.data(), dY.get(), Xb.get(), Wp.data(), off, G, in, out,
                                          accumulate_dx);
        } else if (mode == 1) {
          cuda::grouped_linear_forward_loop(Y.get(), X.get(), Wp.data(), off, G, in, out, p);
          cuda::grouped_linear_backward_loop(dx, dWp.data(), dY.get(), X.get(), Wp.data(), off, G, in, out,
                                             accumulate_dx, p);
        } else {
          be.grouped_linear_forward(Y.get(), X.get(), Wp.data(), off, G, in, out, p);
          be.grouped_linear_backward(dx, dWp.data(), dY.get(), X.get(), Wp.data(), off, G, in, out, accumulate_dx, p);
        }
        std::vector<std::vector<float>> r{Y.host(), dX.host()};
        for (auto& d : dWb) r.push_back(d->host());
        return r;
      };
      const auto want = run(cpu(), 0), got = run(gpu(), 0), loop = run(gpu(), 1), no_dx = run(gpu(), 2);
      const std::string tag = std::string(precision_name(p)) + (accumulate_dx ? " accumulate" : "");
      for (size_t i = 0; i < want.size(); ++i) {
        const std::string what = tag + (i == 0 ? " y" : i == 1 ? " dx" : " dW[" + std::to_string(i - 2) + "]");
        expect_close(got[i], want[i], 1e-5, (what + " vs cpu").c_str());
        expect_close(got[i], loop[i], 1e-5, (what + " vs loop").c_str());
        if (i != 1) expect_close(no_dx[i], got[i], 1e-5, (what + " without dx").c_str());
      }
      EXPECT_TRUE(same_bits(no_dx[1], dx0)) << "dx null: nothing written";
      if (p == Precision::BF16) {  // the same GEMMs on the same bf16 operands, cast once before
        const auto cast_first = run(gpu(), 3), cast_first_cpu = run(cpu(), 3);
        for (size_t i = 0; i < want.size(); ++i) {
          expect_close(cast_first[i], got[i], 1e-6, (tag + " bf16 input vs f32 input").c_str());
          EXPECT_TRUE(same_bits(cast_first_cpu[i], want[i])) << tag << " output " << i << ": cpu, bf16 input";
        }
      }
      EXPECT_TRUE(same_bits(got[2 + 1], dW0[1])) << "the empty group's dW is untouched";
    }
}

// The FP8 row methods through the interface: quantised rows and their values exact; the fused
// producers' f32 outputs to rounding (tests/gpu/test_gpu_fp8_rows.cpp checks their codes against
// the GPU's own outputs); the GEMMs on rows, plain and grouped (an empty group, groups of 37, 163,
// 1 and 129 rows: tails below 16), to 1e-5.
TEST_F(GpuBackend, Fp8RowsThroughTheInterface) {
  const Groups gr;
  const int64_t G = gr.G, in = gr.in, out = gr.out, P = gr.rows();
  const int64_t ld = kern::Fp8Rows::ld_of(in), tiles = kern::Fp8Rows::tiles_of(in);
  auto x = randn(size_t(P * in), 25, 3.f), u = randn(size_t(P * in), 26), w = randn(size_t(in), 27);
  std::vector<std::vector<float>> W;
  for (int64_t g = 0; g < G; ++g) W.push_back(randn(size_t(out * in), 50 + uint32_t(g), 0.05f));
  std::vector<int32_t> slot_of(static_cast<size_t>(P));
  for (int64_t p = 0; p < P; ++p) slot_of[size_t(p)] = int32_t((p * 13) % P);
  struct Out {
    std::vector<uint8_t> codes;
    std::vector<float> scales, deq, y_norm, h, xs, y, y_grouped;
  };
  auto run = [&](Backend& be) {
    Buf<float> X(be, x), U(be, u), Wn(be, w), Deq(be, zeros(P * in)), Yn(be, zeros(P * in)), rstd(be, zeros(P)),
        H(be, zeros(P * in)), Xs(be, zeros(P * in)), Y(be, zeros(P * out)), Yg(be, zeros(P * out));
    Buf<uint8_t> codes(be, std::vector<uint8_t>(size_t(P * ld))), codes2(be, std::vector<uint8_t>(size_t(P * ld)));
    Buf<float> scales(be, zeros(P * tiles)), scales2(be, zeros(P * tiles));
    Buf<int32_t> S(be, slot_of);
    const kern::Fp8Rows q{codes.get(), scales.get(), P, in}, q2{codes2.get(), scales2.get(), P, in};
    std::vector<std::unique_ptr<Buf<float>>> Wb;
    std::vector<const float*> Wp;
    for (int64_t g = 0; g < G; ++g) {
      Wb.push_back(std::make_unique<Buf<float>>(be, W[size_t(g)]));
      Wp.push_back(Wb.back()->get());
    }
    be.quantize_rows(q, X.get());
    be.dequantize_rows(Deq.get(), q);
    be.linear_forward_fp8(Y.get(), q, Wp[0], out, false);
    be.grouped_linear_forward_fp8(Yg.get(), q, Wp.data(), gr.offsets.data(), G, out);
    be.moe_permute_fp8(Xs.get(), q2, X.get(), q, S.get(), 1);
    Out o{codes.host(), scales.host(), Deq.host(), {}, {}, Xs.host(), Y.host(), Yg.host()};
    EXPECT_TRUE(same_bits(codes2.host(), [&] {  // the permuted codes are the rows' codes moved
      std::vector<uint8_t> moved(size_t(P * ld));
      for (int64_t p = 0; p < P; ++p)
        std::copy_n(o.codes.begin() + slot_of[size_t(p)] * ld, ld, moved.begin() + p * ld);
      return moved;
    }())) << be.name();
    be.rmsnorm_forward_fp8(Yn.get(), rstd.get(), q2, X.get(), Wn.get(), 1e-6f);
    o.y_norm = Yn.host();
    be.swiglu_forward_fp8(H.get(), q2, X.get(), U.get());
    o.h = H.host();
    return o;
  };
  const Out want = run(cpu()), got = run(gpu());
  EXPECT_TRUE(same_bits(got.codes, want.codes));
  EXPECT_TRUE(same_bits(got.scales, want.scales));
  EXPECT_TRUE(same_bits(got.deq, want.deq));
  EXPECT_TRUE(same_bits(got.xs, want.xs));
  expect_close(got.y_norm, want.y_norm, 1e-6, "rmsnorm_forward_fp8 output");
  expect_close(got.h, want.h, 1e-6, "swiglu_forward_fp8 output");
  expect_close(got.y, want.y, 1e-5, "linear_forward_fp8");
  expect_close(got.y_grouped, want.y_grouped, 1e-5, "grouped_linear_forward_fp8");
}

// At bf16 both cores read bf16 q, k, v, dO, P and dS; P and dS are rounded from f32 values whose
// last bits depend on the accumulation order, so a few of them round the other way: 2e-3 for o,
// 5e-3 for the gradients (the lse comes from exact bf16 products: 1e-5).
TEST_F(GpuBackend, AttentionForwardAndBackward) {
  for (bool bf16 : {false, true}) {
    // MLA-like: q, k [N, H, dqk]; v inside a wider row [N, H, nope + dv] at offset nope; o [N, H, dv].
    AttentionLayout l;
    l.B = 2, l.T = 70, l.H = 3, l.dqk = 24, l.dv = 16, l.scale = 0.2f, l.bf16 = bf16;
    const int64_t N = l.B * l.T, nope = 8, kv = nope + l.dv;
    l.q_ld = l.H * l.dqk, l.q_hs = l.dqk, l.k_ld = l.H * l.dqk, l.k_hs = l.dqk;
    l.v_ld = l.H * kv, l.v_hs = kv, l.o_ld = l.H * l.dv, l.o_hs = l.dv;
    auto q = randn(size_t(N * l.q_ld), 50), k = randn(size_t(N * l.k_ld), 51), kvb = randn(size_t(N * l.v_ld), 52);
    auto dout = randn(size_t(N * l.o_ld), 53), sentinel = randn(size_t(N * l.v_ld), 54);
    auto run = [&](Backend& be) {
      Buf<float> Q(be, q), K(be, k), KV(be, kvb), O(be, zeros(N * l.o_ld)), lse(be, zeros(l.B * l.H * l.T));
      Buf<float> dO(be, dout), dQ(be, zeros(N * l.q_ld)), dK(be, zeros(N * l.k_ld)), dKV(be, sentinel);
      be.attention_forward(O.get(), lse.get(), Q.get(), K.get(), KV.get() + nope, l);
      be.attention_backward(dQ.get(), dK.get(), dKV.get() + nope, dO.get(), Q.get(), K.get(), KV.get() + nope,
                            lse.get(), l);
      return std::vector<std::vector<float>>{O.host(), lse.host(), dQ.host(), dK.host(), dKV.host()};
    };
    const auto want = run(cpu()), got = run(gpu());
    const double fwd = bf16 ? 2e-3 : 1e-5, bwd = bf16 ? 5e-3 : 1e-4;
    const std::string tag = bf16 ? "bf16 " : "fp32 ";
    expect_close(got[0], want[0], fwd, (tag + "o").c_str());
    expect_close(got[1], want[1], 1e-5, (tag + "lse").c_str());
    expect_close(got[2], want[2], bwd, (tag + "dq").c_str());
    expect_close(got[3], want[3], bwd, (tag + "dk").c_str());
    expect_close(got[4], want[4], bwd, (tag + "dv").c_str());
    for (int64_t r = 0; r < N * l.H; ++r)  // the nope part of each head's row is not dv's
      for (int64_t c = 0; c < nope; ++c) EXPECT_EQ(got[4][size_t(r * kv + c)], sentinel[size_t(r * kv + c)]);
  }
}

// The core on q, k, v kept as bf16 (the model at bf16) reads them in place of the copies the f32
// op casts: the same cuBLASLt calls on the same operands, so the same bits, forward and backward.
TEST_F(GpuBackend, AttentionOnBf16InputsIsTheAttentionOnTheirValues) {
  AttentionLayout l;
  l.B = 2, l.T = 70, l.H = 3, l.dqk = 24, l.dv = 16, l.scale = 0.2f, l.bf16 = true;
  const int64_t N = l.B * l.T;
  l.q_ld = l.k_ld = l.H * l.dqk, l.q_hs = l.k_hs = l.dqk, l.v_ld = l.o_ld = l.H * l.dv, l.v_hs = l.o_hs = l.dv;
  auto q = randn(size_t(N * l.q_ld), 60), k = randn(size_t(N * l.k_ld), 61), v = randn(size_t(N * l.v_ld), 62);
  auto dout = randn(size_t(N * l.o_ld), 63);
  Backend& be = gpu();
  const FusedAttentionOff gemm_path;  // the same bits as the f32-input op: the GEMM path
  auto run = [&](bool bf16_inputs) {
    Buf<float> Q(be, q), K(be, k), V(be, v), O(be, zeros(N * l.o_ld)), lse(be, zeros(l.B * l.H * l.T));
    Buf<float> dO(be, dout), dQ(be, zeros(N * l.q_ld)), dK(be, zeros(N * l.k_ld)), dV(be, zeros(N * l.v_ld));
    Buf<uint16_t> Qb(be, std::vector<uint16_t>(q.size())), Kb(be, std::vector<uint16_t>(k.size())),
        Vb(be, std::vector<uint16_t>(v.size()));
    be.cast_f32_to_bf16(Qb.get(), Q.get(), int64_t(q.size()));
    be.cast_f32_to_bf16(Kb.get(), K.get(), int64_t(k.size()));
    be.cast_f32_to_bf16(Vb.get(), V.get(), int64_t(v.size()));
    if (bf16_inputs) {
      be.attention_forward_bf16(O.get(), lse.get(), Qb.get(), Kb.get(), Vb.get(), l);
      be.attention_backward_bf16(dQ.get(), dK.get(), dV.get(), dO.get(), nullptr, Qb.get(), Kb.get(), Vb.get(),
                                 lse.get(), l);
    } else {
      be.attention_forward(O.get(), lse.get(), Q.get(), K.get(), V.get(), l);
      be.attention_backward(dQ.get(), dK.get(), dV.get(), dO.get(), Q.get(), K.get(), V.get(), lse.get(), l);
    }
    return std::vector<std::vector<float>>{O.host(), lse.host(), dQ.host(), dK.host(), dV.host()};
  };
  const auto want = run(false), got = run(true);
  const char* names[] = {"o", "lse", "dq", "dk", "dv"};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(same_bits(got[i], want[i])) << names[i];
}

// Inside a Bf16WeightScope the bf16 GEMMs read one device copy of each weight matrix, and the fp8
// GEMMs its E4M3 operands (forward and dgrad) or its fake-quantised values: made on first use,
// counted by bf16_weights_bytes, dropped when the scope closes or the storage is forgotten; the
// same bits as without the scope.
namespace {
void expect_weight_copies_kept(Backend& gpu, Precision prec) {
  const Groups gr;
  const int64_t G = gr.G, in = gr.in, out = gr.out, P = gr.rows();
  auto x = randn(size_t(P * in), 80), dy = randn(size_t(P * out), 81);
  std::vector<float> W_all = randn(size_t(G * out * in), 82, 0.05f);
  auto run = [&](bool scoped, int64_t* kept_bytes) {
    Buf<float> X(gpu, x), dY(gpu, dy), W(gpu, W_all), Y(gpu, zeros(P * out)), Yd(gpu, zeros(P * out));
    Buf<float> dX(gpu, zeros(P * in)), dXd(gpu, zeros(P * in)), dW(gpu, zeros(G * out * in));
    std::vector<const float*> Wp;
    std::vector<float*> dWp;
    for (int64_t g = 0; g < G; ++g) Wp.push_back(W.get() + g * out * in), dWp.push_back(dW.get() + g * out * in);
    std::unique_ptr<Bf16WeightScope> scope;
    if (scoped) scope = std::make_unique<Bf16WeightScope>();
    const int64_t* off = gr.offsets.data();
    for (int rep = 0; rep < 2; ++rep) {  // the second pass reads the kept copies
      gpu.grouped_linear_forward(Y.get(), X.get(), Wp.data(), off, G, in, out, prec);
      gpu.grouped_linear_backward(dX.get(), dWp.data(), dY.get(), X.get(), Wp.data(), off, G, in, out, false, prec);
      gpu.linear_forward(Yd.get(), X.get(), Wp[0], P, in, out, false, prec);
      gpu.linear_backward(dXd.get(), nullptr, dY.get(), X.get(), Wp[0], P, in, out, false, prec);
    }
    *kept_bytes = bf16_weights_bytes();
    if (scoped) {
      bf16_weights_forget(W.get(), G * out * in);
      EXPECT_EQ(bf16_weights_bytes(), 0) << "forgotten with their storage";
    }
    return std::vector<std::vector<float>>{Y.host(), dX.host(), dW.host(), Yd.host(), dXd.host()};
  };
  int64_t bytes_plain = -1, bytes_scoped = -1;
  const auto plain = run(false, &bytes_plain), scoped = run(true, &bytes_scoped);
  EXPECT_EQ(bytes_plain, 0);
  if (prec == Precision::BF16)  // one copy per expert with rows (4 of 5; expert 0's serves the dense calls too)
    EXPECT_EQ(bytes_scoped, 4 * out * in * 2);
  else  // at least one form of each of the 4 experts with rows: the codes, or the f32 values
    EXPECT_GE(bytes_scoped, 4 * out * in);
  EXPECT_EQ(bf16_weights_bytes(), 0) << "freed when the scope closed";
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(same_bits(scoped[i], plain[i])) << "output " << i;
}
}  // namespace

TEST_F(GpuBackend, Bf16WeightCopiesAreKeptOnTheDevice) { expect_weight_copies_kept(gpu(), Precision::BF16); }
TEST_F(GpuBackend, Fp8WeightOperandsAreKeptOnTheDevice) { expect_weight_copies_kept(gpu(), Precision::FP8); }

TEST_F(GpuBackend, RoutingDispatchAndOptimizer) {
  kern::RouterSpec sp;
  sp.E = 16, sp.K = 4, sp.groups = 4, sp.groups_per_token = 2, sp.routed_scaling = 2.5f;
  const int64_t N = 256, E = sp.E, K = sp.K, P = N * K, D = 40, T = 64;
  std::mt19937 rng(60);
  std::vector<float> logits(size_t(N * E));
  std::vector<int> order(static_cast<size_t>(E));
  for (int64_t n = 0; n < N; ++n) {  // a shuffled ladder per token: choices far from any tie
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t e = 0; e < E; ++e) logits[size_t(n * E + e)] = -1.f + 0.13f * float(order[size_t(e)]);
  }
  std::vector<float> bias(static_cast<size_t>(E), 0.f), load(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) load[size_t(e)] = float((e * 7) % 5);
  auto dw = randn(size_t(P), 61), f = randn(size_t(N / T * E), 62), x = randn(size_t(N * D), 63);
  auto ys = randn(size_t(P * D), 64), dy = randn(size_t(N * D), 65), w0 = randn(size_t(5000), 66);
  auto g = randn(size_t(5000), 67), m0 = randn(size_t(5000), 68, 0.1f);
  std::vector<float> v0(5000, 0.01f);
  kern::RouterLossGrad lg;
  lg.aux = 1e-3f, lg.z = 2e-3f, lg.tokens = N;
  kern::AdamWStep step;
  step.step_size = 1e-3f, step.decay = 0.999f, step.bc2 = 0.5f;
  std::vector<int32_t> idx_cpu;
  std::vector<int64_t> offsets_cpu;
  auto run = [&](Backend& be, std::vector<int32_t>* idx_out, std::vector<int64_t>* off_out) {
    Buf<float> L(be, logits), Bi(be, bias), S(be, zeros(N * E)), Wt(be, zeros(P)), dW(be, dw), F(be, f);
    Buf<int32_t> I(be, std::vector<int32_t>(size_t(P)));
    be.router_forward(S.get(), I.get(), Wt.get(), L.get(), Bi.get(), N, sp);
    Buf<float> dL(be, zeros(N * E)), Ld(be, load);
    be.router_backward(dL.get(), S.get(), L.get(), I.get(), dW.get(), F.get(), T, lg, N, sp);
    be.router_bias_update(Bi.get(), Ld.get(), E, 1e-3f);
    Buf<int64_t> Off(be, std::vector<int64_t>(size_t(E + 1)));
    Buf<int32_t> slot(be, std::vector<int32_t>(size_t(P))), pos(be, std::vector<int32_t>(size_t(P)));
    be.moe_dispatch_plan(Off.get(), slot.get(), pos.get(), I.get(), P, E);
    Buf<float> X(be, x), XS(be, zeros(P * D)), YS(be, ys), Y(be, zeros(N * D)), dY(be, dy), dwc(be, zeros(P));
    Buf<float> dYS(be, zeros(P * D)), dX(be, zeros(N * D));
    be.moe_permute(XS.get(), X.get(), slot.get(), P, K, D);
    be.moe_unpermute(Y.get(), YS.get(), pos.get(), Wt.get(), N, K, D, false);
    be.moe_unpermute_backward(dwc.get(), dYS.get(), dY.get(), YS.get(), pos.get(), Wt.get(), N, K, D);
    be.moe_permute_backward(dX.get(), dYS.get(), pos.get(), N, K, D);
    Buf<float> Wo(be, w0), Gr(be, g), Mo(be, m0), Vo(be, v0);
    be.adamw_update(Wo.get(), Mo.get(), Vo.get(), Gr.get(), 5000, step);
    // The router's losses on the device; multi-tensor AdamW over segments with a gap and an empty one.
    Buf<float> Lo(be, zeros(2)), Fb(be, zeros(N / T * E));
    be.router_loss_stats(Lo.get(), Fb.get(), S.get(), L.get(), I.get(), N / T, T, 0.01f, 0.002f, sp);
    const std::vector<kern::AdamWSegment> segs{{0, 1000, true}, {1200, 0, false}, {1200, 1700, false},
                                               {3000, 2000, true}};
    Buf<float> Ws(be, w0), Ms(be, m0), Vs(be, v0);
    be.adamw_update_segments(Ws.get(), Ms.get(), Vs.get(), Gr.get(), segs.data(), 4, step);
    *idx_out = I.host();
    auto o = Off.host();
    *off_out = o;
    auto as_float = [](const std::vector<int32_t>& v) { return std::vector<float>(v.begin(), v.end()); };
    return std::vector<std::vector<float>>{S.host(), Wt.host(),  dL.host(), Bi.host(), as_float(slot.host()),
                                           as_float(pos.host()), XS.host(), Y.host(),  dwc.host(), dYS.host(),
                                           dX.host(),            Wo.host(), Mo.host(), Vo.host(),
                                           Lo.host(),            Fb.host(), Ws.host(), Ms.host(), Vs.host()};
  };
  std::vector<int32_t> idx_gpu;
  std::vector<int64_t> offsets_gpu;
  const auto want = run(cpu(), &idx_cpu, &offsets_cpu), got = run(gpu(), &idx_gpu, &offsets_gpu);
  EXPECT_EQ(idx_gpu, idx_cpu) << "routing choices";
  EXPECT_EQ(offsets_gpu, offsets_cpu) << "dispatch offsets";
  const char* names[] = {"scores",       "weights",       "dlogits",          "bias",    "slot_of",
                         "pos_of",       "permute",       "unpermute",        "unpermute dw",
                         "unpermute dys", "permute backward", "adamw w",     "adamw m", "adamw v",
                         "router losses", "balance f",        "adamw segments w", "adamw segments m",
                         "adamw segments v"};
  const double tols[] = {1e-6, 1e-6, 1e-5, 0, 0, 0, 0, 1e-6, 1e-5, 1e-6, 1e-6, 1e-6, 1e-6, 1e-6,
                         1e-5, 0,    1e-6, 1e-6, 1e-6};
  for (size_t i = 0; i < want.size(); ++i) {
    if (tols[i] == 0)
      EXPECT_TRUE(same_bits(got[i], want[i])) << names[i];
    else
      expect_close(got[i], want[i], tols[i], names[i]);
  }
}

TEST_F(GpuBackend, DeterministicOpsGiveTheSameBitsTwice) {
  const int64_t N = 4000, D = 256;
  auto x = randn(size_t(N * D), 70), w = randn(size_t(D), 71), dy = randn(size_t(N * D), 72);
  auto run = [&] {
    Backend& be = gpu();
    Buf<float> X(be, x), W(be, w), dY(be, dy), Y(be, zeros(N * D)), R(be, zeros(N)), dX(be, zeros(N * D)),
        dW(be, zeros(D));
    be.rmsnorm_forward(Y.get(), R.get(), X.get(), W.get(), N, D, 1e-6f);
    be.rmsnorm_backward(dX.get(), dW.get(), dY.get(), X.get(), W.get(), R.get(), N, D, false);
    const double s = be.sum(dX.get(), N * D);
    return std::make_pair(dW.host(), s);
  };
  const auto a = run(), b = run();
  EXPECT_TRUE(same_bits(a.first, b.first)) << "rmsnorm dw";
  EXPECT_EQ(a.second, b.second) << "sum";
}
