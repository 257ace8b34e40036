#include "launch/model_io.h"

#include "framework/backend.h"

namespace moe {

namespace {

// A parameter's dataset and its two AdamW moments' (the moments only for trainable parameters).
struct DatasetNames {
  std::string value, exp_avg, exp_avg_sq;
};
DatasetNames dataset_names(const std::string& param) {
  return {param, "optimizer.exp_avg." + param, "optimizer.exp_avg_sq." + param};
}

}  // namespace

std::vector<NamedTensor> checkpoint_tensors(const DeepSeekV3& model, AdamW* opt) {
  const ParamStore& ps = model.params();
  auto view = [](float* flat, const ParamInfo& p) { return Tensor::borrow(flat + p.offset, p.shape); };
  std::vector<NamedTensor> out;
  for (const ParamInfo& p : ps.infos()) out.push_back({p.name, view(ps.params(), p)});
  if (opt)
    for (const ParamInfo& p : ps.infos()) {
      if (!p.trainable) continue;
      DatasetNames n = dataset_names(p.name);
      out.push_back({n.exp_avg, view(opt->exp_avg().f32(), p)});
      out.push_back({n.exp_avg_sq, view(opt->exp_avg_sq().f32(), p)});
    }
  return out;
}

std::vector<DatasetSpec> checkpoint_datasets(const ParamStore& ps) {
  std::vector<DatasetSpec> out;
  for (const ParamInfo& p : ps.infos()) out.push_back({p.name, p.shape, DType::F32});
  for (const ParamInfo& p : ps.infos()) {
    if (!p.trainable) continue;
    DatasetNames n = dataset_names(p.name);
    out.push_back({n.exp_avg, p.shape, DType::F32});
    out.push_back({n.exp_avg_sq, p.shape, DType::F32});
  }
  return out;
}

std::vector<TensorPiece> checkpoint_pieces(const ParamStore& ps, const std::vector<ShardPiece>& pieces,
                                           bool with_replicated) {
  std::vector<TensorPiece> out;
  for (const ShardPiece& p : pieces) {
    if (p.replicated && !with_replicated) continue;
    const ParamInfo& info = ps.infos()[p.param];
    const Shape n = {p.end - p.begin};
    DatasetNames names = dataset_names(info.name);
    out.push_back({names.value, info.shape, p.begin, Tensor::borrow(p.value, n)});
    if (!p.exp_avg) continue;
    out.push_back({names.exp_avg, info.shape, p.begin, Tensor::borrow(p.exp_avg, n)});
    out.push_back({names.exp_avg_sq, info.shape, p.begin, Tensor::borrow(p.exp_avg_sq, n)});
  }
  return out;
}

void load_checkpoint_pieces(const CheckpointReader& ckpt, const ParamStore& ps, const std::vector<ShardPiece>& pieces) {
  for (const ShardPiece& piece : pieces) {
    const ParamInfo& p = ps.infos()[piece.param];
    DatasetNames n = dataset_names(p.name);
    std::pair<const std::string&, float*> targets[3] = {
        {n.value, piece.value}, {n.exp_avg, piece.exp_avg}, {n.exp_avg_sq, piece.exp_avg_sq}};
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
  if (model->params().device() == Device::CPU) {
    load_checkpoint_tensors(ckpt, *model, nullptr);
    return model;
  }
  // On a device: read into a host copy of the model, then upload its flat buffer.
  ComputeScope on_host(cpu_backend());
  DeepSeekV3 host(cfg.model);
  load_checkpoint_tensors(ckpt, host, nullptr);
  device_backend(model->params().device())
      .upload(model->params().params(), host.params().params(), size_t(host.params().numel()) * sizeof(float));
  return model;
}

}  // namespace moe
