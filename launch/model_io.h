// Glue between the model and its checkpoints (launch/ is the only place that knows both):
// which named tensors a checkpoint holds, and how a model and optimizer come back from one.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "model/model.h"
#include "framework/optimizer.h"
#include "parallel/fsdp.h"

namespace moe {

// Parameters under their Hugging Face names; with an optimizer, its moments as
// "optimizer.exp_avg.<name>" and "optimizer.exp_avg_sq.<name>" (trainable parameters only).
std::vector<NamedTensor> checkpoint_tensors(const DeepSeekV3& model, AdamW* opt);
// Sharded (FSDP) saves: every dataset of such a checkpoint (names and shapes, f32), and one rank's
// pieces of them (its ShardedModel::pieces(); the replicated buffers only where with_replicated).
std::vector<DatasetSpec> checkpoint_datasets(const ParamStore& ps);
std::vector<TensorPiece> checkpoint_pieces(const ParamStore& ps, const std::vector<ShardPiece>& pieces,
                                           bool with_replicated);

// Reads every tensor of checkpoint_tensors() back; errors name the checkpoint and dataset.
void load_checkpoint_tensors(const CheckpointReader& ckpt, DeepSeekV3& model, AdamW* opt);
// Fills one rank's shards (parallel/fsdp.h) from the logical tensors of a checkpoint saved with
// any layout: each piece is a range of a parameter's flattened tensor.
void load_checkpoint_pieces(const CheckpointReader& ckpt, const ParamStore& ps, const std::vector<ShardPiece>& pieces);

// A model built from the config stored in the checkpoint, weights loaded, on the compute device
// (framework/backend.h; read on the host, then uploaded).
std::unique_ptr<DeepSeekV3> load_model(const CheckpointReader& ckpt);

}  // namespace moe
