// The causal attention core as an operation graph: the graphs cuDNN's fused (flash) attention
// engine takes, written as data. framework/cuda/cudnn_attention.cpp hands each tensor and node to
// cuDNN's backend API one to one; tests/unit/test_sdpa_graph.cpp runs the same graphs on the CPU
// and compares them with the attention core (framework/attention.h), so what the graphs compute
// is proven here, and only the API calls that describe them need a GPU.
//
// The node sequence is the one cuDNN's frontend library (cudnn-frontend, "composite" SDPA nodes)
// builds for a causal, dropout-free, bias-free attention with as many key/value heads as query
// heads, because the engine recognises that pattern: forward
//   S = scale q k^T, causal mask (-inf above the diagonal), softmax with Stats = log-sum-exp,
//   O = P v (P in bf16);
// backward (with the forward's O)
//   D = rowsum(dO * O), P = exp(scale q k^T - Stats) masked, dV = P^T dO, dP = dO v^T,
//   dS = P (dP - D) scale, dK = dS^T q, dQ = dS k (accumulated in f32, then rounded).
// All tensors are 4-D [B, H, rows, cols] over the caller's strides; Stats is [B, H, T, 1], which
// is the attention core's lse[B, H, T] (natural log, as kern::softmax_row_forward returns).
// With a document mask (data.document_mask) the causal condition row >= col is and-ed with
// col >= DocStart[b, t], the first key of query t's document (int32 [B, 1, T, 1], the layout's
// doc_start): the frontend's padding mask in the same nodes (gen-index, compare with a bound int32
// tensor, logical and, select), with a per-query bound instead of a per-sequence length.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "framework/attention.h"

namespace moe::sdpa {

enum class Type { F32, BF16, I32, Bool };

enum class Kind { Matmul, Reduction, Reshape, Pointwise };

// Pointwise modes (cudnnPointwiseMode_t) and reduction operators (cudnnReduceTensorOp_t) used.
enum class Mode { None, Mul, Sub, Add, Div, Exp, Log, GenIndex, CmpGe, LogicalAnd, BinarySelect, Identity, Max, Sum };

// The tensors the caller binds (their unique ids); virtual tensors get ids from kFirstVirtual.
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV,
  kSoftmaxSum,  // backward: rowsum(dO * O), f32 [B, H, T, 1], bound to caller memory
  kDQAccum,     // backward: dQ in f32 [B, H, T, dqk] before rounding, bound to caller memory
  kScale, kNegInf, kOne,  // by-value scalars
  kDocStart,              // the layout's doc_start, int32 [B, 1, T, 1], with a document mask
  kFirstVirtual = 100,
};

struct Tensor {
  int64_t uid = 0;
  Type type = Type::F32;
  std::array<int64_t, 4> dim{}, stride{};
  bool is_virtual = true;
  bool by_value = false;  // a scalar passed by value (dims and strides all 1)
  float value = 0.f;      // the by-value scalar
};

// y = mode(a, b) with t the condition of BinarySelect (y = t ? a : b); a reduction reduces a to
// y's dims; a matmul is y = a b over the last two dims; a reshape is y = a viewed through y's dims
// and strides (a transpose here). GenIndex writes the index along `axis` of a's dims.
struct Node {
  Kind kind = Kind::Pointwise;
  Mode mode = Mode::None;
  int a = -1, b = -1, t = -1, y = -1;  // indices into Graph::tensors
  int64_t axis = -1;
  Type compute = Type::F32;
};

struct Graph {
  std::vector<Tensor> tensors;
  std::vector<Node> nodes;

  const Tensor& find(int64_t uid) const;
  // Index of the tensor with this uid.
  int index(int64_t uid) const;
};

// Whether the graphs describe this attention: bf16 operands, o, dq, dk, dv in dense [N, H, width]
// rows (the outputs are written densely), head widths of whole 8-element (16-byte) groups.
bool supported(const AttentionLayout& l);

// q, k, v (bf16, their layouts), O (bf16, o's layout), Stats (f32 [B, H, T, 1]); DocStart in too
// when l.doc_start is set.
Graph forward_graph(const AttentionLayout& l);
// q, k, v, O, dO (bf16), Stats, SoftmaxSum and DQAccum (f32) in; dQ, dK, dV (bf16, the layouts of
// q, k, v) out.
Graph backward_graph(const AttentionLayout& l);

}  // namespace moe::sdpa
