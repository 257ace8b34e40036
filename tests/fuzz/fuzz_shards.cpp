// A preprocessed split as training opens it (data_pipeline/shards.h): manifest.json, then the
// shard-00000.bin/.idx pair (also written as data_text_document.bin/.idx, so a manifest of format
// megatron finds its pair). Input: manifest, part marker, .bin, part marker, .idx.
// Properties of an accepted split: every token and document start it hands out is readable and
// inside the bounds it reports (AddressSanitizer checks the reads), and tokens are below vocab_size.
#include <filesystem>

#include "data_pipeline/shards.h"
#include "tests/fuzz/fuzz_common.h"

using namespace moe;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string> parts = fuzz::split_parts(data, size, 3);
  const std::string dir = fuzz::scratch_dir() + "/train";
  std::filesystem::create_directories(dir);
  fuzz::write_file(dir + "/manifest.json", parts[0]);
  for (const char* stem : {"/shard-00000", "/data_text_document"}) {
    fuzz::write_file(dir + stem + ".bin", parts[1]);
    fuzz::write_file(dir + stem + ".idx", parts[2]);
  }
  fuzz::refused([&] {
    TokenDataset ds = TokenDataset::open(dir);
    const int64_t n = std::min<int64_t>(ds.num_tokens(), 1 << 16);
    fuzz::expect(n >= 0, "negative token count");
    std::vector<int32_t> tokens(size_t(n) + 1), starts(size_t(n) + 1);
    ds.read(0, n, tokens.data());
    ds.document_starts(0, n, starts.data());
    for (int64_t i = 0; i < n; ++i) {
      fuzz::expect(tokens[i] >= 0 && tokens[i] < ds.vocab_size(), "a token outside [0, vocab_size)");
      fuzz::expect(starts[i] >= 0 && starts[i] <= i, "a document start outside the window");
    }
    if (n > 0) (void)ds.token(n - 1);
    ds.verify();
  });
  return 0;
}
