#include "launch/model_io.h"

namespace moe {

std::vector<NamedTensor> checkpoint_tensors(const ParamStore& ps, const float* params, const float* exp_avg,
                                            const float* exp_avg_sq, bool with_optimizer) {
  auto view = [](const float* flat, const ParamInfo& p) {
    return Tensor::borrow(flat ? const_cast<float*>(flat) + p.offset : nullptr, p.shape);
  };
  std::vector<NamedTensor> out;
  for (const ParamInfo& p : ps.infos()) out.push_back({p.name, view(params, p)});
  if (with_optimizer)
    for (const ParamInfo& p : ps.infos()) {
      if (!p.trainable) continue;
      out.push_back({"optimizer.exp_avg." + p.name, view(exp_avg, p)});
      out.push_back({"optimizer.exp_avg_sq." + p.name, view(exp_avg_sq, p)});
    }
  return out;
}

std::vector<NamedTensor> checkpoint_tensors(const DeepSeekV3& model, AdamW* opt) {
  const ParamStore& ps = model.params();
  return checkpoint_tensors(ps, ps.params(), opt ? opt->exp_avg().f32() : nullptr,
                            opt ? opt->exp_avg_sq().f32() : nullptr, opt != nullptr);
}

void load_checkpoint_pieces(const CheckpointReader& ckpt, const ParamStore& ps, const std::vector<ShardPiece>& pieces) {
  for (const ShardPiece& piece : pieces) {
    const ParamInfo& p = ps.infos()[piece.param];
    std::pair<std::string, float*> targets[3] = {{p.name, piece.value},
                                                 {"optimizer.exp_avg." + p.name, piece.exp_avg},
                                                 {"optimizer.exp_avg_sq." + p.name, piece.exp_avg_sq}};
    for (auto& [name, dst] : targets) {
      if (!dst) continue;
      Tensor full = Tensor::empty(p.shape);
      ckpt.read(name, full);
      std::copy(full.f32() + piece.begin, full.f32() + piece.end, dst);
    }
  }
}

void load_checkpoint_tensors(const CheckpointReader& ckpt, DeepSeekV3& model, AdamW* opt) {
  for (NamedTensor& t : checkpoint_tensors(model, opt)) ckpt.read(t.name, t.tensor);
}

std::unique_ptr<DeepSeekV3> load_model(const CheckpointReader& ckpt) {
  Config cfg = parse_config(ckpt.config_yaml(), ckpt.dir() + "/config.yaml");
  auto model = std::make_unique<DeepSeekV3>(cfg.model);
  load_checkpoint_tensors(ckpt, *model, nullptr);
  return model;
}

}  // namespace moe
