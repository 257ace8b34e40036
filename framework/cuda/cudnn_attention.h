// cuDNN's fused (flash) attention behind the attention core at bf16: the graphs of
// framework/sdpa_graph.h handed to cuDNN's backend API one node at a time, one execution plan per
// shape (cached), no T x T buffer. Each call returns false, having written nothing, when cuDNN is
// not built in, is switched off (MOE_CUDNN_ATTENTION=0), the layout is outside sdpa::supported,
// or cuDNN declines the graph (no engine, or a build error: noted once per shape on stderr); the
// caller then runs its own path (framework/cuda/attention.cu).
#pragma once
#include <cstdint>
#include <string>

#include <cuda_runtime_api.h>

#include "framework/attention.h"
#include "framework/sdpa_graph.h"

namespace moe::cuda {

// o (bf16, o's layout) and lse[B, H, T] from bf16 q, k, v.
bool cudnn_attention_forward(uint16_t* o, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                             const AttentionLayout& l, cudaStream_t stream);
// dq, dk, dv (bf16, the layouts of q, k, v) from dout and the forward's o (bf16, o's layout).
bool cudnn_attention_backward(uint16_t* dq, uint16_t* dk, uint16_t* dv, const uint16_t* dout, const uint16_t* o,
                              const uint16_t* q, const uint16_t* k, const uint16_t* v, const float* lse,
                              const AttentionLayout& l, cudaStream_t stream);

// Whether the fused path may be tried at all: built with cuDNN, and switched on (at start-up unless
// MOE_CUDNN_ATTENTION=0; tests switch it to compare the two paths).
bool cudnn_attention_enabled();
void set_cudnn_attention(bool on);

// How many fused passes (forward or backward) have run in this process: tests check the path ran.
int64_t cudnn_attention_runs();

// What cuDNN says of a graph without a GPU: whether every tensor, node and the operation graph
// finalise as backend descriptors (else the first error, with cuDNN's message). Whether an engine
// runs the graph needs the device (heuristics and execution plans are per GPU).
struct GraphCheck {
  bool described = false;
  std::string error;
};
GraphCheck cudnn_check_graph(const sdpa::Graph& graph);

// The shape a plan is built for, as notes name it.
std::string cudnn_attention_shape(const AttentionLayout& l);

}  // namespace moe::cuda
