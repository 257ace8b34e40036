// What the cuDNN attention graphs of framework/sdpa_graph.h compute, proven on the CPU: a small
// interpreter runs the forward and backward graphs node by node over caller memory addressed by the
// graphs' own dims and strides, and their outputs are compared with the CPU attention core
// (attention_forward_bf16 / attention_backward_bf16) on the same bf16 inputs. A graph with a wrong
// node, operand, stride, scalar or mask lands far outside the tolerances; the mutation tests break
// the causal mask, the document mask and the scale on purpose and check that the comparison then
// fails by a wide margin.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "framework/attention.h"
#include "framework/dtype.h"
#include "framework/sdpa_graph.h"
#include "tests/unit/test_random.h"

using namespace moe;
using sdpa::Graph;
using sdpa::Kind;
using sdpa::Mode;
using sdpa::Node;
using sdpa::Type;

namespace {

// ---- The interpreter (test-only reference semantics of sdpa::Graph) ----

// Caller memory bound to a graph tensor by uid: f32 values or bf16 bits, `size` elements.
struct Binding {
  void* data = nullptr;
  Type type = Type::F32;
  size_t size = 0;
};
using Bindings = std::map<int64_t, Binding>;
using Index = std::array<int64_t, 4>;

void fail(const std::string& what) { throw std::runtime_error("sdpa graph interpreter: " + what); }

// The value a tensor of this type holds for x: what the engine materialises at that precision.
// Applied on writes and on reads, so a BF16 view of f32 storage (the backward's transposes of P and
// dS, which the engine feeds to its GEMMs in bf16) sees bf16 values.
double as_type(Type type, double x) {
  if (type == Type::BF16) return round_bf16(float(x));
  if (type == Type::F32) return float(x);
  return x;  // I32, Bool: indices and flags, exact
}

// Where a tensor's elements live: its own double buffer (virtual tensors, by-value scalars) or the
// caller's memory (bound tensors). A reshape's output shares its input's storage.
struct Storage {
  std::vector<double> own;
  Binding bound;  // data == nullptr: `own`
  double load(int64_t at) const {
    if (!bound.data) return own[size_t(at)];
    if (bound.type == Type::BF16) return bf16_bits_to_f32(static_cast<const uint16_t*>(bound.data)[at]);
    if (bound.type == Type::I32) return static_cast<const int32_t*>(bound.data)[at];
    return static_cast<const float*>(bound.data)[at];
  }
  void store(int64_t at, double x) {  // x is already of the writing tensor's type
    if (!bound.data)
      own[size_t(at)] = x;
    else if (bound.type == Type::BF16)
      static_cast<uint16_t*>(bound.data)[at] = f32_to_bf16_bits(float(x));
    else
      static_cast<float*>(bound.data)[at] = float(x);
  }
};

template <class F>
void for_each_index(const Index& dim, F f) {
  for (int64_t i0 = 0; i0 < dim[0]; ++i0)
    for (int64_t i1 = 0; i1 < dim[1]; ++i1)
      for (int64_t i2 = 0; i2 < dim[2]; ++i2)
        for (int64_t i3 = 0; i3 < dim[3]; ++i3) f(Index{i0, i1, i2, i3});
}

int64_t max_offset(const sdpa::Tensor& t) {
  int64_t at = 0;
  for (size_t d = 0; d < 4; ++d) at += (t.dim[d] - 1) * t.stride[d];
  return at;
}

class Interpreter {
 public:
  Interpreter(const Graph& g, const Bindings& bindings) : g_(g), storage_(g.tensors.size()) {
    std::vector<bool> is_view(g.tensors.size(), false);
    for (const Node& n : g.nodes)
      if (n.kind == Kind::Reshape) is_view[size_t(n.y)] = true;
    for (size_t i = 0; i < g.tensors.size(); ++i) {
      const sdpa::Tensor& t = g.tensors[i];
      if (is_view[i]) continue;  // gets its input's storage when the reshape runs
      auto s = std::make_shared<Storage>();
      if (t.by_value) {
        s->own = {double(t.value)};
      } else if (t.is_virtual) {
        s->own.assign(size_t(max_offset(t) + 1), std::nan(""));  // read before written: NaN
      } else {
        const auto it = bindings.find(t.uid);
        if (it == bindings.end()) fail("no binding for uid " + std::to_string(t.uid));
        if (it->second.type != t.type) fail("binding of uid " + std::to_string(t.uid) + " has another type");
        if (size_t(max_offset(t)) >= it->second.size) fail("uid " + std::to_string(t.uid) + " overruns its binding");
        s->bound = it->second;
      }
      storage_[i] = s;
    }
  }

  void run() {
    for (const Node& n : g_.nodes) {
      if (n.kind == Kind::Reshape) {
        if (count(tensor(n.a).dim) != count(tensor(n.y).dim)) fail("reshape changes the element count");
        storage_[size_t(n.y)] = storage_[size_t(n.a)];
      } else if (n.kind == Kind::Matmul) {
        matmul(n);
      } else if (n.kind == Kind::Reduction) {
        reduce(n);
      } else {
        pointwise(n);
      }
    }
  }

 private:
  const sdpa::Tensor& tensor(int i) const { return g_.tensors[size_t(i)]; }
  static int64_t count(const Index& d) { return d[0] * d[1] * d[2] * d[3]; }

  // Element i of tensor t, size-1 dims broadcast, seen at t's type.
  double get(int t, const Index& i) const {
    const sdpa::Tensor& x = tensor(t);
    int64_t at = 0;
    for (size_t d = 0; d < 4; ++d) at += (x.dim[d] == 1 ? 0 : i[d]) * x.stride[d];
    return as_type(x.type, storage_[size_t(t)]->load(at));
  }
  void set(int t, const Index& i, double value) {
    const sdpa::Tensor& x = tensor(t);
    int64_t at = 0;
    for (size_t d = 0; d < 4; ++d) at += i[d] * x.stride[d];
    storage_[size_t(t)]->store(at, as_type(x.type, value));
  }
  // Each dim of an operand is the output's or 1.
  void check_broadcast(int operand, const Index& y) const {
    for (size_t d = 0; d < 4; ++d)
      if (tensor(operand).dim[d] != y[d] && tensor(operand).dim[d] != 1) fail("operand dims do not broadcast");
  }

  void matmul(const Node& n) {
    const Index &a = tensor(n.a).dim, &b = tensor(n.b).dim, &y = tensor(n.y).dim;
    if (a[3] != b[2] || y[2] != a[2] || y[3] != b[3]) fail("matmul dims do not chain");
    for (size_t d = 0; d < 2; ++d)
      if ((a[d] != y[d] && a[d] != 1) || (b[d] != y[d] && b[d] != 1)) fail("matmul batch dims");
    for_each_index(y, [&](const Index& i) {
      double acc = 0;
      for (int64_t k = 0; k < a[3]; ++k) acc += get(n.a, {i[0], i[1], i[2], k}) * get(n.b, {i[0], i[1], k, i[3]});
      set(n.y, i, acc);
    });
  }

  void reduce(const Node& n) {
    const Index &a = tensor(n.a).dim, &y = tensor(n.y).dim;
    check_broadcast(n.y, a);  // y is a's dims with 1 on the reduced axes
    if (n.mode != Mode::Max && n.mode != Mode::Sum) fail("reduction mode");
    std::vector<double> acc(size_t(count(y)), n.mode == Mode::Max ? -INFINITY : 0.0);
    auto slot = [&](const Index& i) {
      int64_t at = 0;
      for (size_t d = 0; d < 4; ++d) at = at * y[d] + (y[d] == 1 ? 0 : i[d]);
      return size_t(at);
    };
    for_each_index(a, [&](const Index& i) {
      const double x = get(n.a, i);
      double& r = acc[slot(i)];
      r = n.mode == Mode::Max ? std::max(r, x) : r + x;
    });
    for_each_index(y, [&](const Index& i) { set(n.y, i, acc[slot(i)]); });
  }

  // Computed in double, rounded to y's type on the write (the node's compute type is not modelled).
  void pointwise(const Node& n) {
    const Index& y = tensor(n.y).dim;
    for (int operand : {n.a, n.b, n.t})
      if (operand >= 0) check_broadcast(operand, y);
    for_each_index(y, [&](const Index& i) {
      const double a = get(n.a, i), b = n.b >= 0 ? get(n.b, i) : 0.0;
      double r = 0;
      switch (n.mode) {
        case Mode::Mul: r = a * b; break;
        case Mode::Sub: r = a - b; break;
        case Mode::Add: r = a + b; break;
        case Mode::Div: r = a / b; break;
        case Mode::Exp: r = std::exp(a); break;
        case Mode::Log: r = std::log(a); break;
        case Mode::Identity: r = a; break;
        case Mode::GenIndex: r = double(i[size_t(n.axis)]); break;
        case Mode::CmpGe: r = a >= b ? 1 : 0; break;
        case Mode::LogicalAnd: r = a != 0 && b != 0 ? 1 : 0; break;
        case Mode::BinarySelect: r = get(n.t, i) != 0 ? a : b; break;
        default: fail("pointwise mode");
      }
      set(n.y, i, r);
    });
  }

  const Graph& g_;
  std::vector<std::shared_ptr<Storage>> storage_;  // per tensor; a reshape's output aliases its input's
};

// ---- The problem, the attention core, and the graphs on it ----

std::vector<float> to_f32(const std::vector<uint16_t>& bits) {
  std::vector<float> x(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) x[i] = bf16_bits_to_f32(bits[i]);
  return x;
}

// B sequences of T tokens, H heads, dense q/k [N, H, dqk], v/o/dO [N, H, dv], as bf16 bits. With
// documents, sequence 0 holds documents starting at 0, T/3 and 2T/3 and sequence 1 at 0 and 1
// (data.document_mask: doc_start[b*T + t] is the first key query t sees).
struct Problem {
  int64_t B, T, H, dqk = 24, dv = 16;
  std::vector<uint16_t> q, k, v, dout;
  std::vector<int32_t> doc_start;  // empty: no document mask
  Problem(int64_t B_, int64_t T_, int64_t H_, bool documents = false) : B(B_), T(T_), H(H_) {
    const size_t N = size_t(B * T * H);
    q = test::bf16_bits(test::randn(N * size_t(dqk), 11));
    k = test::bf16_bits(test::randn(N * size_t(dqk), 12));
    v = test::bf16_bits(test::randn(N * size_t(dv), 13));
    dout = test::bf16_bits(test::randn(N * size_t(dv), 14));
    if (!documents) return;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        doc_start.push_back(int32_t(b % 2 == 0 ? (t >= 2 * T / 3 ? 2 * T / 3 : t >= T / 3 ? T / 3 : 0) : (t >= 1)));
  }
  AttentionLayout layout() const {
    AttentionLayout l = AttentionLayout::dense(B, T, H, dqk, dv, 1.f / std::sqrt(float(dqk)));
    l.bf16 = true;
    l.doc_start = doc_start.empty() ? nullptr : doc_start.data();
    return l;
  }
  size_t rows() const { return size_t(B * H * T); }  // Stats, SoftmaxSum: [B, H, T, 1]
};

struct Core {
  std::vector<float> o, lse, dq, dk, dv;
};

Core run_core(const Problem& p) {
  const AttentionLayout l = p.layout();
  Core c{std::vector<float>(p.v.size()), std::vector<float>(p.rows()), std::vector<float>(p.q.size()),
         std::vector<float>(p.k.size()), std::vector<float>(p.v.size())};
  attention_forward_bf16(c.o.data(), c.lse.data(), p.q.data(), p.k.data(), p.v.data(), l);
  // The core reads dO in f32: the bf16 values the graph reads, so both see the same dO.
  // o in bf16 is for fused kernels (the CPU core ignores it): the core's own forward output.
  const std::vector<float> dout = to_f32(p.dout);
  const std::vector<uint16_t> o = test::bf16_bits(c.o);
  attention_backward_bf16(c.dq.data(), c.dk.data(), c.dv.data(), dout.data(), o.data(), p.q.data(), p.k.data(),
                          p.v.data(), c.lse.data(), l);
  return c;
}

// Graph outputs start as NaN, so an element no node writes cannot pass.
constexpr uint16_t kBf16NaN = 0x7fc0;

struct Forward {
  std::vector<uint16_t> o;
  std::vector<float> stats;
};

Binding bind(std::vector<uint16_t>& x) { return {x.data(), Type::BF16, x.size()}; }
Binding bind(std::vector<float>& x) { return {x.data(), Type::F32, x.size()}; }
Binding bind(std::vector<int32_t>& x) { return {x.data(), Type::I32, x.size()}; }

// The problem's document starts, when it has documents, bound as DocStart.
Bindings with_documents(Bindings b, Problem& p) {
  if (!p.doc_start.empty()) b[sdpa::kDocStart] = bind(p.doc_start);
  return b;
}

Forward run_forward(const Graph& g, Problem p) {
  Forward f{std::vector<uint16_t>(p.v.size(), kBf16NaN), std::vector<float>(p.rows(), NAN)};
  Interpreter(g, with_documents({{sdpa::kQ, bind(p.q)}, {sdpa::kK, bind(p.k)}, {sdpa::kV, bind(p.v)},
                                 {sdpa::kO, bind(f.o)}, {sdpa::kStats, bind(f.stats)}},
                                p))
      .run();
  return f;
}

struct Backward {
  std::vector<uint16_t> dq, dk, dv;
  std::vector<float> softmax_sum, dq_accum;
};

Backward run_backward(const Graph& g, Problem p, Forward f) {
  Backward r{std::vector<uint16_t>(p.q.size(), kBf16NaN), std::vector<uint16_t>(p.k.size(), kBf16NaN),
             std::vector<uint16_t>(p.v.size(), kBf16NaN), std::vector<float>(p.rows(), NAN),
             std::vector<float>(p.q.size(), NAN)};
  Interpreter(g, with_documents({{sdpa::kQ, bind(p.q)}, {sdpa::kK, bind(p.k)}, {sdpa::kV, bind(p.v)},
                                 {sdpa::kO, bind(f.o)}, {sdpa::kDO, bind(p.dout)}, {sdpa::kStats, bind(f.stats)},
                                 {sdpa::kDQ, bind(r.dq)}, {sdpa::kDK, bind(r.dk)}, {sdpa::kDV, bind(r.dv)},
                                 {sdpa::kSoftmaxSum, bind(r.softmax_sum)}, {sdpa::kDQAccum, bind(r.dq_accum)}},
                                p))
      .run();
  return r;
}

// max |got - want| / max |want|; infinite when got holds a NaN or infinity (an unwritten output).
// An all-zero want (dQ and dK at T = 1, where the softmax has one term) leaves the absolute error.
double normalised_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff = std::max(diff, std::fabs(double(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return scale > 0 ? diff / scale : diff;
}
// max |got - want| / max(1, |want|): for the log-sum-exp statistics, whose size carries no scale.
double stats_error(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    err = std::max(err, std::fabs(double(got[i]) - want[i]) / std::max(1.0, std::fabs(double(want[i]))));
  }
  return err;
}

// Forward tolerances. O: the graph writes O as bf16 (each element within 2^-9 of its f32 value),
// the core keeps f32, and the two sum in other orders: 1e-2 is ~5x the rounding alone. Stats: both
// are the log-sum-exp of the same f32 scores, apart only by f32 summation order (~1e-7 measured),
// while a wrong mask or scale moves it by O(1): 1e-4 leaves room for T in the thousands.
constexpr double kOTolerance = 1e-2, kStatsTolerance = 1e-4;
// Backward: bf16 outputs (2^-9), D from the bf16 O (the core's from f32 P and dP) and dQ from the
// f32 dS (the core's from bf16 dS) each add bf16-sized differences.
constexpr double kGradTolerance = 2e-2;

struct ForwardErrors {
  double o, stats;
};

ForwardErrors forward_errors(const Graph& g, const Problem& p, const Core& core) {
  const Forward f = run_forward(g, p);
  return {normalised_error(to_f32(f.o), core.o), stats_error(f.stats, core.lse)};
}

void expect_forward_matches(const Problem& p) {
  const ForwardErrors e = forward_errors(sdpa::forward_graph(p.layout()), p, run_core(p));
  std::printf("forward T=%lld%s: O %.2e (tolerance %.0e), Stats %.2e (tolerance %.0e)\n", (long long)p.T,
              p.doc_start.empty() ? "" : " with documents", e.o, kOTolerance, e.stats, kStatsTolerance);
  EXPECT_LE(e.o, kOTolerance);
  EXPECT_LE(e.stats, kStatsTolerance);
}

void expect_backward_matches(const Problem& p) {
  const AttentionLayout l = p.layout();
  const Core core = run_core(p);
  const Forward f = run_forward(sdpa::forward_graph(l), p);
  const Backward b = run_backward(sdpa::backward_graph(l), p, f);
  const double dq = normalised_error(to_f32(b.dq), core.dq), dk = normalised_error(to_f32(b.dk), core.dk),
               dv = normalised_error(to_f32(b.dv), core.dv);

  // SoftmaxSum = rowsum(dO * O) over the bf16 values the graph read, and dQ = bf16(DQAccum).
  std::vector<float> row_sum(p.rows()), dq_accum_rounded(b.dq.size());
  for (int64_t bb = 0; bb < p.B; ++bb)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t t = 0; t < p.T; ++t) {
        double sum = 0;
        for (int64_t c = 0; c < p.dv; ++c) {
          const size_t at = size_t(l.o_at(bb, h) + t * l.o_ld + c);
          sum += double(bf16_bits_to_f32(p.dout[at])) * bf16_bits_to_f32(f.o[at]);
        }
        row_sum[size_t((bb * p.H + h) * p.T + t)] = float(sum);
        for (int64_t c = 0; c < p.dqk; ++c)  // DQAccum is [B, H, T, dqk] contiguous, dQ q's layout
          dq_accum_rounded[size_t(l.q_at(bb, h) + t * l.q_ld + c)] =
              round_bf16(b.dq_accum[size_t(((bb * p.H + h) * p.T + t) * p.dqk + c)]);
      }
  const double softmax_sum = stats_error(b.softmax_sum, row_sum);
  const double dq_accum = normalised_error(dq_accum_rounded, to_f32(b.dq));
  std::printf("backward T=%lld%s: dQ %.2e dK %.2e dV %.2e (tolerance %.0e), SoftmaxSum %.2e, dQ vs bf16(DQAccum) "
              "%.2e\n",
              (long long)p.T, p.doc_start.empty() ? "" : " with documents", dq, dk, dv, kGradTolerance, softmax_sum,
              dq_accum);
  EXPECT_LE(dq, kGradTolerance);
  EXPECT_LE(dk, kGradTolerance);
  EXPECT_LE(dv, kGradTolerance);
  EXPECT_LE(softmax_sum, 1e-6);  // f32 rounding of a double sum only
  EXPECT_EQ(dq_accum, 0.0);
}

// The graph with the causal mask's condition comparing the row index with itself: nothing masked.
Graph without_causal_mask(Graph g) {
  int changed = 0;
  for (Node& n : g.nodes)
    if (n.mode == Mode::CmpGe) n.b = n.a, ++changed;
  EXPECT_EQ(changed, 1);
  return g;
}

}  // namespace

TEST(SdpaGraph, ForwardMatchesAttentionCore) { expect_forward_matches(Problem(2, 37, 3)); }
TEST(SdpaGraph, ForwardMatchesAttentionCoreOnOneToken) { expect_forward_matches(Problem(2, 1, 3)); }
TEST(SdpaGraph, BackwardMatchesAttentionCore) { expect_backward_matches(Problem(2, 37, 3)); }
TEST(SdpaGraph, BackwardMatchesAttentionCoreOnOneToken) { expect_backward_matches(Problem(2, 1, 3)); }
TEST(SdpaGraph, ForwardMatchesAttentionCoreWithDocuments) { expect_forward_matches(Problem(2, 37, 3, true)); }
TEST(SdpaGraph, BackwardMatchesAttentionCoreWithDocuments) { expect_backward_matches(Problem(2, 37, 3, true)); }

// The comparisons above can fail: a forward graph without the mask, or with the wrong scale, lands
// far outside the tolerances, and so does a backward graph without the mask.
TEST(SdpaGraph, ComparisonFailsWithoutTheCausalMask) {
  const Problem p(2, 37, 3);
  const Core core = run_core(p);
  const ForwardErrors e = forward_errors(without_causal_mask(sdpa::forward_graph(p.layout())), p, core);
  std::printf("unmasked forward: O %.2e, Stats %.2e\n", e.o, e.stats);
  EXPECT_GT(e.o, 10 * kOTolerance);
  EXPECT_GT(e.stats, 100 * kStatsTolerance);

  const Backward b = run_backward(without_causal_mask(sdpa::backward_graph(p.layout())), p,
                                  run_forward(sdpa::forward_graph(p.layout()), p));
  const double dq = normalised_error(to_f32(b.dq), core.dq), dk = normalised_error(to_f32(b.dk), core.dk),
               dv = normalised_error(to_f32(b.dv), core.dv);
  std::printf("unmasked backward: dQ %.2e dK %.2e dV %.2e\n", dq, dk, dv);
  EXPECT_GT(std::min({dq, dk, dv}), 10 * kGradTolerance);
}

// ... and so does a graph that drops the document condition (keeping only the causal one).
TEST(SdpaGraph, ComparisonFailsWithoutTheDocumentMask) {
  Problem p(2, 37, 3, true);
  const Core core = run_core(p);
  Graph g = sdpa::forward_graph(p.layout());
  int changed = 0;
  for (Node& n : g.nodes)
    if (n.mode == Mode::LogicalAnd) n.b = n.a, ++changed;  // keep && keep: the causal mask alone
  EXPECT_EQ(changed, 1);
  const ForwardErrors e = forward_errors(g, p, core);
  std::printf("forward without the document mask: O %.2e, Stats %.2e\n", e.o, e.stats);
  EXPECT_GT(e.o, 10 * kOTolerance);
  EXPECT_GT(e.stats, 100 * kStatsTolerance);
}

TEST(SdpaGraph, ComparisonFailsWithTheWrongScale) {
  const Problem p(2, 37, 3);
  Graph g = sdpa::forward_graph(p.layout());
  g.tensors[size_t(g.index(sdpa::kScale))].value = 1.f;  // unscaled q k^T
  const ForwardErrors e = forward_errors(g, p, run_core(p));
  std::printf("unscaled forward: O %.2e, Stats %.2e\n", e.o, e.stats);
  EXPECT_GT(e.o, 10 * kOTolerance);
  EXPECT_GT(e.stats, 100 * kStatsTolerance);
}

TEST(SdpaGraph, SupportedOnlyForDenseBf16Layouts) {
  const AttentionLayout dense = Problem(2, 5, 3).layout();
  EXPECT_TRUE(sdpa::supported(dense));

  AttentionLayout l = dense;
  l.bf16 = false;
  EXPECT_FALSE(sdpa::supported(l));

  const std::vector<int32_t> doc_start(size_t(dense.B * dense.T), 0);
  l = dense;
  l.doc_start = doc_start.data();
  EXPECT_TRUE(sdpa::supported(l));  // documents: the mask is in the graph

  l = dense;  // dqk = 20: not whole 16-byte groups of bf16
  l.dqk = 20, l.q_ld = l.k_ld = l.H * 20, l.q_hs = l.k_hs = 20;
  EXPECT_FALSE(sdpa::supported(l));

  l = dense;  // MLA's v: inside kv_b_proj's rows [N, H, nope + dv] at offset nope
  const int64_t nope = 8;
  l.v_ld = l.H * (nope + l.dv), l.v_hs = nope + l.dv;
  EXPECT_FALSE(sdpa::supported(l));
}
