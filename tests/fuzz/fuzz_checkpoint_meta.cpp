// What resume, eval and generate read of a checkpoint besides its tensors (checkpoints/checkpoint.h):
// COMMITTED, meta.json, config.yaml and the `latest` link, around a real state.h5 written once at
// start-up. Input: COMMITTED, part marker, meta.json, part marker, config.yaml, part marker, the
// target of `latest` (empty: no link).
// Properties of an accepted checkpoint: the meta.json keys readers use have the types they read
// them as (CheckpointReader checks them, so no reader meets a type_error later), its skip_samples
// load as the numeric guard loads them, and its config.yaml goes through parse_config like
// `moe generate` takes it: a moe::Error or a config.
#include <filesystem>

#include "checkpoints/checkpoint.h"
#include "framework/config.h"
#include "launch/numeric_guard.h"
#include "tests/fuzz/fuzz_common.h"

using namespace moe;
namespace fs = std::filesystem;

static const std::string& checkpoint_root() {
  static const std::string root = [] {
    const std::string r = fuzz::scratch_dir() + "/run";
    Tensor w = Tensor::zeros({4, 2});
    save_checkpoint(r, 7, {{"w", w}}, "run: {}\n", {{"tokens", 70}}, Retention());
    return r;
  }();
  return root;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string> parts = fuzz::split_parts(data, size, 4);
  const std::string& root = checkpoint_root();
  const std::string dir = root + "/step-00000007";
  fuzz::write_file(dir + "/COMMITTED", parts[0]);
  fuzz::write_file(dir + "/meta.json", parts[1]);
  fuzz::write_file(dir + "/config.yaml", parts[2]);
  std::error_code ec;
  fs::remove(root + "/latest", ec);
  if (!parts[3].empty() && parts[3].find('\0') == std::string::npos) fs::create_symlink(parts[3], root + "/latest", ec);

  for (const std::string& where : {root, root + "/latest", dir}) {
    fuzz::refused([&] {
      CheckpointReader r(where);
      const nlohmann::json& meta = r.meta();
      for (const char* key : {"tokens", "optimizer_steps", "skipped_steps", "val_loss_step"})
        fuzz::expect(!meta.contains(key) || meta[key].is_number_integer(), "meta.json: accepted a non-integer count");
      for (const char* key : {"tokenizer", "tokenizer_hash"})
        fuzz::expect(!meta.contains(key) || meta[key].is_string(), "meta.json: accepted a non-string name");
      fuzz::expect(!meta.contains("val_loss") || meta["val_loss"].is_number(), "meta.json: accepted a non-number loss");
      if (meta.contains("skip_samples"))  // as NumericGuard::add_checkpoint_skips loads them
        fuzz::refused([&] { (void)SampleSkips::from_json(meta["skip_samples"], "checkpoint meta.json"); });
      fuzz::refused([&] { (void)parse_config(r.config_yaml(), r.dir() + "/config.yaml"); });
      (void)r.names();
    });
  }
  (void)list_checkpoints(root);
  fuzz::refused([&] { (void)resolve_checkpoint(root + "/latest"); });
  return 0;
}
