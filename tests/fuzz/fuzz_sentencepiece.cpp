// A SentencePiece .model (protobuf, data_pipeline/sentencepiece.h), parsed from memory as
// `--tokenizer FILE.model` parses the file. Input: the model, a part marker, then a text to encode.
// Properties of an accepted model: ids inside the vocabulary; decode and token_text never fail.
#include "data_pipeline/sentencepiece.h"
#include "data_pipeline/tokenizer.h"
#include "tests/fuzz/fuzz_common.h"

using namespace moe;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string> parts = fuzz::split_parts(data, size, 2);
  std::unique_ptr<Tokenizer> tok;
  if (fuzz::refused([&] { tok = parse_sentencepiece_tokenizer(parts[0], "fuzz.model"); })) return 0;
  fuzz::expect(tok->eos_id() < tok->vocab_size(), "EOS outside the vocabulary");
  const std::vector<uint32_t> ids = tok->encode(parts[1]);
  for (uint32_t id : ids) fuzz::expect(int64_t(id) < tok->vocab_size(), "encode gave an id outside the vocabulary");
  (void)tok->decode(ids);
  for (uint32_t id : ids) (void)tok->token_text(id);
  (void)tok->encode_continuation(parts[1]);
  return 0;
}
