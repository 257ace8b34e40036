// Sharded checkpoint saves over real MPI ranks: each rank writes its own slices of the logical
// tensors (rows cut anywhere, as FSDP shards fall) into one state.h5, rank by rank, and rank 0
// commits. The checkpoint read back equals the whole tensors; a rank whose write fails makes every
// rank's save fail with its message and commits nothing.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "framework/error.h"
#include "parallel/comm.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

struct Case {
  std::string name;
  Shape shape;
};
const std::vector<Case> kTensors = {{"model.a", {7, 5}}, {"model.b", {13}}, {"model.c", {3, 4}}, {"model.d", {2, 64}}};

float value(size_t tensor, int64_t i) { return float(tensor) * 1000.f + float(i) * 0.5f; }

// The same folder on every rank (rank 0 makes it).
std::string shared_tmp_dir(const Comm& comm) {
  char buf[256] = {};
  if (comm.is_root()) {
    std::string tmpl = (fs::temp_directory_path() / "moe_sharded_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    snprintf(buf, sizeof buf, "%s", tmpl.c_str());
  }
  comm.broadcast(buf, sizeof buf);
  return buf;
}

// Rank r's slice [r*s, (r+1)*s) of every tensor's flattening, s = ceil(n / world); model.c is
// written whole by rank 0 alone (as the replicated router biases are).
std::vector<TensorPiece> my_pieces(const Comm& comm, std::vector<std::vector<float>>& storage) {
  std::vector<TensorPiece> pieces;
  storage.assign(kTensors.size(), {});
  for (size_t t = 0; t < kTensors.size(); ++t) {
    const int64_t n = shape_numel(kTensors[t].shape);
    int64_t lo = 0, hi = n;
    if (kTensors[t].name == "model.c") {
      if (!comm.is_root()) continue;
    } else {
      const int64_t s = (n + comm.size() - 1) / comm.size();
      lo = std::min(n, comm.rank() * s);
      hi = std::min(n, lo + s);
    }
    for (int64_t i = lo; i < hi; ++i) storage[t].push_back(value(t, i));
    pieces.push_back({kTensors[t].name, kTensors[t].shape, lo, Tensor::borrow(storage[t].data(), {hi - lo})});
  }
  return pieces;
}

std::vector<DatasetSpec> all_datasets() {
  std::vector<DatasetSpec> out;
  for (const Case& c : kTensors) out.push_back({c.name, c.shape, DType::F32});
  return out;
}

TEST(ShardedCheckpoint, RanksWriteTheirSlicesOfLogicalTensors) {
  Comm comm(nullptr, nullptr);
  const std::string root = shared_tmp_dir(comm) + "/ckpt";
  std::vector<std::vector<float>> storage;
  ShardedSave sh;
  sh.rank = comm.rank();
  sh.world = comm.size();
  sh.save_id = "t1";
  sh.wait_timeout_s = 60;
  for (int64_t step : {5, 10}) {  // a second save exercises retention and a fresh id's markers
    sh.save_id = "t" + std::to_string(step);
    std::string dir = save_checkpoint_sharded(root, step, my_pieces(comm, storage), all_datasets(), "x: 1\n",
                                              {{"note", "sharded"}}, Retention(1), sh);
    EXPECT_EQ(comm.is_root(), !dir.empty());
  }
  comm.barrier();
  CheckpointReader r(root + "/latest");
  r.verify();
  EXPECT_EQ(r.step(), 10);
  EXPECT_EQ(r.world_size(), comm.size());
  for (size_t t = 0; t < kTensors.size(); ++t) {
    Tensor x = r.read(kTensors[t].name);
    ASSERT_EQ(x.shape(), kTensors[t].shape);
    for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(x.f32()[i], value(t, i)) << kTensors[t].name << " element " << i;
  }
  // Only the committed folders and `latest`: no markers, no .tmp, and retention kept one.
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(r.dir())) entries.push_back(e.path().filename().string());
  EXPECT_EQ(entries.size(), 4u) << "state.h5, config.yaml, meta.json, COMMITTED";
  EXPECT_EQ(list_checkpoints(root).size(), 1u);
  comm.barrier();
  if (comm.is_root()) fs::remove_all(fs::path(root).parent_path());
}

TEST(ShardedCheckpoint, OneRanksFailureFailsTheSaveEverywhere) {
  Comm comm(nullptr, nullptr);
  const std::string root = shared_tmp_dir(comm) + "/ckpt";
  std::vector<std::vector<float>> storage;
  std::vector<TensorPiece> pieces = my_pieces(comm, storage);
  std::vector<float> stray(3, 1.f);
  if (comm.rank() == 1) pieces.push_back({"model.missing", {3}, 0, Tensor::borrow(stray.data(), {3})});
  ShardedSave sh;
  sh.rank = comm.rank();
  sh.world = comm.size();
  sh.save_id = "fail";
  sh.wait_timeout_s = 60;
  try {
    save_checkpoint_sharded(root, 3, pieces, all_datasets(), "", nullptr, Retention(0), sh);
    ADD_FAILURE() << "the save succeeded on rank " << comm.rank();
  } catch (const Error& e) {
    std::string what = e.what();
    if (comm.rank() == 1)
      EXPECT_NE(what.find("model.missing"), std::string::npos) << what;
    else
      EXPECT_NE(what.find("rank 1 could not write its part"), std::string::npos) << what;
  }
  comm.barrier();
  EXPECT_TRUE(list_checkpoints(root).empty());
  EXPECT_FALSE(fs::exists(root + "/step-00000003.tmp")) << "rank 0 removes the failed save";
  comm.barrier();
  if (comm.is_root()) fs::remove_all(fs::path(root).parent_path());
}

}  // namespace
}  // namespace moe
