// MLA's latent KV cache for generation (DeepSeek-V2/V3 inference). Per layer, batch slot and
// position it keeps only what MLA compresses keys and values into: the normalised c_kv
// (kv_lora_rank values, after kv_a_layernorm, rounded as kv_b_proj's GEMM reads it at the model's
// precision) and the shared RoPE key k_pe (qk_rope_dim values, RoPE applied). No per-head key or
// value is ever stored: decoding absorbs kv_b_proj's key half into the query
// (q_lat = W_uk^T q_nope, so q_nope . k_nope = q_lat . c_kv) and its value half into the output
// (o = W_uv . sum_t p_t c_kv[t]), the weights rounded like the training GEMM's.
// Letters: S slots, P positions per slot, C = kv_lora + rope (one cache row), H heads.
#pragma once
#include <cstdint>
#include <vector>

#include "framework/config.h"
#include "framework/tensor.h"

namespace moe {

class DeepSeekV3;

// One decode step, the same for every layer: n new tokens, token i at position pos_i of its slot.
// Offsets count floats from the start of a layer's cache tensor.
struct LatentStep {
  int64_t n = 0;
  int64_t max_len = 0;                         // the largest length[i]
  const float* cos = nullptr;                  // [n, rope/2] on the compute device: RoPE at pos_i
  const float* sin = nullptr;
  const int64_t* row_offset = nullptr;         // device [n]: the token's slot, position 0
  const int64_t* length = nullptr;             // device [n]: positions it attends to (pos_i + 1)
  std::vector<int64_t> write_offset;           // host [n]: where its own cache row goes
};

struct KVCache {
  // Allocated on the compute device for `model` at its current precision (the absorbed weights
  // are derived from its parameters now: make a new cache after the weights change).
  KVCache(const DeepSeekV3& model, int64_t slots, int64_t positions);

  int64_t slots = 0, positions = 0, width = 0;  // width C = kv_lora + rope
  std::vector<Tensor> rows;                     // per layer [S, P, C]
  std::vector<Tensor> kv_b;                     // per layer kv_b_proj's weight as its GEMM reads it [H*(nope+v), kv_lora]
  std::vector<int64_t> length;                  // filled positions per slot (host)
  // MTP module 1's block (self-speculative decoding, DeepSeekV3::mtp_draft), when the model has
  // MTP: its own rows and filled positions per slot (one behind the main model's: its position i
  // needs token i+1).
  Tensor mtp_rows;                              // [S, P, C]
  Tensor mtp_kv_b;
  std::vector<int64_t> mtp_length;
  std::vector<float> rope_cos, rope_sin;        // RoPE tables of every position [P, rope/2] (host)

  // Cache row of (layer, slot, position 0): the slot's positions follow contiguously.
  float* slot_rows(int layer, int64_t slot) { return rows[layer].f32() + slot * positions * width; }
  // Bytes per cached token (all layers, f32), and what a full per-head K and V cache of the same
  // model would take (H * (nope + rope + v) per layer).
  static int64_t bytes_per_token(const ModelConfig& c);
  static int64_t full_kv_bytes_per_token(const ModelConfig& c);
  int64_t bytes() const;  // allocated, all layers
};

}  // namespace moe
