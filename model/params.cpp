#include "model/params.h"

#include <cmath>

#include "framework/backend.h"
#include "framework/bf16_weights.h"
#include "framework/error.h"
#include "framework/rng.h"
#include "framework/threads.h"

namespace moe {

int ParamStore::begin_unit(const std::string& name, UnitKind kind, int expert_part) {
  MOE_CHECK(!allocated_, "unit ", name, " begun after allocate()");
  MOE_CHECK(kind != UnitKind::Replicated, "the replicated unit is made by add()");
  units_.push_back({name, kind, expert_part, 0, 0, {}, nullptr, nullptr});
  current_unit_ = int(units_.size()) - 1;
  return current_unit_;
}

int ParamStore::add(const std::string& name, const Shape& shape, Init init, float init_std, bool decay,
                    bool trainable) {
  MOE_CHECK(!allocated_, "parameter ", name, " added after allocate()");
  MOE_CHECK(find(name) < 0, "duplicate parameter ", name);
  if (current_unit_ < 0) begin_unit("main");
  int u = current_unit_;
  if (!trainable) {
    if (replicated_unit_ < 0) {
      units_.push_back({"buffers", UnitKind::Replicated, -1, 0, 0, {}, nullptr, nullptr});
      replicated_unit_ = int(units_.size()) - 1;
    }
    u = replicated_unit_;
  }
  ParamUnit& unit = units_[u];
  ParamInfo p{name, shape, u, unit.numel, 0, init, init_std, decay, trainable};
  // Keep every parameter 64-byte aligned inside its unit (and the units inside the flat buffer).
  unit.numel += (shape_numel(shape) + 15) / 16 * 16;
  unit.params.push_back(int(infos_.size()));
  infos_.push_back(p);
  return int(infos_.size()) - 1;
}

// Flat offsets: units back to back in the order they were begun.
void ParamStore::layout() {
  total_ = 0;
  for (ParamUnit& u : units_) {
    u.offset = total_;
    total_ += u.numel;
  }
  for (ParamInfo& p : infos_) p.offset = units_[p.unit].offset + p.unit_offset;
  allocated_ = true;
}

void ParamStore::allocate() {
  layout();
  device_ = compute().device();
  params_ = Tensor::zeros({total_}, DType::F32, device_);
  grads_ = Tensor::zeros({total_}, DType::F32, device_);
  flat_ = true;
  for (ParamUnit& u : units_) {
    u.data = params_.f32() + u.offset;
    u.grad = grads_.f32() + u.offset;
  }
}

void ParamStore::allocate_unbound() { layout(); }

void ParamStore::bind(int unit, float* data, float* grad) {
  MOE_CHECK(!flat_, "bind() on a ParamStore with its own storage");
  // bf16 copies of what the unit held, or of what last lived where it now points, are stale.
  ParamUnit& u = units_.at(unit);
  bf16_weights_forget(u.data, u.numel);
  bf16_weights_forget(data, u.numel);
  u.data = data;
  u.grad = grad;
}

void ParamStore::init_values(int id, int64_t begin, int64_t end, float* out, uint64_t seed) const {
  const ParamInfo& p = infos_.at(id);
  const int64_t n = end - begin;
  switch (p.init) {
    case Init::Ones: for (int64_t i = 0; i < n; ++i) out[i] = 1.f; break;
    case Init::Zeros: for (int64_t i = 0; i < n; ++i) out[i] = 0.f; break;
    case Init::Normal: {
      const uint64_t stream = hash_name(p.name);
      parallel_for(n, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) out[i] = p.init_std * rng_normal(seed, stream, uint64_t(begin + i));
      }, 4096);
      break;
    }
  }
}

void ParamStore::initialize(uint64_t seed) {
  MOE_CHECK(flat_, "initialize() needs allocate()");
  Tensor host = device_ == Device::CPU ? params_ : Tensor::zeros({total_});
  for (size_t i = 0; i < infos_.size(); ++i)
    init_values(int(i), 0, shape_numel(infos_[i].shape), host.f32() + infos_[i].offset, seed);
  if (device_ != Device::CPU) params_.copy_from(host);
}

Tensor ParamStore::param(int id) const {
  const ParamInfo& p = infos_.at(id);
  const ParamUnit& u = units_[p.unit];
  MOE_CHECK(u.data, "parameter ", p.name, " used while its unit ", u.name, " is not gathered");
  return Tensor::borrow(u.data + p.unit_offset, p.shape, DType::F32, device_);
}

Tensor ParamStore::grad(int id) const {
  const ParamInfo& p = infos_.at(id);
  const ParamUnit& u = units_[p.unit];
  MOE_CHECK(u.grad, "gradient of ", p.name, " used while its unit ", u.name, " has no gradient buffer");
  return Tensor::borrow(u.grad + p.unit_offset, p.shape, DType::F32, device_);
}

int ParamStore::find(const std::string& name) const {
  for (size_t i = 0; i < infos_.size(); ++i)
    if (infos_[i].name == name) return int(i);
  return -1;
}

int64_t ParamStore::trainable_numel() const {
  int64_t n = 0;
  for (const ParamInfo& p : infos_)
    if (p.trainable) n += shape_numel(p.shape);
  return n;
}

std::vector<OptSegment> trainable_segments(const ParamStore& ps) {
  std::vector<OptSegment> out;
  for (const ParamInfo& p : ps.infos())
    if (p.trainable) out.push_back({p.offset, shape_numel(p.shape), p.decay});
  return out;
}

double grad_norm(const ParamStore& ps) { return std::sqrt(sum_squares(ps.grads(), trainable_segments(ps))); }

}  // namespace moe
