#include "model/params.h"

#include "framework/rng.h"
#include "framework/threads.h"

namespace moe {

int ParamStore::add(const std::string& name, const Shape& shape, Init init, float init_std, bool decay,
                    bool trainable) {
  MOE_CHECK(!allocated_, "parameter ", name, " added after allocate()");
  MOE_CHECK(find(name) < 0, "duplicate parameter ", name);
  ParamInfo p{name, shape, total_, init, init_std, decay, trainable};
  // Keep every parameter 64-byte aligned inside the flat buffer.
  total_ += (shape_numel(shape) + 15) / 16 * 16;
  infos_.push_back(p);
  return int(infos_.size()) - 1;
}

void ParamStore::allocate() {
  params_ = Tensor::zeros({total_});
  grads_ = Tensor::zeros({total_});
  allocated_ = true;
}

void ParamStore::initialize(uint64_t seed) {
  for (const ParamInfo& p : infos_) {
    float* w = params_.f32() + p.offset;
    int64_t n = shape_numel(p.shape);
    uint64_t stream = hash_name(p.name);
    switch (p.init) {
      case Init::Ones: for (int64_t i = 0; i < n; ++i) w[i] = 1.f; break;
      case Init::Zeros: for (int64_t i = 0; i < n; ++i) w[i] = 0.f; break;
      case Init::Normal:
        parallel_for(n, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) w[i] = p.init_std * rng_normal(seed, stream, uint64_t(i));
        }, 4096);
        break;
    }
  }
}

Tensor ParamStore::param(int id) const {
  const ParamInfo& p = infos_.at(id);
  return Tensor::borrow(params_.f32() + p.offset, p.shape);
}

Tensor ParamStore::grad(int id) const {
  const ParamInfo& p = infos_.at(id);
  return Tensor::borrow(grads_.f32() + p.offset, p.shape);
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

}  // namespace moe
