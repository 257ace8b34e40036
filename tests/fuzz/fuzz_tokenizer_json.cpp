// A Hugging Face tokenizer.json (byte-level BPE, data_pipeline/bpe.h) through make_tokenizer, as
// `--tokenizer FILE.json` loads it. Input: the file, a part marker, then a text to encode.
// Properties of an accepted tokenizer: every id it gives is inside its vocabulary, and decoding
// gives the text back when the text's every byte has a token.
#include "data_pipeline/tokenizer.h"
#include "tests/fuzz/fuzz_common.h"

using namespace moe;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string> parts = fuzz::split_parts(data, size, 2);
  const std::string path = fuzz::scratch_dir() + "/tokenizer.json";
  fuzz::write_file(path, parts[0]);
  std::unique_ptr<Tokenizer> tok;
  if (fuzz::refused([&] { tok = make_tokenizer(path); })) return 0;
  const std::vector<uint32_t> ids = tok->encode(parts[1]);
  for (uint32_t id : ids) fuzz::expect(int64_t(id) < tok->vocab_size(), "encode gave an id outside the vocabulary");
  fuzz::expect(tok->eos_id() < tok->vocab_size(), "EOS outside the vocabulary");
  (void)tok->decode(ids);
  (void)tok->encode_continuation(parts[1]);
  return 0;
}
