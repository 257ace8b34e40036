// cuDNN's own validation of the fused-attention graphs, on the host: every tensor, node and the
// operation graph of framework/sdpa_graph.h must finalise as backend descriptors (attribute types,
// counts, shapes and data types that cuDNN checks without a device), for the layouts the model
// uses. tests/unit/test_sdpa_graph.cpp proves what the graphs compute; this proves cuDNN accepts
// how cudnn_attention.cpp describes them. Which engine runs them needs a GPU
// (tests/gpu/test_gpu_fused_attention.cpp). Label unit: runs without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "framework/cuda/cudnn_attention.h"
#include "framework/sdpa_graph.h"

using namespace moe;

namespace {

// The model's packed layout at bf16.
AttentionLayout dense_layout(int64_t B, int64_t T, int64_t H, int64_t dqk, int64_t dv) {
  AttentionLayout l = AttentionLayout::dense(B, T, H, dqk, dv, 1.f / std::sqrt(float(dqk)));
  l.bf16 = true;
  return l;
}

void expect_described(const sdpa::Graph& g, const char* what) {
  const cuda::GraphCheck c = cuda::cudnn_check_graph(g);
  std::printf("%s: %s%s\n", what, c.described ? "described" : "refused: ", c.error.c_str());
  EXPECT_TRUE(c.described) << what << ": " << c.error;
}

}  // namespace

TEST(CudnnSdpaDescriptors, ModelLayoutsAreValidGraphs) {
#if !defined(MOE_HAVE_CUDNN)
  GTEST_SKIP() << "built without cuDNN";
#endif
  // tiny.yaml (qk 16, v 8), MLA at DeepSeek-V3's head widths (qk 192, v 128), moe-1b-like batches.
  for (const AttentionLayout& l : {dense_layout(4, 32, 2, 16, 8), dense_layout(8, 2048, 16, 192, 128),
                                   dense_layout(2, 100, 3, 32, 32)}) {
    const std::string shape = cuda::cudnn_attention_shape(l);
    expect_described(sdpa::forward_graph(l), ("forward " + shape).c_str());
    expect_described(sdpa::backward_graph(l), ("backward " + shape).c_str());
  }
  // With a document mask (data.document_mask): DocStart is a bound int32 tensor, never read here.
  AttentionLayout l = dense_layout(2, 100, 3, 32, 32);
  const int32_t any = 0;
  l.doc_start = &any;
  expect_described(sdpa::forward_graph(l), "forward with documents");
  expect_described(sdpa::backward_graph(l), "backward with documents");
}

// The check can fail: a matmul whose operands do not chain is refused by cuDNN's own validation.
TEST(CudnnSdpaDescriptors, AnInconsistentGraphIsRefused) {
#if !defined(MOE_HAVE_CUDNN)
  GTEST_SKIP() << "built without cuDNN";
#endif
  sdpa::Graph g = sdpa::forward_graph(dense_layout(2, 64, 2, 16, 8));
  for (sdpa::Node& n : g.nodes)
    if (n.kind == sdpa::Kind::Matmul) {
      g.tensors[size_t(n.b)].dim[2] += 8;  // k^T's rows no longer match q's width
      break;
    }
  const cuda::GraphCheck c = cuda::cudnn_check_graph(g);
  std::printf("broken graph: described %d: %s\n", int(c.described), c.error.c_str());
  EXPECT_FALSE(c.described);
  EXPECT_FALSE(c.error.empty());
}
