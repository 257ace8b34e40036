#include "framework/sdpa_graph.h"

#include <cmath>
#include <limits>

#include "framework/error.h"

namespace moe::sdpa {

const Tensor& Graph::find(int64_t uid) const { return tensors[size_t(index(uid))]; }

int Graph::index(int64_t uid) const {
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].uid == uid) return int(i);
  throw InternalError(detail::concat("sdpa graph: no tensor with uid ", uid));
}

namespace {

using Dims = std::array<int64_t, 4>;

Dims contiguous(const Dims& d) { return {d[1] * d[2] * d[3], d[2] * d[3], d[3], 1}; }

// The last two dims (and their strides) swapped: a transposed view of the same memory.
Tensor transposed(Tensor t) {
  std::swap(t.dim[2], t.dim[3]);
  std::swap(t.stride[2], t.stride[3]);
  return t;
}

struct Builder {
  Graph g;
  int64_t next_uid = kFirstVirtual;

  int add(Tensor t) {
    g.tensors.push_back(t);
    return int(g.tensors.size()) - 1;
  }
  int bound(int64_t uid, Type type, Dims dim, Dims stride) {
    Tensor t;
    t.uid = uid, t.type = type, t.dim = dim, t.stride = stride, t.is_virtual = false;
    return add(t);
  }
  int scalar(int64_t uid, float value) {
    Tensor t;
    t.uid = uid, t.dim = {1, 1, 1, 1}, t.stride = {1, 1, 1, 1}, t.is_virtual = false, t.by_value = true;
    t.value = value;
    return add(t);
  }
  int virtual_tensor(Type type, Dims dim) { return virtual_tensor(type, dim, contiguous(dim)); }
  int virtual_tensor(Type type, Dims dim, Dims stride) {
    Tensor t;
    t.uid = next_uid++, t.type = type, t.dim = dim, t.stride = stride;
    return add(t);
  }
  const Dims& dim(int i) const { return g.tensors[size_t(i)].dim; }
  Dims broadcast(int a, int b) const {
    Dims d = dim(a);
    if (b >= 0)
      for (int i = 0; i < 4; ++i) d[size_t(i)] = std::max(d[size_t(i)], dim(b)[size_t(i)]);
    return d;
  }

  int node(Node n) {
    g.nodes.push_back(n);
    return n.y;
  }
  // y = mode(a, b); into a new f32 virtual tensor of the broadcast dims unless y is given.
  int pointwise(Mode mode, int a, int b = -1, int y = -1, Type out = Type::F32) {
    Node n;
    n.mode = mode, n.a = a, n.b = b;
    n.y = y >= 0 ? y : virtual_tensor(out, broadcast(a, b));
    return node(n);
  }
  int reduce(Mode mode, int a, int y = -1) {
    Node n;
    n.kind = Kind::Reduction, n.mode = mode, n.a = a;
    const Dims d = dim(a);
    n.y = y >= 0 ? y : virtual_tensor(Type::F32, {d[0], d[1], d[2], 1});
    return node(n);
  }
  int matmul(int a, int b, int y) {
    Node n;
    n.kind = Kind::Matmul, n.a = a, n.b = b, n.y = y;
    return node(n);
  }
  int matmul(int a, int b) {
    return matmul(a, b, virtual_tensor(Type::F32, {dim(a)[0], dim(a)[1], dim(a)[2], dim(b)[3]}));
  }
  // A virtual transpose of a (last two dims) in the given type.
  int reshape_transposed(int a, Type type) {
    Tensor t = transposed(g.tensors[size_t(a)]);
    t.uid = next_uid++, t.type = type, t.is_virtual = true, t.by_value = false;
    Node n;
    n.kind = Kind::Reshape, n.a = a, n.y = add(t);
    return node(n);
  }
  // Scores above the diagonal (key index > query index) replaced by -inf, and with a document mask
  // those before the query's document too.
  int mask(int s, const AttentionLayout& l) {
    Node row, col;
    row.mode = col.mode = Mode::GenIndex;
    row.a = col.a = s;
    row.axis = 2, col.axis = 3;
    row.y = virtual_tensor(Type::I32, dim(s));
    col.y = virtual_tensor(Type::I32, dim(s));
    node(row), node(col);
    Node keep;
    keep.mode = Mode::CmpGe, keep.a = row.y, keep.b = col.y, keep.compute = Type::Bool;
    keep.y = virtual_tensor(Type::Bool, dim(s));
    node(keep);
    int keep_all = keep.y;
    if (l.doc_start) {
      Node in_doc;
      in_doc.mode = Mode::CmpGe, in_doc.a = col.y, in_doc.compute = Type::Bool;
      in_doc.b = bound(kDocStart, Type::I32, {l.B, 1, l.T, 1}, {l.T, l.T, 1, 1});
      in_doc.y = virtual_tensor(Type::Bool, dim(s));
      node(in_doc);
      Node both;
      both.mode = Mode::LogicalAnd, both.a = keep.y, both.b = in_doc.y, both.compute = Type::Bool;
      both.y = keep_all = virtual_tensor(Type::Bool, dim(s));
      node(both);
    }
    Node select;
    select.mode = Mode::BinarySelect, select.a = s, select.b = scalar(kNegInf, -std::numeric_limits<float>::infinity());
    select.t = keep_all, select.y = virtual_tensor(Type::F32, dim(s));
    return node(select);
  }

  // An attention operand (bf16) as the 4-D [B, H, T, width] view of its layout: row stride ld,
  // head stride hs.
  int operand(const AttentionLayout& l, int64_t uid, int64_t width, int64_t ld, int64_t hs) {
    return bound(uid, Type::BF16, {l.B, l.H, l.T, width}, {l.T * ld, hs, ld, 1});
  }
  // Tensor i seen with its last two dims swapped, the same memory (k^T, v^T).
  int transpose(int i) {
    g.tensors[size_t(i)] = transposed(g.tensors[size_t(i)]);
    return i;
  }
  int stats(const AttentionLayout& l, int64_t uid) {
    return bound(uid, Type::F32, {l.B, l.H, l.T, 1}, {l.H * l.T, l.T, 1, 1});
  }
  int scores(const AttentionLayout& l, int q, int kt) {
    return pointwise(Mode::Mul, matmul(q, kt), scalar(kScale, l.scale));
  }
};

bool dense(int64_t ld, int64_t hs, int64_t H, int64_t width) { return hs == width && ld == H * width; }

}  // namespace

bool supported(const AttentionLayout& l) {
  return l.bf16 && l.B > 0 && l.T > 0 && l.H > 0 && l.dqk % 8 == 0 && l.dv % 8 == 0 &&
         dense(l.q_ld, l.q_hs, l.H, l.dqk) && dense(l.k_ld, l.k_hs, l.H, l.dqk) && dense(l.v_ld, l.v_hs, l.H, l.dv) &&
         dense(l.o_ld, l.o_hs, l.H, l.dv);
}

Graph forward_graph(const AttentionLayout& l) {
  Builder b;
  const int q = b.operand(l, kQ, l.dqk, l.q_ld, l.q_hs);
  const int kt = b.transpose(b.operand(l, kK, l.dqk, l.k_ld, l.k_hs));
  const int v = b.operand(l, kV, l.dv, l.v_ld, l.v_hs);
  const int s = b.mask(b.scores(l, q, kt), l);
  // Softmax with its statistics: Stats = max + log(sum exp(s - max)).
  const int max = b.reduce(Mode::Max, s);
  const int e = b.pointwise(Mode::Exp, b.pointwise(Mode::Sub, s, max));
  const int sum = b.reduce(Mode::Sum, e);
  b.pointwise(Mode::Add, max, b.pointwise(Mode::Log, sum), b.stats(l, kStats));
  const int p = b.pointwise(Mode::Div, e, sum, -1, Type::BF16);
  b.matmul(p, v, b.operand(l, kO, l.dv, l.o_ld, l.o_hs));
  return b.g;
}

Graph backward_graph(const AttentionLayout& l) {
  Builder b;
  const int q = b.operand(l, kQ, l.dqk, l.q_ld, l.q_hs);
  const int kt = b.transpose(b.operand(l, kK, l.dqk, l.k_ld, l.k_hs));
  const int vt = b.transpose(b.operand(l, kV, l.dv, l.v_ld, l.v_hs));
  const int o = b.operand(l, kO, l.dv, l.o_ld, l.o_hs), dO = b.operand(l, kDO, l.dv, l.o_ld, l.o_hs);
  const int stats = b.stats(l, kStats);
  // D = rowsum(dO * O), bound to caller memory as the engine expects.
  const int d = b.pointwise(Mode::Mul, b.reduce(Mode::Sum, b.pointwise(Mode::Mul, dO, o)), b.scalar(kOne, 1.f),
                            b.stats(l, kSoftmaxSum));
  // P again from the statistics.
  const int p = b.pointwise(Mode::Exp, b.mask(b.pointwise(Mode::Sub, b.scores(l, q, kt), stats), l));
  b.matmul(b.reshape_transposed(p, Type::BF16), dO, b.operand(l, kDV, l.dv, l.v_ld, l.v_hs));
  const int dp = b.matmul(dO, vt);
  const int ds =
      b.pointwise(Mode::Mul, b.pointwise(Mode::Mul, b.pointwise(Mode::Sub, dp, d), p), b.g.index(kScale));
  b.matmul(b.reshape_transposed(ds, Type::BF16), q, b.operand(l, kDK, l.dqk, l.k_ld, l.k_hs));
  const int k = b.reshape_transposed(kt, Type::F32);
  const Dims acc = {l.B, l.H, l.T, l.dqk};  // [B, H, T, dqk] contiguous
  const int dq_acc = b.matmul(ds, k, b.bound(kDQAccum, Type::F32, acc, contiguous(acc)));
  b.pointwise(Mode::Identity, dq_acc, -1, b.operand(l, kDQ, l.dqk, l.q_ld, l.q_hs));
  return b.g;
}

}  // namespace moe::sdpa
