#include "parallel/fsdp.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "framework/backend.h"
#include "framework/error.h"
#include "framework/profiler.h"

namespace moe {

ShardedModel::ShardedModel(DeepSeekV3& model, const DeviceMesh& mesh, const TrainConfig& t,
                           const CollectiveGroup& shard_group, const CollectiveGroup& dp_group,
                           const CollectiveGroup* cross_group)
    : model_(model),
      ps_(model.params()),
      replica_(shard_group.comm()),
      cross_(cross_group && cross_group->size() > 1 ? cross_group : nullptr),
      mesh_(mesh) {
  MOE_CHECK(!ps_.params(), "FSDP needs a model built with ModelPlacement::own_storage = false");
  MOE_CHECK(model.placement().expert_parts == mesh.ep() && model.placement().local_part == mesh.ep_rank(),
            "model placement does not match the mesh");
  const auto& units = ps_.units();
  shard_index_.assign(units.size(), -1);
  int64_t total = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    const ParamUnit& unit = units[u];
    Shard s;
    s.unit = int(u);
    if (unit.kind == UnitKind::Sharded) {
      s.group = &shard_group;
    } else if (unit.kind == UnitKind::Expert) {
      if (unit.expert_part != mesh.ep_rank()) continue;  // another rank's experts
      s.group = &dp_group;
    }
    if (s.group && s.group->size() == 1) s.group = nullptr;
    s.g = s.group ? s.group->size() : 1;
    s.r = s.group ? s.group->rank() : 0;
    s.size = (unit.numel + s.g - 1) / s.g;
    s.size = (s.size + 15) / 16 * 16;  // shards 64-byte aligned
    s.offset = total;
    total += s.size;
    shard_index_[u] = int(shards_.size());
    shards_.push_back(std::move(s));
  }
  const Device device = compute().device();
  params_ = Tensor::zeros({total}, DType::F32, device);
  grads_ = Tensor::zeros({total}, DType::F32, device);
  // A group of one computes straight on its shard.
  for (Shard& s : shards_)
    if (!s.group) ps_.bind(s.unit, params_.f32() + s.offset, grads_.f32() + s.offset);

  std::vector<OptSegment> segments;
  for (const ShardPiece& p : pieces())
    if (ps_.infos()[p.param].trainable)
      segments.push_back({p.value - params_.f32(), p.end - p.begin, ps_.infos()[p.param].decay});
  opt_ = std::make_unique<AdamW>(total, std::move(segments), t);
  model_.set_unit_hooks(this);
}

ShardedModel::~ShardedModel() {
  model_.set_unit_hooks(nullptr);
  reducing_.clear();  // Request's destructor waits for what is still in flight
  for (Shard& s : shards_) s.gathering.reset();
}

std::vector<ShardPiece> ShardedModel::pieces() {
  std::vector<ShardPiece> out;
  float *m = opt_ ? opt_->exp_avg().f32() : nullptr, *v = opt_ ? opt_->exp_avg_sq().f32() : nullptr;
  for (const Shard& s : shards_) {
    const ParamUnit& unit = ps_.units()[s.unit];
    const int64_t lo = s.r * s.size, hi = lo + s.size;  // our slice of the unit's flat buffer
    for (int id : unit.params) {
      const ParamInfo& p = ps_.infos()[id];
      int64_t b = std::max(lo, p.unit_offset), e = std::min(hi, p.unit_offset + shape_numel(p.shape));
      if (b >= e) continue;
      int64_t at = s.offset + (b - lo);
      bool t = p.trainable && m;
      out.push_back({id, b - p.unit_offset, e - p.unit_offset, params_.f32() + at, t ? m + at : nullptr,
                     t ? v + at : nullptr, unit.kind == UnitKind::Replicated});
    }
  }
  return out;
}

void ShardedModel::initialize(uint64_t seed) {
  params_.zero_();
  std::vector<ShardPiece> host = host_pieces();
  for (const ShardPiece& p : host) ps_.init_values(p.param, p.begin, p.end, p.value, seed);
  upload_host_pieces();
}

std::vector<ShardPiece> ShardedModel::host_pieces() {
  std::vector<ShardPiece> out = pieces();
  if (params_.device() == Device::CPU) return out;
  const int64_t n = params_.numel();
  if (!host_state_.defined() || host_state_.numel() != 3 * n) host_state_ = Tensor::zeros({3, n});
  float* h = host_state_.f32();
  compute().download(h, params_.raw(), size_t(n) * sizeof(float));
  compute().download(h + n, opt_->exp_avg().raw(), size_t(n) * sizeof(float));
  compute().download(h + 2 * n, opt_->exp_avg_sq().raw(), size_t(n) * sizeof(float));
  const float *p0 = params_.f32(), *m0 = opt_->exp_avg().f32(), *v0 = opt_->exp_avg_sq().f32();
  for (ShardPiece& p : out) {
    p.value = h + (p.value - p0);
    if (p.exp_avg) p.exp_avg = h + n + (p.exp_avg - m0);
    if (p.exp_avg_sq) p.exp_avg_sq = h + 2 * n + (p.exp_avg_sq - v0);
  }
  return out;
}

void ShardedModel::upload_host_pieces() {
  if (params_.device() == Device::CPU) return;
  MOE_CHECK(host_state_.numel() == 3 * params_.numel(), "upload_host_pieces() without host_pieces()");
  const int64_t n = params_.numel();
  const float* h = host_state_.f32();
  compute().upload(params_.raw(), h, size_t(n) * sizeof(float));
  compute().upload(opt_->exp_avg().raw(), h + n, size_t(n) * sizeof(float));
  compute().upload(opt_->exp_avg_sq().raw(), h + 2 * n, size_t(n) * sizeof(float));
}

void ShardedModel::zero_grads() { grads_.zero_(); }

ShardedModel::Shard* ShardedModel::shard_of(int unit) {
  int i = shard_index_.at(unit);
  MOE_CHECK(i >= 0, "unit ", ps_.units()[unit].name, " is not held by this rank");
  return &shards_[i];
}

Tensor ShardedModel::take_buffer(int64_t n) {
  // The smallest free buffer that fits; a new one otherwise.
  auto best = pool_.end();
  for (auto it = pool_.begin(); it != pool_.end(); ++it)
    if (it->numel() >= n && (best == pool_.end() || it->numel() < best->numel())) best = it;
  Tensor b;
  if (best != pool_.end()) {
    b = std::move(*best);
    pool_.erase(best);
  } else {
    b = Tensor::empty({n}, DType::F32, compute().device());
  }
  count_gathered(n * int64_t(sizeof(float)));
  return b;
}

void ShardedModel::give_buffer(Tensor&& b, int64_t n) {
  if (!b.defined() || b.numel() == 0) return;
  count_gathered(-n * int64_t(sizeof(float)));
  pool_.push_back(std::move(b));
  // Keep a few for reuse (a block's dense part and experts, for forward and backward); free the rest.
  if (pool_.size() > 4) pool_.erase(pool_.begin());
}

void ShardedModel::count_gathered(int64_t delta) {
  gathered_bytes_ += delta;
  peak_gathered_bytes_ = std::max(peak_gathered_bytes_, gathered_bytes_);
}

void ShardedModel::prefetch(int unit) {
  Shard* s = shard_of(unit);
  if (!s->group || s->gathered) return;
  s->full = take_buffer(s->g * s->size);
  s->gathering = s->group->iallgather(params_.f32() + s->offset, s->full.f32(), s->size);
  s->gathered = true;
}

void ShardedModel::acquire(int unit) {
  Shard* s = shard_of(unit);
  if (!s->group) return;
  MOE_PHASE("fsdp_gather");
  prefetch(unit);  // posts the gather unless prefetch already did
  s->gathering->wait();
  ps_.bind(unit, s->full.f32(), nullptr);
}

void ShardedModel::release(int unit) {
  Shard* s = shard_of(unit);
  if (!s->group) return;
  if (s->gathering) s->gathering->wait();
  s->gathering.reset();
  ps_.bind(unit, nullptr, nullptr);
  give_buffer(std::move(s->full), s->g * s->size);
  s->full = {};
  s->gathered = false;
}

void ShardedModel::acquire_grad(int unit) {
  Shard* s = shard_of(unit);
  if (!s->group) return;
  acquire(unit);
  s->full_grad = take_buffer(s->g * s->size);
  compute().zero(s->full_grad.raw(), size_t(s->g * s->size) * sizeof(float));
  ps_.bind(unit, s->full.f32(), s->full_grad.f32());
}

void ShardedModel::release_grad(int unit) {
  Shard* s = shard_of(unit);
  if (!s->group) return;
  MOE_PHASE("fsdp_reduce");
  PendingReduce pr;
  pr.shard = s;
  pr.grad = std::move(s->full_grad);
  s->full_grad = {};
  pr.part = take_buffer(s->size);
  pr.req = s->group->ireduce_scatter_sum(pr.grad.f32(), pr.part.f32(), s->size);
  reducing_.push_back(std::move(pr));
  release(unit);
  // One reduction in flight while the next block computes; the older one is finished now.
  while (reducing_.size() > 1) complete_reduce();
}

void ShardedModel::complete_reduce() {
  PendingReduce& pr = reducing_.front();
  pr.req->wait();
  float* g = grads_.f32() + pr.shard->offset;
  compute().add(g, g, pr.part.f32(), pr.shard->size);
  give_buffer(std::move(pr.grad), pr.shard->g * pr.shard->size);
  give_buffer(std::move(pr.part), pr.shard->size);
  reducing_.pop_front();
}

void ShardedModel::finish_grads() {
  MOE_PHASE("fsdp_reduce");
  while (!reducing_.empty()) complete_reduce();
  // Every replica now holds its own sum of the step's gradients for the same shards; one
  // all-reduce of the shard-sized buffer makes it the sum over the world.
  if (cross_) cross_->allreduce_sum(grads_.f32(), grads_.numel());
}

double ShardedModel::grad_norm() const {
  double s = sum_squares(grads_.f32(), opt_->segments());
  replica_.allreduce_sum(&s, 1);
  return std::sqrt(s);
}

void ShardedModel::step(double lr, float grad_scale) {
  MOE_CHECK(reducing_.empty(), "optimizer step with gradient reductions in flight (call finish_grads)");
  opt_->step(params_.f32(), grads_.f32(), lr, grad_scale);
}

ShardMemory ShardedModel::memory() const {
  ShardMemory m;
  // Parameters, gradients and the two moments: four f32 values per element.
  m.shard_bytes = params_.numel() * 4 * int64_t(sizeof(float));
  m.peak_gathered_bytes = peak_gathered_bytes_;
  m.full_bytes = ps_.numel() * 4 * int64_t(sizeof(float));
  return m;
}

}  // namespace moe
