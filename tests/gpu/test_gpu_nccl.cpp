// The NCCL process group (parallel/nccl_comm.h) against the MPI Comm: every collective runs on the
// same per-rank inputs through both, and the NCCL result (copied to the host) must match the MPI
// one. Run as a plain executable it is a world of one rank (MPI singleton); under
// `mpirun -np N` on a machine with N GPUs every rank takes the GPU of its local rank. Sums may
// differ from the MPI Comm's rank-order sums in the last bits when N > 1 (NCCL adds in its ring or
// tree order); everything else must match exactly. Without a GPU (or with fewer GPUs than ranks
// on a machine) the GPU tests skip on every rank; the error-message and local-rank tests run
// anywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "framework/cuda/check.h"
#include "parallel/nccl_comm.h"
#include "parallel/node.h"
#include "tests/gpu/gpu_test.h"

namespace moe {
namespace {

Comm* g_world = nullptr;
std::unique_ptr<NcclComm> g_nccl;  // made by the first GPU test, destroyed before MPI ends

// ---- host-only: error messages and the local rank ----

TEST(NcclErrors, MessageNamesFileLineCallAndNcclString) {
  const std::string msg = nccl::error_message(ncclInvalidArgument, "ncclAllReduce(x, y)", "f.cpp", 12);
  const std::string want =
      std::string("f.cpp:12: ncclAllReduce(x, y) failed: ncclInvalidArgument (") + ncclGetErrorString(ncclInvalidArgument) + ")";
  EXPECT_EQ(msg.substr(0, want.size()), want);
  try {
    MOE_NCCL_CHECK(ncclInvalidUsage);
    FAIL() << "no throw";
  } catch (const NcclError& e) {
    EXPECT_NE(std::string(e.what()).find("ncclInvalidUsage"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("test_gpu_nccl.cpp:"), std::string::npos) << e.what();
  }
}

// Sets (or, with nullopt, unsets) an environment variable for the scope; restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    value ? setenv(name, value->c_str(), 1) : unsetenv(name);
  }
  ~ScopedEnv() { old_ ? setenv(name_, old_->c_str(), 1) : unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(NcclLocalRank, FromMpirunSlurmOrSharedMemoryGroup) {
  {
    ScopedEnv a("OMPI_COMM_WORLD_LOCAL_RANK", "3"), b("OMPI_COMM_WORLD_LOCAL_SIZE", "4");
    int size = -1;
    EXPECT_EQ(local_rank(*g_world, &size), 3);
    EXPECT_EQ(size, 4);
  }
  {
    ScopedEnv a("OMPI_COMM_WORLD_LOCAL_RANK", std::nullopt), b("OMPI_COMM_WORLD_LOCAL_SIZE", std::nullopt);
    ScopedEnv c("SLURM_LOCALID", "1"), d("SLURM_TASKS_PER_NODE", "2(x3)");
    int size = -1;
    EXPECT_EQ(local_rank(*g_world, &size), 1);
    EXPECT_EQ(size, 2);
  }
  {
    // Neither launcher: the ranks sharing this machine's memory (collective over the world).
    ScopedEnv a("OMPI_COMM_WORLD_LOCAL_RANK", std::nullopt), b("SLURM_LOCALID", std::nullopt);
    int size = -1;
    const int rank = local_rank(*g_world, &size);
    EXPECT_GE(rank, 0);
    EXPECT_LT(rank, size);
    EXPECT_LE(size, g_world->size());
  }
}

// ---- on the GPU ----

class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Skip on every rank when any rank lacks its own GPU (NCCL needs one device per rank).
    std::string why;
    const int devices = cuda::device_count(&why);
    int local_size = 0;
    local_rank(*g_world, &local_size);
    if (devices > 0 && local_size > devices) why = "fewer GPUs than ranks on this machine";
    double missing = (devices == 0 || local_size > devices) ? 1 : 0;
    g_world->allreduce_sum(&missing, 1);
    if (missing > 0)
      GTEST_SKIP() << "no CUDA device for every rank (" << (why.empty() ? "another rank" : why)
                   << "); run on a GPU machine with ctest -L gpu, or mpirun -np <GPUs> tests/test_gpu_nccl";
    if (!g_nccl) g_nccl = std::make_unique<NcclComm>(*g_world);
  }
  void TearDown() override {
    if (g_nccl) cuda::synchronize();
  }

  int rank() const { return g_world->rank(); }
  int size() const { return g_world->size(); }
  // Sums over more than one rank may be added in another order by NCCL.
  double sum_tol() const { return size() == 1 ? 0.0 : 1e-6; }
};

using gpu_test::expect_close;
using gpu_test::randn;
using gpu_test::to_device;
using gpu_test::to_host;

TEST_F(NcclTest, AllReduceSumMatchesMpi) {
  for (int64_t n : {1, 1000, 1 << 20}) {
    const auto x = randn(size_t(n), 100 + uint32_t(rank()));
    auto want = x;
    g_world->allreduce_sum(want.data(), n);
    auto d = to_device(x);
    g_nccl->allreduce_sum(d.get(), n);
    expect_close(to_host(d), want, sum_tol(), "allreduce_sum");
  }
}

TEST_F(NcclTest, AllGatherMatchesMpiAlsoInPlace) {
  const int64_t n = 777;
  const auto x = randn(size_t(n), 200 + uint32_t(rank()));
  std::vector<float> want(size_t(n * size()));
  g_world->allgather(x.data(), want.data(), n);
  auto send = to_device(x);
  cuda::DeviceBuffer<float> recv(n * size());
  g_nccl->allgather(send.get(), recv.get(), n);
  EXPECT_EQ(to_host(recv), want);

  cuda::DeviceBuffer<float> inplace(n * size());
  inplace.zero();
  MOE_CUDA_CHECK(cudaMemcpy(inplace.get() + rank() * n, x.data(), size_t(n) * sizeof(float), cudaMemcpyHostToDevice));
  g_nccl->allgather(inplace.get() + rank() * n, inplace.get(), n);
  EXPECT_EQ(to_host(inplace), want);
}

TEST_F(NcclTest, ReduceScatterSumMatchesMpi) {
  const int64_t n = 4099;
  const auto x = randn(size_t(n * size()), 300 + uint32_t(rank()));
  std::vector<float> want(static_cast<size_t>(n));
  g_world->reduce_scatter_sum(x.data(), want.data(), n);
  auto send = to_device(x);
  cuda::DeviceBuffer<float> recv(n);
  g_nccl->reduce_scatter_sum(send.get(), recv.get(), n);
  expect_close(to_host(recv), want, sum_tol(), "reduce_scatter_sum");
}

TEST_F(NcclTest, AllToAllVMatchesMpiWithUnevenAndZeroCounts) {
  // Rank i sends (i + 2j) % 5 * 3 elements to rank j: uneven, and zero for some pairs.
  std::vector<int64_t> sc(static_cast<size_t>(size())), rc(static_cast<size_t>(size()));
  for (int j = 0; j < size(); ++j) sc[size_t(j)] = (rank() + 2 * j) % 5 * 3;
  for (int i = 0; i < size(); ++i) rc[size_t(i)] = (i + 2 * rank()) % 5 * 3;
  const auto sd = packed_displacements(sc), rd = packed_displacements(rc);
  const int64_t ns = std::accumulate(sc.begin(), sc.end(), int64_t(0));
  const int64_t nr = std::accumulate(rc.begin(), rc.end(), int64_t(0));
  auto x = randn(size_t(std::max<int64_t>(ns, 1)), 400 + uint32_t(rank()));
  std::vector<float> want(size_t(std::max<int64_t>(nr, 1)), -1.f);
  g_world->alltoallv(x.data(), sc, sd, want.data(), rc, rd);
  auto send = to_device(x);
  std::vector<float> init(want.size(), -1.f);
  auto recv = to_device(init);
  g_nccl->alltoallv(send.get(), sc, sd, recv.get(), rc, rd);
  EXPECT_EQ(to_host(recv), want);
}

TEST_F(NcclTest, BroadcastMatchesMpi) {
  const int root = size() - 1;
  const int64_t n = 1000;
  auto want = randn(size_t(n), 500 + uint32_t(rank()));
  auto d = to_device(want);
  g_world->broadcast(want.data(), n * int64_t(sizeof(float)), root);
  g_nccl->broadcast(d.get(), n * int64_t(sizeof(float)), root);
  EXPECT_EQ(to_host(d), want);
}

TEST_F(NcclTest, AsyncRequestOrdersAComputeStream) {
  // Input written on a compute stream, reduced on the comm stream, read back on the compute
  // stream: the two event waits (begin's and the request's) order the three.
  const int64_t n = 1 << 18;
  const auto x = randn(size_t(n), 600 + uint32_t(rank()));
  auto want = x;
  g_world->allreduce_sum(want.data(), n);
  cudaStream_t compute = nullptr;
  MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  cuda::DeviceBuffer<float> d(n);
  std::vector<float> got(static_cast<size_t>(n));
  MOE_CUDA_CHECK(cudaMemcpyAsync(d.get(), x.data(), size_t(n) * sizeof(float), cudaMemcpyHostToDevice, compute));
  NcclRequest r = g_nccl->iallreduce_sum(d.get(), n, compute);
  r.wait(compute);
  MOE_CUDA_CHECK(cudaMemcpyAsync(got.data(), d.get(), size_t(n) * sizeof(float), cudaMemcpyDeviceToHost, compute));
  MOE_CUDA_CHECK(cudaStreamSynchronize(compute));
  EXPECT_TRUE(r.test());
  expect_close(got, want, sum_tol(), "iallreduce_sum");

  // Host waits, and a request left pending is completed by its destructor.
  auto d2 = to_device(x);
  {
    NcclRequest pending = g_nccl->iallreduce_sum(d2.get(), n);
  }
  expect_close(to_host(d2), want, sum_tol(), "iallreduce_sum (destructor)");
  NcclRequest h = g_nccl->iallgather(d2.get(), d.get(), n / size());
  h.wait();
  h.wait();  // no-op
  MOE_CUDA_CHECK(cudaStreamDestroy(compute));
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::Comm world(&argc, &argv);  // a world of one without mpirun
  moe::g_world = &world;
  testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  moe::g_nccl.reset();
  // Every rank returns the worst result, so mpirun and ctest see a failure on any rank.
  double failed = rc != 0 ? 1 : 0;
  world.allreduce_sum(&failed, 1);
  return failed > 0 ? 1 : 0;
}
