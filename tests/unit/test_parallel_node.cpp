// Where HSDP's shard groups run (parallel/node.h), from every rank's node name: the grouping by
// replica and rank 0's header lines. The gathering itself runs in tests/mpi/multinode.sh.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "parallel/node.h"

using namespace moe;
using Names = std::vector<std::string>;

TEST(ReplicaNodes, ConsecutiveRanksPerReplica) {
  const Names names = {"a", "a", "b", "b"};
  EXPECT_EQ(replica_nodes(names, 1), (std::vector<Names>{{"a", "b"}}));
  EXPECT_EQ(replica_nodes(names, 2), (std::vector<Names>{{"a"}, {"b"}}));
  EXPECT_EQ(replica_nodes(names, 4), (std::vector<Names>{{"a"}, {"a"}, {"b"}, {"b"}}));
  // 1 + 3 ranks: replica 0 = ranks {0, 1} spans both nodes.
  EXPECT_EQ(replica_nodes({"a", "b", "b", "b"}, 2), (std::vector<Names>{{"a", "b"}, {"b"}}));
  EXPECT_EQ(count_nodes({"b", "a", "b", "c"}), 3);
}

TEST(ReplicaPlacement, InsideOneNodeOrAWarning) {
  EXPECT_TRUE(replica_placement({"a", "a", "b", "b"}, 1).empty());  // plain FSDP: nothing to say
  EXPECT_EQ(replica_placement({"a", "a", "b", "b"}, 2),
            Names{"HSDP: each replica's shard group is inside one node (replica 0 on a, replica 1 on b)"});
  // Many replicas: the first 4 named.
  EXPECT_EQ(replica_placement({"a", "b", "c", "d", "e", "f"}, 6),
            Names{"HSDP: each replica's shard group is inside one node (replica 0 on a, replica 1 on b, "
                  "replica 2 on c, replica 3 on d, ...)"});
  EXPECT_EQ(replica_placement({"a", "b", "b", "b"}, 2),
            Names{"warning: HSDP shard group of replica 0 spans nodes a, b: its all-gathers and reduce-scatters "
                  "cross nodes; set parallel.dp_replicate to a multiple of the node count (2, with as many ranks "
                  "on each node)"});
  // Plain FSDP's layout split in 2 over 4 nodes: every replica spans 2 nodes; 6 replicas over 12
  // nodes: 4 warnings, then how many more.
  EXPECT_EQ(replica_placement({"a", "b", "c", "d"}, 2).size(), 2u);
  Names twelve;
  for (int i = 0; i < 12; ++i) twelve.push_back(std::string(1, 'n').append(std::to_string(i)));
  const Names lines = replica_placement(twelve, 6);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[3].rfind("warning: HSDP shard group of replica 3 spans nodes n6, n7: ", 0), 0u) << lines[3];
  EXPECT_EQ(lines[4], "warning: 2 more HSDP shard group(s) span nodes");
}
