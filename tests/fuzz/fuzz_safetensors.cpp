// Hugging Face weights as `moe import` and `moe generate --model <export>` open them
// (checkpoints/safetensors_folder.h): one model.safetensors, or model.safetensors.index.json and
// the two shards it may name. Input: the index (empty: no index), part marker, the first file,
// part marker, the second. Properties of an accepted folder: every tensor it lists reads back as
// exactly the bytes its header declares (and as f32 where the dtype allows).
#include <filesystem>

#include "checkpoints/safetensors_folder.h"
#include "tests/fuzz/fuzz_common.h"

using namespace moe;
namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string> parts = fuzz::split_parts(data, size, 3);
  const std::string dir = fuzz::scratch_dir() + "/hf";
  fs::remove_all(dir);
  fs::create_directories(dir);
  if (parts[0].empty()) {
    fuzz::write_file(dir + "/model.safetensors", parts[1]);
  } else {
    fuzz::write_file(dir + "/model.safetensors.index.json", parts[0]);
    fuzz::write_file(dir + "/model-00001-of-00002.safetensors", parts[1]);
    fuzz::write_file(dir + "/model-00002-of-00002.safetensors", parts[2]);
  }
  fuzz::refused([&] {
    SafetensorsFolder folder(dir);
    for (const std::string& name : folder.names()) {
      const SafetensorsReader& f = folder.file_of(name);
      const SafetensorsReader::Info& info = f.info(name);
      const std::vector<char> bytes = f.read_bytes(name);
      fuzz::expect(int64_t(bytes.size()) == info.end - info.begin, "read_bytes size differs from the header's span");
      fuzz::refused([&] { (void)f.read_f32(name); });
    }
  });
  return 0;
}
