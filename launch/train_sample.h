// Samples during training (train.sample_every): text generated from the current weights, without
// touching the training state.
//
// Under FSDP no rank holds the whole model, so the weights are first gathered the way a sharded
// checkpoint is written: every rank contributes its pieces of the logical tensors (named, so any
// dp × ep layout fits), and rank 0 assembles them into a model of its own. That model decodes
// with the latent KV cache (launch/generator.h); the training model, its router biases, its expert
// loads, the data order and every RNG stream are left as they were, so a run with samples trains
// the same numbers as one without.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data_pipeline/tokenizer.h"
#include "model/model.h"
#include "parallel/comm.h"
#include "parallel/fsdp.h"

namespace moe {

// Collective over world. Rank 0 gets a single-process model (own storage, on the compute device,
// at the sharded model's precision) holding every rank's current parameter values; other ranks
// get null. `pieces` are this rank's ShardedModel::pieces() (device memory), `ps` their store.
std::unique_ptr<DeepSeekV3> gather_model(const Comm& world, const ModelConfig& config, const ParamStore& ps,
                                         const std::vector<ShardPiece>& pieces, Precision precision);

struct SampleOptions {
  std::string prompt;       // "" starts a new document
  int64_t tokens = 100;     // generated tokens (fewer if the model ends the document)
  double temperature = 0.8;
  uint64_t seed = 0;
  int64_t context = 256;    // the model's trained context; longer samples slide the window
};

// The text generated after the prompt (single sequence, KV cache).
std::string generate_sample(DeepSeekV3& model, const Tokenizer& tok, const SampleOptions& opt);

}  // namespace moe
