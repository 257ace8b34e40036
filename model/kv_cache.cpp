#include "model/kv_cache.h"

#include <algorithm>
#include <optional>

#include "framework/backend.h"
#include "framework/ops.h"
#include "framework/precision.h"
#include "framework/scratch.h"
#include "framework/threads.h"
#include "model/model.h"

namespace moe {

namespace {

// kv_b_proj's weight as its GEMM reads it at precision p (precision.h): the absorbed decode then
// multiplies by the same values the training-form forward does.
Tensor gemm_view_of_weight(const Tensor& w, Precision p) {
  Tensor host = w.to(Device::CPU);
  const int64_t R = host.dim(0), C = host.dim(1);
  if (p == Precision::BF16) round_bf16(host.f32(), host.f32(), R * C);
  if (p == Precision::FP8) fp8_quantize_128x128(host.f32(), host.f32(), R, C);
  return host.to(compute().device());
}

}  // namespace

KVCache::KVCache(const DeepSeekV3& model, int64_t slots_, int64_t positions_)
    : slots(slots_), positions(positions_), length(size_t(slots_), 0) {
  const ModelConfig& c = model.config();
  MOE_CHECK(slots > 0 && positions > 0, "KVCache: slots and positions must be positive");
  width = c.kv_lora_rank + c.qk_rope_dim;
  for (const Block& b : model.blocks()) {
    rows.push_back(Tensor::zeros({slots, positions, width}, DType::F32, compute().device()));
    kv_b.push_back(gemm_view_of_weight(model.params().param(b.self_attn.kv_b_proj.w), b.prec));
  }
  if (!model.mtp_modules().empty()) {
    const Block& b = model.mtp_modules()[0].block;
    mtp_rows = Tensor::zeros({slots, positions, width}, DType::F32, compute().device());
    mtp_kv_b = gemm_view_of_weight(model.params().param(b.self_attn.kv_b_proj.w), b.prec);
    mtp_length.assign(size_t(slots), 0);
  }
  rope_cos.resize(size_t(positions * (c.qk_rope_dim / 2)));
  rope_sin.resize(rope_cos.size());
  rope_tables(rope_cos.data(), rope_sin.data(), positions, c.qk_rope_dim, c.rope_theta);
}

int64_t KVCache::bytes_per_token(const ModelConfig& c) {
  return int64_t(c.layers) * (c.kv_lora_rank + c.qk_rope_dim) * int64_t(sizeof(float));
}

int64_t KVCache::full_kv_bytes_per_token(const ModelConfig& c) {
  return int64_t(c.layers) * c.heads * (c.qk_nope_dim + c.qk_rope_dim + c.v_head_dim) * int64_t(sizeof(float));
}

int64_t KVCache::bytes() const {
  int64_t b = 0;
  for (const Tensor& t : rows) b += t.nbytes();
  for (const Tensor& t : kv_b) b += t.nbytes();
  return b + mtp_rows.nbytes() + mtp_kv_b.nbytes();
}

Tensor DeepSeekV3::prefill(KVCache& cache, int64_t slot, const int32_t* ids, int64_t T) {
  MOE_CHECK(slot >= 0 && slot < cache.slots, "prefill: slot ", slot, " of ", cache.slots);
  MOE_CHECK(T >= 1 && T <= cache.positions, "prefill: ", T, " tokens for a cache of ", cache.positions, " positions");
  B_ = 1; T_ = T;
  scored_N_ = 0;
  upload_tokens(ids_N, ids, T);
  run_blocks(1, T, /*count_load=*/false, &cache, slot);
  cache.length[size_t(slot)] = T;
  keep_hidden(resid_[cfg_.layers].f32() + (T - 1) * cfg_.hidden, 1);
  if (cache.mtp_rows.defined() && cache.mtp_rows.numel() > 0) mtp_prefill(cache, slot, ids, T);
  return head_logits(resid_[cfg_.layers].f32(), 1, T);
}

void DeepSeekV3::keep_hidden(const float* x, int64_t n) {
  hidden_.ensure({n, int64_t(cfg_.hidden)});
  compute().copy(hidden_.raw(), x, size_t(n * cfg_.hidden) * sizeof(float));
}

// Token i of a decode step goes to position base[slot] + (how many earlier tokens of the step are in
// its slot): a slot may take consecutive positions in one step (speculative verification), each
// attending to the rows before it, its own step's included (MLA::decode writes every row first).
void DeepSeekV3::plan_latent_step(LatentStep& step, LatentStepBuffers& buf, const KVCache& cache,
                                  const std::vector<int64_t>& base, const int64_t* slots, int64_t n) const {
  const int64_t half = cfg_.qk_rope_dim / 2, C = cache.width;
  step.n = n;
  std::vector<float> cos(size_t(n * half)), sin(cos.size());
  std::vector<int64_t> row_offset(static_cast<size_t>(n)), length(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = slots[i];
    MOE_CHECK(s >= 0 && s < cache.slots, "decode: slot ", s, " of ", cache.slots);
    int64_t pos = base[size_t(s)];
    for (int64_t i2 = 0; i2 < i; ++i2) pos += slots[i2] == s;
    MOE_CHECK(pos < cache.positions, "decode: slot ", s, " is full (", cache.positions, " positions)");
    std::copy_n(cache.rope_cos.begin() + pos * half, half, cos.begin() + i * half);
    std::copy_n(cache.rope_sin.begin() + pos * half, half, sin.begin() + i * half);
    row_offset[size_t(i)] = s * cache.positions * C;
    length[size_t(i)] = pos + 1;
    step.write_offset.push_back(row_offset[size_t(i)] + pos * C);
    step.max_len = std::max(step.max_len, pos + 1);
  }
  buf.cos = scratch({n, half});
  buf.sin = scratch({n, half});
  buf.offset = scratch({n}, DType::I64);
  buf.length = scratch({n}, DType::I64);
  compute().upload(buf.cos.raw(), cos.data(), cos.size() * sizeof(float));
  compute().upload(buf.sin.raw(), sin.data(), sin.size() * sizeof(float));
  compute().upload(buf.offset.raw(), row_offset.data(), row_offset.size() * sizeof(int64_t));
  compute().upload(buf.length.raw(), length.data(), length.size() * sizeof(int64_t));
  step.cos = buf.cos.f32();
  step.sin = buf.sin.f32();
  step.row_offset = buf.offset.data<int64_t>();
  step.length = buf.length.data<int64_t>();
}

Tensor DeepSeekV3::decode(KVCache& cache, const int64_t* slots, const int32_t* ids, int64_t n) {
  // One or two tokens: every op is too small to split over threads (measured on the demo model,
  // 2 threads: 1.4x faster serial at batch 1; at batch 16 the pool wins).
  std::optional<SerialScope> serial;
  if (n <= 2) serial.emplace();
  const int64_t D = cfg_.hidden;
  ScratchScope scope;
  // Each token's position, RoPE rows and cache offsets, gathered on the host and uploaded once.
  LatentStep step;
  LatentStepBuffers buf;
  plan_latent_step(step, buf, cache, cache.length, slots, n);

  Tensor x = scratch({n, D}), y = scratch({n, D}), tokens = scratch({n}, DType::I32);
  compute().upload(tokens.raw(), ids, size_t(n) * sizeof(int32_t));
  units_.run(embed_cu_, Pass::Forward, [&] {
    compute().embedding_forward(x.f32(), tokens.data<int32_t>(), ps_.param(embed_tokens).f32(), n, D);
  });
  for (int l = 0; l < cfg_.layers; ++l) {
    units_.run(block_cu(l), Pass::Forward, [&] {
      blocks_[l].decode(ps_, y.f32(), x.f32(), step, cache.rows[l].f32(), cache.kv_b[l].f32(), decode_acts_);
    });
    std::swap(x, y);
  }
  for (int64_t i = 0; i < n; ++i) ++cache.length[size_t(slots[i])];
  keep_hidden(x.f32(), n);
  return head_logits(x.f32(), n, 1);
}

}  // namespace moe
