// Glue between the model and its checkpoints (launch/ is the only place that knows both):
// which named tensors a checkpoint holds, and how a model and optimizer come back from one.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "model/model.h"
#include "model/optimizer.h"

namespace moe {

// Parameters under their Hugging Face names; with an optimizer, its moments as
// "optimizer.exp_avg.<name>" and "optimizer.exp_avg_sq.<name>" (trainable parameters only).
std::vector<NamedTensor> checkpoint_tensors(const DeepSeekV3& model, AdamW* opt);

// Reads every tensor of checkpoint_tensors() back; errors name the checkpoint and dataset.
void load_checkpoint_tensors(const CheckpointReader& ckpt, DeepSeekV3& model, AdamW* opt);

// A model built from the config stored in the checkpoint, weights loaded.
std::unique_ptr<DeepSeekV3> load_model(const CheckpointReader& ckpt);

}  // namespace moe
