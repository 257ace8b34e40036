#include "launch/model_io.h"

namespace moe {

namespace {

Tensor slice(const Tensor& flat, const ParamInfo& p) {
  return Tensor::borrow(flat.f32() + p.offset, p.shape);
}

}  // namespace

std::vector<NamedTensor> checkpoint_tensors(const DeepSeekV3& model, AdamW* opt) {
  const ParamStore& ps = model.params();
  std::vector<NamedTensor> out;
  for (size_t i = 0; i < ps.infos().size(); ++i) out.push_back({ps.infos()[i].name, ps.param(int(i))});
  if (opt)
    for (const ParamInfo& p : ps.infos()) {
      if (!p.trainable) continue;
      out.push_back({"optimizer.exp_avg." + p.name, slice(opt->exp_avg(), p)});
      out.push_back({"optimizer.exp_avg_sq." + p.name, slice(opt->exp_avg_sq(), p)});
    }
  return out;
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
