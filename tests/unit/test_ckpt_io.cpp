// Checkpoint save -> read: tensors come back bitwise, with their names, shapes and dtypes; the
// folder holds exactly the documented files; reading the wrong thing is a moe::Error naming it.
// No MPI_Init anywhere: the parallel (OpenMPI) HDF5 build must work for serial files without it.
#include <filesystem>
#include <fstream>
#include <set>

#include "checkpoints/checkpoint.h"
#include "framework/sha256.h"
#include "test_ckpt_util.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using test::bitwise_equal;
using test::expect_error;
using test::ramp;

class CkptIo : public test::TempDir {};

std::vector<NamedTensor> sample_tensors() {
  Tensor bf = Tensor::empty({3, 2}, DType::BF16);
  Tensor ids = Tensor::empty({5}, DType::I32);
  for (int i = 0; i < 6; ++i) bf.data<uint16_t>()[i] = f32_to_bf16_bits(0.3f * float(i) - 1.0f);
  for (int i = 0; i < 5; ++i) ids.data<int32_t>()[i] = -7 + 3 * i;
  return {
      {"model.layers.0.self_attn.q_a_proj.weight", ramp({8, 6}, 0.5f)},
      {"model.norm.weight", ramp({6}, -2.0f)},
      {"optimizer.exp_avg.model.norm.weight", ramp({6}, 3.0f)},
      {"scalar", ramp({}, 7.0f)},
      {"empty", Tensor::empty({0, 4})},
      {"bf16.weight", bf},
      {"ids", ids},
  };
}

TEST_F(CkptIo, RoundTripIsBitwise) {
  auto tensors = sample_tensors();
  std::string root = path("ckpt");
  std::string yaml = "model: {hidden: 6}\n";
  std::string dir = save_checkpoint(root, 7, tensors, yaml, {{"tokens", 123}, {"sampler", {{"epoch", 1}}}}, 3);
  EXPECT_EQ(dir, root + "/step-00000007");

  CheckpointReader r(dir);
  EXPECT_EQ(r.dir(), dir);
  EXPECT_EQ(r.step(), 7);
  EXPECT_EQ(r.config_yaml(), yaml);
  EXPECT_EQ(r.meta()["step"], 7);
  EXPECT_EQ(r.meta()["tokens"], 123);
  EXPECT_EQ(r.meta()["sampler"]["epoch"], 1);
  r.verify();

  std::set<std::string> expected;
  for (auto& nt : tensors) expected.insert(nt.name);
  auto names = r.names();
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), expected);
  EXPECT_EQ(names.size(), tensors.size());
  for (auto& nt : tensors) {
    SCOPED_TRACE(nt.name);
    EXPECT_TRUE(r.has(nt.name));
    EXPECT_EQ(r.shape(nt.name), nt.tensor.shape());
    EXPECT_EQ(r.dtype(nt.name), nt.tensor.dtype());
    EXPECT_TRUE(bitwise_equal(r.read(nt.name), nt.tensor));
    Tensor into = Tensor::zeros(nt.tensor.shape(), nt.tensor.dtype());
    r.read(nt.name, into);
    EXPECT_TRUE(bitwise_equal(into, nt.tensor));
  }
  EXPECT_FALSE(r.has("model.norm"));
  EXPECT_FALSE(r.has("a/b"));
}

TEST_F(CkptIo, FolderHoldsTheDocumentedFiles) {
  std::string root = path("ckpt");
  std::string dir = save_checkpoint(root, 42, sample_tensors(), "a: 1\n", nlohmann::json::object(), 0);
  std::set<std::string> files;
  for (auto& e : fs::directory_iterator(dir)) files.insert(e.path().filename().string());
  EXPECT_EQ(files, (std::set<std::string>{"COMMITTED", "config.yaml", "meta.json", "state.h5"}));
  std::set<std::string> top;
  for (auto& e : fs::directory_iterator(root)) top.insert(e.path().filename().string());
  EXPECT_EQ(top, (std::set<std::string>{"latest", "step-00000042"}));

  std::ifstream in(dir + "/COMMITTED");
  nlohmann::json c = nlohmann::json::parse(in);
  EXPECT_EQ(c["step"], 42);
  ASSERT_EQ(c["files"].size(), 3u);
  for (const char* f : {"state.h5", "config.yaml", "meta.json"})
    EXPECT_EQ(c["files"][f], sha256_file(dir + "/" + f)) << f;
  std::ifstream m(dir + "/meta.json");
  EXPECT_EQ(nlohmann::json::parse(m), (nlohmann::json{{"step", 42}}));
}

TEST_F(CkptIo, ReadErrorsNameTheDataset) {
  std::string dir = save_checkpoint(path("ckpt"), 1, sample_tensors(), "", nullptr, 0);
  CheckpointReader r(dir);
  Tensor t = Tensor::empty({6, 8});
  expect_error([&] { r.read("model.layers.1.mlp.gate.weight", t); },
               dir + "/state.h5: no dataset 'model.layers.1.mlp.gate.weight'");
  expect_error([&] { r.read("model.layers.0.self_attn.q_a_proj.weight", t); },
               dir + "/state.h5: dataset 'model.layers.0.self_attn.q_a_proj.weight' has shape [8, 6], expected [6, 8]");
  Tensor wrong_dtype = Tensor::empty({3, 2});
  expect_error([&] { r.read("bf16.weight", wrong_dtype); }, "dataset 'bf16.weight' is bf16, expected f32");
  expect_error([&] { r.shape("a/b"); }, "no dataset 'a/b'");
}

TEST_F(CkptIo, BadTensorNamesAreRejected) {
  EXPECT_THROW(save_checkpoint(path("c1"), 1, {{"model/layers", ramp({2}, 0)}}, "", nullptr, 0), InternalError);
  EXPECT_THROW(save_checkpoint(path("c2"), 1, {{"x", ramp({2}, 0)}, {"x", ramp({2}, 1)}}, "", nullptr, 0),
               InternalError);
  // A failed save leaves no committed checkpoint.
  EXPECT_TRUE(list_checkpoints(path("c1")).empty());
}

TEST_F(CkptIo, RootAttributesAndReproducibleBytes) {
  std::string a = save_checkpoint(path("a"), 5, sample_tensors(), "", nullptr, 0, /*world_size=*/4);
  CheckpointReader r(a);
  EXPECT_EQ(r.format_version(), kCheckpointFormatVersion);
  EXPECT_EQ(r.world_size(), 4);
  EXPECT_EQ(r.step(), 5);
  // No timestamps in the file: the same state saved twice is the same bytes, so two runs can be
  // compared with cmp and their COMMITTED checksums agree.
  std::string b = save_checkpoint(path("b"), 5, sample_tensors(), "", nullptr, 0, 4);
  EXPECT_EQ(sha256_file(a + "/state.h5"), sha256_file(b + "/state.h5"));
}

// Overwrites bytes at `offset` (negative: from the end) of a file.
void clobber(const std::string& file, long offset, const std::string& bytes) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(offset, offset < 0 ? std::ios::end : std::ios::beg);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

TEST_F(CkptIo, CorruptOrForeignStateIsAnErrorNotACrash) {
  std::string dir = save_checkpoint(path("ckpt"), 3, sample_tensors(), "", nullptr, 0);
  clobber(dir + "/state.h5", 0, std::string(64, 'x'));  // the superblock
  expect_error([&] { CheckpointReader r(dir); }, dir + "/state.h5: cannot open as HDF5");

  std::ofstream(dir + "/state.h5", std::ios::trunc) << "not hdf5 at all\n";
  expect_error([&] { CheckpointReader r(dir); }, dir + "/state.h5");
}

TEST_F(CkptIo, MalformedSidecarFilesAreErrors) {
  std::string dir = save_checkpoint(path("ckpt"), 3, sample_tensors(), "", nullptr, 0);
  std::ofstream(dir + "/meta.json", std::ios::trunc) << "{not json";
  expect_error([&] { CheckpointReader r(dir); }, dir + "/meta.json: not valid JSON");
  std::ofstream(dir + "/meta.json", std::ios::trunc) << "{\"tokens\": " << std::string(50000, '[') << std::string(50000, ']') << "}";
  expect_error([&] { CheckpointReader r(dir); }, dir + "/meta.json: JSON nested deeper than 64 levels");
  std::ofstream(dir + "/meta.json", std::ios::trunc) << R"({"val_loss": 1E88888})";  // beyond double
  expect_error([&] { CheckpointReader r(dir); }, dir + "/meta.json: not valid JSON");
  // Keys readers take must have the type they read them as: checked on open, naming the key, not a
  // type_error when the trainer or generate reads it later (found by tests/fuzz/fuzz_checkpoint_meta).
  std::ofstream(dir + "/meta.json", std::ios::trunc) << R"({"tokens": "many"})";
  expect_error([&] { CheckpointReader r(dir); }, dir + "/meta.json: \"tokens\" is \"many\" (expected an integer >= 0)");
  std::ofstream(dir + "/meta.json", std::ios::trunc) << R"({"optimizer_steps": -3})";
  expect_error([&] { CheckpointReader r(dir); }, dir + "/meta.json: \"optimizer_steps\" is -3");
  std::ofstream(dir + "/meta.json", std::ios::trunc) << R"({"tokenizer": 5})";
  expect_error([&] { CheckpointReader r(dir); }, dir + "/meta.json: \"tokenizer\" is 5 (expected a string)");
  std::ofstream(dir + "/meta.json", std::ios::trunc) << R"({"val_loss": null, "future_key": [1]})";
  expect_error([&] { CheckpointReader r(dir); }, dir + "/meta.json: \"val_loss\" is null (expected a number)");
  std::ofstream(dir + "/COMMITTED", std::ios::trunc) << "[]";
  expect_error([&] { CheckpointReader r(dir); }, dir + "/COMMITTED: malformed");
}

}  // namespace
}  // namespace moe
