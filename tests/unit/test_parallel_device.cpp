// What `moe train` does on a GPU, on the emulated device (emulated_device.h): one process's
// DistributedModel (FSDP state in device memory, groups of one), initialised through
// host_pieces()/upload_host_pieces(), trained with the sharded optimizer, its checkpoint pieces
// downloaded and loaded back. Everything must equal the same steps on the CPU bit for bit, and the
// host never touches device memory (it would fault).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "emulated_device.h"
#include "framework/config.h"
#include "framework/rng.h"
#include "framework/threads.h"
#include "parallel/distributed_model.h"

using namespace moe;

namespace {

struct Trace {
  std::vector<double> loss, grad_norm;
  std::vector<float> state;  // every piece's value and moments, from host_pieces()
  double loss_after_reload = 0;
};

std::vector<float> flatten(const std::vector<ShardPiece>& pieces) {
  std::vector<float> out;
  for (const ShardPiece& p : pieces)
    for (const float* src : {p.value, p.exp_avg, p.exp_avg_sq})
      if (src) out.insert(out.end(), src, src + (p.end - p.begin));
  return out;
}

Trace train(Backend& b, const Comm& world, const Config& cfg) {
  ComputeScope scope(b);
  DistributedModel dm(world, cfg);
  dm.fsdp.initialize(cfg.run.seed);
  const int64_t B = 2, T = cfg.data.seq_len, N = B * T;
  std::vector<int32_t> ids(N), tgt(N);
  for (int64_t i = 0; i < N; ++i) {
    ids[i] = int32_t(rng_bits(9, 1, uint64_t(i)) % uint64_t(cfg.model.vocab_size));
    tgt[i] = int32_t(rng_bits(9, 2, uint64_t(i)) % uint64_t(cfg.model.vocab_size));
  }
  Trace t;
  auto step = [&] {
    dm.fsdp.zero_grads();
    ForwardStats s = dm.model.forward(ids.data(), tgt.data(), B, T);
    dm.model.backward(1.f);
    dm.fsdp.finish_grads();
    const double gn = dm.fsdp.grad_norm();
    dm.fsdp.step(1e-2, gn > 1.0 ? float(1.0 / gn) : 1.f);
    dm.model.update_router_bias(0.01f);
    return std::pair{s.loss, gn};
  };
  for (int i = 0; i < 3; ++i) {
    auto [loss, gn] = step();
    t.loss.push_back(loss);
    t.grad_norm.push_back(gn);
  }
  // A checkpoint's round trip: the pieces in host memory, changed there, loaded back.
  std::vector<ShardPiece> pieces = dm.fsdp.host_pieces();
  t.state = flatten(pieces);
  for (const ShardPiece& p : pieces) std::fill(p.value, p.value + (p.end - p.begin), 0.01f);
  dm.fsdp.upload_host_pieces();
  t.loss_after_reload = dm.model.forward(ids.data(), tgt.data(), B, T).loss;
  return t;
}

}  // namespace

TEST(ParallelOnDevice, OneProcessTrainsAndCheckpointsLikeTheCpu) {
  set_num_threads(2);
  const char* src = std::getenv("MOE_SOURCE_DIR");
  Comm world(nullptr, nullptr);  // a world of one (MPI is initialised once per process)
  for (const char* precision : {"fp32", "fp8"}) {
    Config cfg = load_config(std::string(src ? src : ".") + "/configs/tiny.yaml",
                             {std::string("train.precision=") + precision});
    Trace cpu = train(cpu_backend(), world, cfg);
    test::EmulatedDevice device;
    Trace dev = train(device, world, cfg);
    EXPECT_GT(device.ops(), 200);
    EXPECT_EQ(cpu.loss, dev.loss) << precision;
    EXPECT_EQ(cpu.grad_norm, dev.grad_norm) << precision;
    ASSERT_EQ(cpu.state.size(), dev.state.size());
    EXPECT_EQ(0, std::memcmp(cpu.state.data(), dev.state.data(), cpu.state.size() * sizeof(float))) << precision;
    EXPECT_EQ(cpu.loss_after_reload, dev.loss_after_reload) << precision;
    EXPECT_NE(cpu.loss_after_reload, cpu.loss.back());  // the loaded values took effect
  }
}
