// The TokenDispatcher (model/token_dispatcher.h) against a naive reference: which rows each local
// expert gets and in what order, the per-source groups, and the way back (combine and the two
// backwards). Expert parallelism is played by a fake exchange in one process: this process is rank
// `me` of S, and the other ranks send rows of known values and run their experts on what we send.
// Every expert e computes y = (e + 2) * x, so a row that reaches the wrong expert, or comes back to
// the wrong token, changes the result.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "framework/backend.h"
#include "framework/ops.h"
#include "framework/threads.h"
#include "model/token_dispatcher.h"

using namespace moe;

namespace {

constexpr int64_t N = 7, K = 2, D = 3, E = 6;
constexpr int S = 3, kMe = 1;           // this process is rank 1 of 3
constexpr int64_t G = E / S;            // local experts: [kMe*G, (kMe+1)*G)

float scale_of(int64_t e) { return float(e + 2); }

// Rows that rank s sends to our local expert j (s != kMe): a count with zeros among them, values
// that name (s, j, row, column).
int64_t remote_rows(int s, int64_t j) { return (s * 5 + j * 3) % 4; }
float remote_value(int s, int64_t j, int64_t i, int64_t c) { return 1000.f * s + 100.f * j + 10.f * i + c; }

class FakeExchange : public ExpertExchange {
 public:
  void plan(const int64_t* counts_E, int64_t E_, ExchangePlan& p) const override {
    counts_.assign(counts_E, counts_E + E_);
    p.ranks = S;
    p.local_experts = int(G);
    p.send_rows.assign(S, 0);
    for (int64_t e = 0; e < E_; ++e) p.send_rows[e / G] += counts_E[e];
    p.recv_rows.assign(size_t(S * G), 0);
    for (int s = 0; s < S; ++s)
      for (int64_t j = 0; j < G; ++j) p.recv_rows[s * G + j] = s == kMe ? counts_E[kMe * G + j] : remote_rows(s, j);
  }
  // recv: [s][j] blocks; ours are the send rows of our experts, the others' known values.
  void dispatch(const ExchangePlan& p, const float* send, float* recv, int64_t width) const override {
    ASSERT_EQ(width, D);
    sent_.assign(send, send + total(counts_) * D);
    int64_t at = 0;
    for (int s = 0; s < S; ++s)
      for (int64_t j = 0; j < G; ++j)
        for (int64_t i = 0; i < p.recv_rows[s * G + j]; ++i, ++at)
          for (int64_t c = 0; c < D; ++c)
            recv[at * D + c] = s == kMe ? send[(first_row(kMe * G + j) + i) * D + c] : remote_value(s, j, i, c);
  }
  // Our experts' outputs come back from send; the other ranks' experts compute theirs from what
  // dispatch sent. The rows we send back to the other ranks must be their rows through our experts
  // (in backward too: dispatch sent them the same values).
  void combine(const ExchangePlan& p, const float* send, float* recv, int64_t width) const override {
    ASSERT_EQ(width, D);
    int64_t at = 0;
    for (int s = 0; s < S; ++s)
      for (int64_t j = 0; j < G; ++j)
        for (int64_t i = 0; i < p.recv_rows[s * G + j]; ++i, ++at)
          for (int64_t c = 0; c < D; ++c) {
            if (s == kMe)
              recv[(first_row(kMe * G + j) + i) * D + c] = send[at * D + c];
            else
              EXPECT_EQ(send[at * D + c], scale_of(kMe * G + j) * remote_value(s, j, i, c)) << s << " " << j;
          }
    for (int64_t e = 0; e < E; ++e)
      if (e / G != kMe)
        for (int64_t r = first_row(e); r < first_row(e) + counts_[e]; ++r)
          for (int64_t c = 0; c < D; ++c) recv[r * D + c] = scale_of(e) * sent_[r * D + c];
  }

 private:
  static int64_t total(const std::vector<int64_t>& v) {
    int64_t t = 0;
    for (int64_t x : v) t += x;
    return t;
  }
  int64_t first_row(int64_t e) const {
    int64_t r = 0;
    for (int64_t i = 0; i < e; ++i) r += counts_[i];
    return r;
  }
  mutable std::vector<int64_t> counts_;
  mutable std::vector<float> sent_;
};

struct Fixture {
  std::vector<int32_t> idx;  // [N, K], distinct experts per token
  std::vector<float> x, w, dy;
  Tensor idx_NK;
  Fixture() {
    set_num_threads(1);
    for (int64_t n = 0; n < N; ++n) {
      idx.push_back(int32_t((n * 5 + 1) % E));
      idx.push_back(int32_t((n * 5 + 1 + 1 + n % 3) % E));
    }
    for (int64_t i = 0; i < N * D; ++i) x.push_back(0.5f + float(i)), dy.push_back(1.f - 0.25f * float(i));
    for (int64_t i = 0; i < N * K; ++i) w.push_back(0.1f * float(i + 1));
    idx_NK = Tensor::empty({N, K}, DType::I32);
    std::memcpy(idx_NK.raw(), idx.data(), idx.size() * sizeof(int32_t));
  }
  // Rows of our copies for global expert e, in token order (the counting sort is stable).
  std::vector<float> copies_for(int64_t e) const {
    std::vector<float> rows;
    for (int64_t p = 0; p < N * K; ++p)
      if (idx[p] == e) rows.insert(rows.end(), x.begin() + (p / K) * D, x.begin() + (p / K + 1) * D);
    return rows;
  }
};

TokenDispatcher dispatcher(int64_t local, const ExpertExchange* ex) {
  TokenDispatcher d;
  d.D = D, d.E = E, d.K = K, d.local_experts = local, d.exchange = ex;
  return d;
}

// The experts: y = (e + 2) * x over each local expert's rows (first local expert first_e).
void run_experts(float* y, const float* x, const ExpertGroups& g, int64_t first_e) {
  for (int64_t j = 0; j < g.groups(); ++j)
    for (int64_t r = g.offsets[j]; r < g.offsets[j + 1]; ++r)
      for (int64_t c = 0; c < D; ++c) y[r * D + c] = scale_of(first_e + j) * x[r * D + c];
}

// y[n] = sum_k w[n,k] (idx[n,k] + 2) x[n], and its gradients for dy.
void expect_forward_and_backward(const TokenDispatcher& d, const Fixture& f, int64_t first_e) {
  ScratchScope scope;
  DispatchActs a;
  std::vector<float> y(N * D), dx(N * D, 0.f), dw(N * K);
  ExpertRows rows = d.dispatch(f.x.data(), f.idx_NK, N, a, nullptr);
  run_experts(rows.y, rows.x, a.groups, first_e);
  d.combine(y.data(), rows, f.w.data(), N, /*accumulate=*/false, a);
  ExpertGradRows g = d.combine_backward(dw.data(), f.dy.data(), f.w.data(), N, a);
  run_experts(g.dx, g.dy, a.groups, first_e);
  d.dispatch_backward(dx.data(), g, N, a);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < D; ++c) {
      float want_y = 0, want_dx = 0;
      for (int64_t k = 0; k < K; ++k) {
        const float s = scale_of(f.idx[n * K + k]), wk = f.w[n * K + k];
        want_y += wk * s * f.x[n * D + c];
        want_dx += wk * s * f.dy[n * D + c];
      }
      EXPECT_NEAR(y[n * D + c], want_y, 1e-4f * std::abs(want_y)) << "token " << n;
      EXPECT_NEAR(dx[n * D + c], want_dx, 1e-4f * std::abs(want_dx) + 1e-6f) << "token " << n;
    }
  for (int64_t p = 0; p < N * K; ++p) {
    float want = 0;
    for (int64_t c = 0; c < D; ++c) want += f.dy[(p / K) * D + c] * scale_of(f.idx[p]) * f.x[(p / K) * D + c];
    EXPECT_NEAR(dw[p], want, 1e-4f * std::abs(want) + 1e-6f) << "copy " << p;
  }
}

}  // namespace

// One process: expert e gets its copies in token order, one source.
TEST(TokenDispatcher, LocalRowsInExpertOrder) {
  Fixture f;
  const TokenDispatcher d = dispatcher(E, nullptr);
  ScratchScope scope;
  DispatchActs a;
  std::vector<float> load(E, 1.f);
  ExpertRows rows = d.dispatch(f.x.data(), f.idx_NK, N, a, load.data());
  std::vector<float> want;
  std::vector<int64_t> offsets{0};
  for (int64_t e = 0; e < E; ++e) {
    std::vector<float> r = f.copies_for(e);
    want.insert(want.end(), r.begin(), r.end());
    offsets.push_back(int64_t(want.size()) / D);
    EXPECT_EQ(load[e], 1.f + float(r.size() / D)) << "expert " << e;
  }
  EXPECT_EQ(std::vector<float>(rows.x, rows.x + N * K * D), want);
  EXPECT_EQ(a.groups.sources, 1);
  EXPECT_EQ(a.groups.offsets, offsets);
  EXPECT_EQ(a.groups.source_offsets, offsets);
  expect_forward_and_backward(d, f, 0);
}

// Expert parallelism: what arrives [source][expert] reaches the experts [expert][source], each
// source's share where ExpertGroups says.
TEST(TokenDispatcher, ReceivedBlocksReorderedExpertMajor) {
  Fixture f;
  FakeExchange ex;
  const TokenDispatcher d = dispatcher(G, &ex);
  ScratchScope scope;
  DispatchActs a;
  ExpertRows rows = d.dispatch(f.x.data(), f.idx_NK, N, a, nullptr);
  std::vector<float> want;
  std::vector<int64_t> offsets{0}, source_offsets{0};
  for (int64_t j = 0; j < G; ++j) {
    for (int s = 0; s < S; ++s) {
      if (s == kMe) {
        std::vector<float> r = f.copies_for(kMe * G + j);
        want.insert(want.end(), r.begin(), r.end());
      } else {
        for (int64_t i = 0; i < remote_rows(s, j); ++i)
          for (int64_t c = 0; c < D; ++c) want.push_back(remote_value(s, j, i, c));
      }
      source_offsets.push_back(int64_t(want.size()) / D);
    }
    offsets.push_back(int64_t(want.size()) / D);
  }
  const int64_t R = int64_t(want.size()) / D;
  EXPECT_EQ(std::vector<float>(rows.x, rows.x + R * D), want);
  EXPECT_EQ(a.groups.sources, S);
  EXPECT_EQ(a.groups.offsets, offsets);
  EXPECT_EQ(a.groups.source_offsets, source_offsets);
  // The test is only as good as its blocks: several sources per expert, and an empty one.
  bool empty = false;
  for (int s = 0; s < S; ++s)
    for (int64_t j = 0; j < G; ++j) empty |= s != kMe && remote_rows(s, j) == 0;
  EXPECT_TRUE(empty);
  expect_forward_and_backward(d, f, kMe * G);
}

// At bf16 the rows are dispatched as x's bf16 rounding (pairs moved as one float's bits): the
// experts get the f32 dispatch's rows rounded, bit for bit, in half the bytes, and their backward
// the same rows; their outputs come back rounded to bf16 (the combine of the rounded outputs, bit
// for bit), kept so for combine's backward. With an odd D (no whole pairs) f32 rows go both ways,
// and the experts round their inputs.
TEST(TokenDispatcher, Bf16RowsAreTheF32RowsRounded) {
  Fixture f;
  for (const int64_t width : {int64_t(4), D}) {
    TokenDispatcher d = dispatcher(E, nullptr);
    d.D = width;
    std::vector<float> x(size_t(N * width));
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.3f + 1.7f * float(i) / 3.f;  // not bf16 values
    std::vector<uint16_t> xb(x.size());
    compute().cast_f32_to_bf16(xb.data(), x.data(), int64_t(x.size()));
    ScratchScope scope;
    DispatchActs a32, a16;
    const ExpertRows rows32 = d.dispatch(x.data(), f.idx_NK, N, a32, nullptr);
    const ExpertRows rows16 = d.dispatch(Activation(x.data(), nullptr, xb.data()), f.idx_NK, N, a16, nullptr);
    const int64_t n = N * K * width;
    EXPECT_EQ(a16.groups.offsets, a32.groups.offsets);
    if (width % 2) {
      EXPECT_EQ(rows16.xb, nullptr);
      EXPECT_EQ(std::vector<float>(rows16.x, rows16.x + n), std::vector<float>(rows32.x, rows32.x + n));
      continue;
    }
    ASSERT_NE(rows16.xb, nullptr);
    EXPECT_EQ(rows16.x, nullptr);
    std::vector<uint16_t> want(static_cast<size_t>(n));
    compute().cast_f32_to_bf16(want.data(), rows32.x, n);
    EXPECT_EQ(std::vector<uint16_t>(rows16.xb, rows16.xb + n), want);
    EXPECT_EQ(a16.xs_PD.nbytes() * 2, a32.xs_PD.nbytes());
    // The experts' outputs: values bf16 cannot hold at bf16, their roundings in the f32 run.
    for (int64_t i = 0; i < n; ++i) rows16.y[i] = 0.1f + float(i) / 7.f;
    bf16_round(rows32.y, rows16.y, n);
    std::vector<float> y16(size_t(N * width)), y32(y16.size());
    d.combine(y16.data(), rows16, f.w.data(), N, false, a16);
    d.combine(y32.data(), rows32, f.w.data(), N, false, a32);
    EXPECT_EQ(y16, y32);
    EXPECT_EQ(a16.ys_PD.dtype(), DType::BF16);
    EXPECT_EQ(a16.ys_PD.nbytes() * 2, a32.ys_PD.nbytes());
    std::vector<float> dw16(N * K), dw32(N * K), dy(size_t(N * width));
    for (size_t i = 0; i < dy.size(); ++i) dy[i] = 1.f - 0.03f * float(i);
    const ExpertGradRows g = d.combine_backward(dw16.data(), dy.data(), f.w.data(), N, a16);
    d.combine_backward(dw32.data(), dy.data(), f.w.data(), N, a32);
    EXPECT_EQ(dw16, dw32) << "the routing weights' gradient from the outputs as combined";
    EXPECT_EQ(g.x, nullptr);
    EXPECT_EQ(g.xb, rows16.xb);
  }
}
