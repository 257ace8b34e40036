// A Megatron-LM .idx (data_pipeline/megatron.h), parsed from memory as TokenDataset maps it.
// Properties of an accepted index: its document starts rise, and lie inside the tokens it reports.
#include "data_pipeline/megatron.h"
#include "tests/fuzz/fuzz_common.h"

using namespace moe;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  MegatronIndex ix;
  if (fuzz::refused([&] { ix = parse_megatron_index("fuzz.idx", data, size); })) return 0;
  fuzz::expect(ix.sequences >= 0 && ix.documents >= 0 && ix.tokens >= 0, "negative counts");
  const std::vector<int64_t> starts = megatron_document_starts(data, size);
  for (size_t i = 0; i < starts.size(); ++i) {
    fuzz::expect(starts[i] >= 0 && starts[i] <= ix.tokens, "a document start outside the tokens");
    fuzz::expect(i == 0 || starts[i] >= starts[i - 1], "document starts do not rise");
  }
  return 0;
}
