// Comm and DeviceMesh under mpirun (any np; the mesh layouts need np 4). Every expected value is
// computed locally from a formula, so each rank checks its own results. Sums are compared bitwise
// with the rank-order sum ((x_0 + x_1) + x_2) + ..., the order Comm promises.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "framework/error.h"
#include "framework/rng.h"
#include "parallel/comm.h"
#include "parallel/comm_stats.h"
#include "parallel/mesh.h"

namespace moe {
namespace {

// Rank r's k-th input: sums round, so any change of order shows. Not inlined: GCC would otherwise
// fuse the `* 1000` into the additions of rank_order_sum (FMA contraction) and change the reference.
[[gnu::noinline]] float contribution(int r, int64_t k) { return rng_normal(17, uint64_t(r), uint64_t(k)) * 1000.0f; }

template <class T>
T rank_order_sum(int ranks, int64_t k) {
  T s = T(contribution(0, k));
  for (int r = 1; r < ranks; ++r) s += T(contribution(r, k));
  return s;
}

template <class T>
int64_t bitwise_mismatches(const std::vector<T>& got, const std::vector<T>& want) {
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += memcmp(&got[i], &want[i], sizeof(T)) != 0;
  return bad + int64_t(got.size() != want.size());
}

// Sizes on both sides of the all-gather/reduce-scatter switch of allreduce_sum, for np 2..4.
const int64_t kSizes[] = {0, 1, 3, 17, 4099, 20011};

template <class T>
void check_allreduce(const Comm& world) {
  for (int64_t n : kSizes) {
    std::vector<T> x(n), want(n);
    for (int64_t k = 0; k < n; ++k) x[k] = T(contribution(world.rank(), k)), want[k] = rank_order_sum<T>(world.size(), k);
    world.allreduce_sum(x.data(), n);
    EXPECT_EQ(bitwise_mismatches(x, want), 0) << "n " << n;
  }
}

TEST(Comm, AllreduceSumIsTheRankOrderSum) {
  Comm world(nullptr, nullptr);
  check_allreduce<float>(world);
  check_allreduce<double>(world);
}

TEST(Comm, RepeatedReductionsAreBitwiseIdenticalOnEveryRank) {
  Comm world(nullptr, nullptr);
  const int64_t n = 20011;
  std::vector<float> first;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<float> x(n);
    for (int64_t k = 0; k < n; ++k) x[k] = contribution(world.rank(), k + rep % 2);  // interleave other data
    world.allreduce_sum(x.data(), n);
    if (rep == 0) first = x;
    if (rep % 2 == 0) {
      EXPECT_EQ(bitwise_mismatches(x, first), 0) << "repeat " << rep;
    }
  }
  std::vector<float> all(n * world.size());
  world.allgather(first.data(), all.data(), n);
  for (int r = 0; r < world.size(); ++r)
    EXPECT_EQ(memcmp(all.data() + r * n, first.data(), n * sizeof(float)), 0) << "rank " << r << " differs";
}

TEST(Comm, Allgather) {
  Comm world(nullptr, nullptr);
  const int p = world.size(), me = world.rank();
  for (int64_t n : {0, 1, 5, 1001}) {
    std::vector<float> send(n), recv(n * p, -1.0f);
    for (int64_t k = 0; k < n; ++k) send[k] = float(me * 10000 + k);
    world.allgather(send.data(), recv.data(), n);
    for (int r = 0; r < p; ++r)
      for (int64_t k = 0; k < n; ++k) ASSERT_EQ(recv[r * n + k], float(r * 10000 + k)) << "n " << n;
    // In place: our chunk already sits at recv + rank * n.
    std::vector<float> inplace(n * p, -1.0f);
    std::copy(send.begin(), send.end(), inplace.begin() + me * n);
    world.allgather(inplace.data() + me * n, inplace.data(), n);
    EXPECT_EQ(inplace, recv) << "in place, n " << n;
  }
  for (int64_t bytes : {0, 3, 17}) {
    std::vector<unsigned char> send(bytes), recv(bytes * p);
    for (int64_t k = 0; k < bytes; ++k) send[k] = (unsigned char)(me * 31 + k);
    world.allgather_bytes(send.data(), recv.data(), bytes);
    for (int r = 0; r < p; ++r)
      for (int64_t k = 0; k < bytes; ++k) ASSERT_EQ(recv[r * bytes + k], (unsigned char)(r * 31 + k));
  }
}

TEST(Comm, ReduceScatterSumIsTheRankOrderSum) {
  Comm world(nullptr, nullptr);
  const int p = world.size(), me = world.rank();
  for (int64_t n : {0, 1, 7, 1000, 5003}) {
    std::vector<float> send(n * p), recv(n), want(n);
    for (int64_t i = 0; i < n * p; ++i) send[i] = contribution(me, i);
    for (int64_t k = 0; k < n; ++k) want[k] = rank_order_sum<float>(p, me * n + k);
    world.reduce_scatter_sum(send.data(), recv.data(), n);
    EXPECT_EQ(bitwise_mismatches(recv, want), 0) << "n " << n;
  }
}

// Rank i sends count(i, j) elements to rank j: uneven, and zero for some pairs (i = j = 0 ...).
int64_t pair_count(int i, int j) { return (3 * i + j) % 4 * 5 + (i == j ? 0 : (i + j) % 2); }
float pair_value(int i, int j, int64_t t) { return float(i * 1000000 + j * 1000 + t); }

TEST(Comm, AlltoallvUnevenCountsAndGaps) {
  Comm world(nullptr, nullptr);
  const int p = world.size(), me = world.rank();
  std::vector<int64_t> send_counts(p);
  for (int j = 0; j < p; ++j) send_counts[j] = pair_count(me, j);
  std::vector<int64_t> send_displs = packed_displacements(send_counts);
  std::vector<float> send(send_displs.back() + send_counts.back());
  for (int j = 0; j < p; ++j)
    for (int64_t t = 0; t < send_counts[j]; ++t) send[send_displs[j] + t] = pair_value(me, j, t);

  std::vector<int64_t> recv_counts = world.exchange_counts(send_counts);
  for (int i = 0; i < p; ++i) ASSERT_EQ(recv_counts[i], pair_count(i, me));
  // Receive with a gap of 2 after each rank's rows; the gaps must stay untouched.
  std::vector<int64_t> recv_displs(p);
  for (int i = 0, at = 0; i < p; ++i) recv_displs[i] = at, at += int(recv_counts[i]) + 2;
  std::vector<float> recv(recv_displs.back() + recv_counts.back() + 2, -1.0f);
  world.alltoallv(send.data(), send_counts, send_displs, recv.data(), recv_counts, recv_displs);
  for (int i = 0; i < p; ++i) {
    for (int64_t t = 0; t < recv_counts[i]; ++t) ASSERT_EQ(recv[recv_displs[i] + t], pair_value(i, me, t));
    EXPECT_EQ(recv[recv_displs[i] + recv_counts[i]], -1.0f);
    EXPECT_EQ(recv[recv_displs[i] + recv_counts[i] + 1], -1.0f);
  }

  // Bytes, everything zero-sized, and k = 2 counts per rank.
  std::vector<int64_t> zeros(p, 0);
  world.alltoallv_bytes(nullptr, zeros, zeros, nullptr, zeros, zeros);
  std::vector<int64_t> two(2 * p);
  for (int j = 0; j < p; ++j) two[2 * j] = me * 10 + j, two[2 * j + 1] = -j;
  std::vector<int64_t> got = world.exchange_counts(two);
  for (int i = 0; i < p; ++i) EXPECT_TRUE(got[2 * i] == i * 10 + me && got[2 * i + 1] == -me) << "from " << i;
  std::vector<int64_t> byte_counts(p, 3), byte_displs = packed_displacements(byte_counts);
  std::vector<char> sb(3 * p), rb(3 * p);
  for (int j = 0; j < p; ++j) memcpy(&sb[3 * j], "abc", 3), sb[3 * j] = char('0' + me), sb[3 * j + 1] = char('0' + j);
  world.alltoallv_bytes(sb.data(), byte_counts, byte_displs, rb.data(), byte_counts, byte_displs);
  for (int i = 0; i < p; ++i) {
    const std::string want = {char('0' + i), char('0' + me), 'c'};
    EXPECT_EQ(std::string(&rb[3 * i], 3), want);
  }
}

TEST(Comm, BroadcastFromEveryRoot) {
  Comm world(nullptr, nullptr);
  for (int root = 0; root < world.size(); ++root)
    for (int64_t bytes : {0, 1, 1000}) {
      std::vector<char> buf(bytes, world.rank() == root ? char('a' + root) : 0);
      world.broadcast(buf.data(), bytes, root);
      EXPECT_EQ(buf, std::vector<char>(bytes, char('a' + root))) << "root " << root << " bytes " << bytes;
    }
  world.barrier();
}

TEST(CommCounts, EveryKindCountsItsCallsAndPayload) {
  // Counts are per process: each rank checks its own, from the formulas of parallel/comm_stats.h.
  Comm world(nullptr, nullptr);
  const int p = world.size(), me = world.rank();
  auto at = [](CollectiveKind k) { return comm_counts()[size_t(k)]; };
  reset_comm_counts();
  std::vector<float> x(1003, 1.f), gathered(size_t(1003) * p), rows(size_t(1003) * p, 1.f);
  std::vector<double> d(7, 1.0);
  world.allreduce_sum(x.data(), 1003);   // 1003 floats
  world.allreduce_sum(d.data(), 7);      // 7 doubles
  world.allgather(x.data(), gathered.data(), 1003);
  world.iallgather(x.data(), gathered.data(), 10).wait();
  world.reduce_scatter_sum(rows.data(), x.data(), 1003);
  std::vector<int64_t> counts(p);
  for (int j = 0; j < p; ++j) counts[j] = j + me;  // uneven: this rank sends sum(j + me)
  const std::vector<int64_t> displs = packed_displacements(counts);
  const std::vector<int64_t> recv_counts = world.exchange_counts(counts), recv_displs = packed_displacements(recv_counts);
  std::vector<float> send(size_t(displs.back() + counts.back())), recv(size_t(recv_displs.back() + recv_counts.back()));
  world.alltoallv(send.data(), counts, displs, recv.data(), recv_counts, recv_displs);
  char b[100] = {};
  world.broadcast(b, 100, 0);
  world.barrier();  // no payload: not counted

  int64_t sent = 0;
  for (int64_t c : counts) sent += c;
  EXPECT_EQ(at(CollectiveKind::AllReduce).calls, 2);
  EXPECT_EQ(at(CollectiveKind::AllReduce).bytes, 1003 * 4 + 7 * 8);
  EXPECT_EQ(at(CollectiveKind::AllGather).calls, 2);
  EXPECT_EQ(at(CollectiveKind::AllGather).bytes, int64_t(1013) * 4 * p);
  EXPECT_EQ(at(CollectiveKind::ReduceScatter).calls, 1);
  EXPECT_EQ(at(CollectiveKind::ReduceScatter).bytes, int64_t(1003) * 4 * p);
  EXPECT_EQ(at(CollectiveKind::AllToAllV).calls, 2);  // the count exchange and the data
  EXPECT_EQ(at(CollectiveKind::AllToAllV).bytes, int64_t(p) * 8 + sent * 4);
  EXPECT_EQ(at(CollectiveKind::Broadcast).calls, 1);
  EXPECT_EQ(at(CollectiveKind::Broadcast).bytes, 100);
  const nlohmann::json j = comm_counts_json(comm_counts(), 2);
  EXPECT_DOUBLE_EQ(j["broadcast"]["bytes"].get<double>(), 50.0);
  reset_comm_counts();
  EXPECT_EQ(at(CollectiveKind::AllGather).calls, 0);
}

TEST(Comm, AsyncCollectivesOverlapAndCompleteInAnyOrder) {
  Comm world(nullptr, nullptr);
  const int p = world.size(), me = world.rank();
  const int64_t n = 3001;
  std::vector<float> shard(n, float(me)), full(n * p), rs_send(n * p), rs_recv(n), want(n);
  for (int64_t i = 0; i < n * p; ++i) rs_send[i] = contribution(me, i);
  for (int64_t k = 0; k < n; ++k) want[k] = rank_order_sum<float>(p, me * n + k);
  std::vector<int64_t> counts(p, 2), displs = packed_displacements(counts);
  std::vector<float> a2a_send(2 * p), a2a_recv(2 * p);
  for (int j = 0; j < p; ++j) a2a_send[2 * j] = float(me), a2a_send[2 * j + 1] = float(j);

  Request gather = world.iallgather(shard.data(), full.data(), n);
  Request scatter = world.ireduce_scatter_sum(rs_send.data(), rs_recv.data(), n);
  Request exchange = world.ialltoallv(a2a_send.data(), counts, displs, a2a_recv.data(), counts, displs);
  Request moved = std::move(exchange);
  while (!moved.test()) {
  }
  scatter.wait();
  gather.wait();
  gather.wait();  // a second wait is a no-op
  EXPECT_EQ(bitwise_mismatches(rs_recv, want), 0);
  for (int r = 0; r < p; ++r) EXPECT_EQ(full[r * n + n - 1], float(r));
  for (int i = 0; i < p; ++i) EXPECT_TRUE(a2a_recv[2 * i] == float(i) && a2a_recv[2 * i + 1] == float(me));

  std::vector<float> late(n * p, -1.0f);
  { Request unwaited = world.iallgather(shard.data(), late.data(), n); }  // the destructor waits
  EXPECT_EQ(late, full);
}

TEST(Comm, MpiErrorsBecomeMoeErrors) {
  Comm world(nullptr, nullptr);
  if (world.size() == 1) GTEST_SKIP() << "a world of one never calls MPI for a broadcast";
  char c = 0;
  try {
    world.broadcast(&c, 1, /*root=*/world.size() + 7);
    ADD_FAILURE() << "no error for a root outside the communicator";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(world.rank()) + ": MPI_Ibcast"), std::string::npos)
        << e.what();
  }
  world.barrier();  // still usable
}

TEST(Comm, SplitByColorOrderedByKey) {
  Comm world(nullptr, nullptr);
  const int p = world.size(), me = world.rank();
  Comm half = world.split(me % 2, -me);  // descending world rank within each parity
  int members = 0, ahead = 0;
  for (int r = me % 2; r < p; r += 2) members++, ahead += r > me;
  EXPECT_EQ(half.size(), members);
  EXPECT_EQ(half.rank(), ahead);
  EXPECT_EQ(half.world_rank(), me);
  double sum = me;
  half.allreduce_sum(&sum, 1);
  double want = 0;
  for (int r = me % 2; r < p; r += 2) want += r;
  EXPECT_EQ(sum, want);
}

TEST(Mesh, CoordinatesAndGroupsOfWorld4) {
  Comm world(nullptr, nullptr);
  if (world.size() != 4) GTEST_SKIP() << "needs mpirun -np 4";
  const int me = world.rank();
  for (int ep : {1, 2, 4}) {
    DeviceMesh mesh(world, ep);
    EXPECT_EQ(mesh.dp() * mesh.ep(), 4);
    EXPECT_EQ(mesh.ep(), ep);
    EXPECT_EQ(mesh.dp_rank(), me / ep);
    EXPECT_EQ(mesh.ep_rank(), me % ep);
    EXPECT_EQ(mesh.ep_comm().size(), ep);
    EXPECT_EQ(mesh.ep_comm().rank(), mesh.ep_rank());
    EXPECT_EQ(mesh.dp_comm().size(), 4 / ep);
    EXPECT_EQ(mesh.dp_comm().rank(), mesh.dp_rank());
    // Members, in group-rank order: ep group = consecutive ranks, dp group = stride ep.
    std::vector<int64_t> ep_members(ep), dp_members(4 / ep);
    int64_t mine = me;
    mesh.ep_comm().allgather_bytes(&mine, ep_members.data(), sizeof mine);
    mesh.dp_comm().allgather_bytes(&mine, dp_members.data(), sizeof mine);
    for (int e = 0; e < ep; ++e) EXPECT_EQ(ep_members[e], mesh.dp_rank() * ep + e) << "ep " << ep;
    for (int d = 0; d < 4 / ep; ++d) EXPECT_EQ(dp_members[d], mesh.ep_rank() + d * ep) << "ep " << ep;
  }
}

// HSDP: 2 replicas of 2 ranks. Replicas are consecutive ranks (one node each under mpirun's
// default placement); the cross-replica groups pair the ranks holding the same shards.
TEST(Mesh, ReplicaGroupsOfWorld4) {
  Comm world(nullptr, nullptr);
  if (world.size() != 4) GTEST_SKIP() << "needs mpirun -np 4";
  const int me = world.rank();
  for (int ep : {1, 2}) {
    DeviceMesh mesh(world, ep, "", 2);
    EXPECT_EQ(mesh.replicate(), 2);
    EXPECT_EQ(mesh.replica(), me / 2);
    EXPECT_EQ(mesh.dp() * mesh.ep(), 2);
    auto members = [&](const Comm& c) {
      std::vector<int64_t> m(size_t(c.size()));
      int64_t mine = me;
      c.allgather_bytes(&mine, m.data(), sizeof mine);
      return m;
    };
    EXPECT_EQ(members(mesh.shard_comm()), (std::vector<int64_t>{me / 2 * 2, me / 2 * 2 + 1})) << "ep " << ep;
    EXPECT_EQ(members(mesh.cross_comm()), (std::vector<int64_t>{me % 2, me % 2 + 2})) << "ep " << ep;
    // The replica is the dp group with ep 1 and the ep group with ep 2.
    EXPECT_EQ(members(ep == 1 ? mesh.dp_comm() : mesh.ep_comm()), members(mesh.shard_comm()));
    EXPECT_EQ(mesh.dp_comm().size() * mesh.ep_comm().size(), 2);
  }
}

TEST(Mesh, ImpossibleLayoutsAreErrors) {
  auto message = [](int world, int ep) -> std::string {
    try {
      mesh_coords(world, ep, 0);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(message(4, 3), "parallel.ep 3 does not divide world size 4 (expected a divisor of 4)");
  EXPECT_EQ(message(4, 0), "parallel.ep 0 does not divide world size 4 (expected a divisor of 4)");
  EXPECT_EQ(message(4, 8), "parallel.ep 8 does not divide world size 4 (expected a divisor of 4)");
  MeshCoords c = mesh_coords(8, 2, 5);
  EXPECT_TRUE(c.dp == 4 && c.ep == 2 && c.dp_rank == 2 && c.ep_rank == 1);
  // HSDP: world 8 as 2 replicas of 4 ranks; rank 5 is the second rank of replica 1.
  c = mesh_coords(8, 2, 5, 2);
  EXPECT_TRUE(c.replicate == 2 && c.replica == 1 && c.dp == 2 && c.ep == 2 && c.dp_rank == 0 && c.ep_rank == 1);
  EXPECT_TRUE(c.shard_size() == 4 && c.shard_rank() == 1);
  auto replicated = [](int world, int ep, int r) -> std::string {
    try {
      mesh_coords(world, ep, 0, r);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(replicated(4, 1, 3), "parallel.dp_replicate 3 does not divide world size 4 (expected a divisor of 4)");
  EXPECT_EQ(replicated(4, 1, 0), "parallel.dp_replicate 0 does not divide world size 4 (expected a divisor of 4)");
  EXPECT_EQ(replicated(8, 4, 4),
            "parallel.ep 4 does not divide the 2 ranks of a replica (world size 8 / parallel.dp_replicate 4; expected a "
            "divisor of 2)");
  Comm world(nullptr, nullptr);  // every rank rejects it before splitting, so nobody waits
  EXPECT_THROW(DeviceMesh(world, world.size() + 1), Error);
  std::string where = "no error";  // the config file the CLI names
  try {
    DeviceMesh(world, world.size() + 1, "run.yaml");
  } catch (const Error& e) {
    where = e.what();
  }
  EXPECT_EQ(where.rfind("run.yaml: parallel.ep ", 0), 0u) << where;
}

// Failure handling, run on their own by tests/CMakeLists.txt (they end the job on purpose).
TEST(CommFailure, DISABLED_TimeoutEndsTheJob) {  // with MOE_COMM_TIMEOUT_S=1
  Comm world(nullptr, nullptr);
  if (world.rank() == 0) std::this_thread::sleep_for(std::chrono::seconds(20));
  world.barrier();  // the others give up after 1 s and take rank 0 down with them
}

TEST(CommFailure, DISABLED_AbortEndsEveryRank) {
  Comm world(nullptr, nullptr);
  if (world.rank() == 1) world.abort("boom", 3);
  world.barrier();  // would wait for rank 1 forever
}

}  // namespace
}  // namespace moe
