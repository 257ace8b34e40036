// Multi-process training on a device (FSDP gathers and reduce-scatters, expert all-to-all on
// device buffers through parallel/group.h), on the emulated device of tests/unit/emulated_device.h:
// each rank's DistributedModel computes in memory the host may not touch, its collectives run
// through a group that checks the buffers are device memory and holds that memory open from post
// to completion (MPI reads it then). Every rank's losses, gradient norms and state must equal the
// same job on the CPU bit for bit, for ep 1 and ep 2, and fp8 with fp8_dispatch at ep 2. What this
// proves for GPUs: the FSDP and expert-exchange code keeps every buffer on the device and waits
// before use; NCCL itself is tested by tests/gpu/test_gpu_nccl.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../unit/emulated_device.h"
#include "framework/config.h"
#include "framework/rng.h"
#include "framework/threads.h"
#include "parallel/distributed_model.h"

using namespace moe;

namespace {

test::EmulatedDevice* g_device = nullptr;

struct HeldPending final : PendingCollective {
  HeldPending(Pending p, test::EmulatedDevice* d) : inner(std::move(p)), device(d) {}
  ~HeldPending() override {
    inner.reset();  // waits
    if (held) device->unhold();
  }
  void wait() override {
    inner->wait();
    if (held) device->unhold(), held = false;
  }
  Pending inner;
  test::EmulatedDevice* device;
  bool held = true;
};

// MPI on emulated device buffers.
class EmulatedGroup final : public CollectiveGroup {
 public:
  explicit EmulatedGroup(const Comm& comm) : mpi_(comm) {}
  const Comm& comm() const override { return mpi_.comm(); }
  Pending iallgather(const float* send, float* recv, int64_t n) const override {
    on_device({send, recv});
    g_device->hold();
    return std::make_unique<HeldPending>(mpi_.iallgather(send, recv, n), g_device);
  }
  Pending ireduce_scatter_sum(const float* send, float* recv, int64_t n) const override {
    on_device({send, recv});
    g_device->hold();
    return std::make_unique<HeldPending>(mpi_.ireduce_scatter_sum(send, recv, n), g_device);
  }
  void allreduce_sum(float* data, int64_t n) const override {
    on_device({data});
    g_device->hold();
    mpi_.allreduce_sum(data, n);
    g_device->unhold();
  }
  void alltoallv(const float* send, Counts sc, Counts sd, float* recv, Counts rc, Counts rd) const override {
    on_device({send, recv});
    g_device->hold();
    mpi_.alltoallv(send, sc, sd, recv, rc, rd);
    g_device->unhold();
  }
  static std::unique_ptr<CollectiveGroup> make(const Comm& comm) { return std::make_unique<EmulatedGroup>(comm); }

 private:
  static void on_device(std::initializer_list<const void*> ptrs) {
    for (const void* p : ptrs) EXPECT_TRUE(g_device->owns(p)) << "a collective on a host buffer";
  }
  MpiGroup mpi_;
};

struct Trace {
  std::vector<double> loss, grad_norm;
  std::vector<float> state;
};

Trace train(Backend& b, GroupFactory groups, const Comm& world, const Config& cfg) {
  ComputeScope scope(b);
  DistributedModel dm(world, cfg, groups);
  dm.fsdp.initialize(cfg.run.seed);
  const int64_t B = 2, T = cfg.data.seq_len, N = B * T;
  std::vector<int32_t> ids(N), tgt(N);
  for (int64_t i = 0; i < N; ++i) {  // every rank its own tokens
    const uint64_t at = uint64_t(world.rank()) * uint64_t(N) + uint64_t(i);
    ids[i] = int32_t(rng_bits(4, 1, at) % uint64_t(cfg.model.vocab_size));
    tgt[i] = int32_t(rng_bits(4, 2, at) % uint64_t(cfg.model.vocab_size));
  }
  Trace t;
  for (int s = 0; s < 3; ++s) {
    dm.fsdp.zero_grads();
    ForwardStats st = dm.model.forward(ids.data(), tgt.data(), B, T);
    dm.model.backward(1.f / float(world.size()));
    dm.fsdp.finish_grads();
    world.allreduce_sum(dm.model.expert_load().f32(), dm.model.expert_load().numel());
    const double gn = dm.fsdp.grad_norm();
    dm.fsdp.step(1e-2, gn > 1.0 ? float(1.0 / gn) : 1.f);
    dm.model.update_router_bias(0.01f);
    t.loss.push_back(st.loss);
    t.grad_norm.push_back(gn);
  }
  for (const ShardPiece& p : dm.fsdp.host_pieces())
    for (const float* src : {p.value, p.exp_avg, p.exp_avg_sq})
      if (src) t.state.insert(t.state.end(), src, src + (p.end - p.begin));
  return t;
}

}  // namespace

TEST(FsdpOnDevice, EveryRankTrainsBitwiseLikeTheCpu) {
  set_num_threads(1);
  Comm world(nullptr, nullptr);
  const char* src = std::getenv("MOE_SOURCE_DIR");
  // fp32 at ep 1 and 2; fp8 with the E4M3 rows sent through the expert exchange (packed rows,
  // per-source expert weight gradients) at ep 2.
  const std::vector<std::pair<int, std::vector<std::string>>> runs = {
      {1, {}}, {2, {}}, {2, {"train.precision=fp8", "parallel.fp8_dispatch=true"}}};
  for (const auto& [ep, extra] : runs) {
    if (world.size() % ep != 0) continue;
    std::vector<std::string> overrides = extra;
    overrides.push_back("parallel.ep=" + std::to_string(ep));
    Config cfg = load_config(std::string(src ? src : ".") + "/configs/tiny.yaml", overrides);
    Trace cpu = train(cpu_backend(), &MpiGroup::make, world, cfg);
    test::EmulatedDevice device;
    g_device = &device;
    Trace dev = train(device, &EmulatedGroup::make, world, cfg);
    g_device = nullptr;
    EXPECT_GT(device.ops(), 100);
    EXPECT_EQ(cpu.loss, dev.loss) << "ep " << ep;
    EXPECT_EQ(cpu.grad_norm, dev.grad_norm) << "ep " << ep;
    ASSERT_EQ(cpu.state.size(), dev.state.size());
    EXPECT_EQ(0, std::memcmp(cpu.state.data(), dev.state.data(), cpu.state.size() * sizeof(float))) << "ep " << ep;
  }
}
