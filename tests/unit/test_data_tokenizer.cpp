#include <gtest/gtest.h>

#include "data_pipeline/tokenizer.h"
#include "framework/error.h"
#include "framework/sha256.h"
#include "test_data_util.h"

namespace moe {
namespace {

TEST(ByteTokenizer, RoundTripsEveryByte) {
  auto tok = make_tokenizer("byte");
  std::string text;
  for (int b = 0; b < 256; ++b) text.push_back(char(b));
  text += "ROMEO: héllo, wörld ✓\n";
  auto ids = tok->encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(ids[i], uint32_t(static_cast<unsigned char>(text[i])));
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_TRUE(tok->encode("").empty());
}

TEST(ByteTokenizer, Identity) {
  auto tok = make_tokenizer("byte");
  EXPECT_EQ(tok->vocab_size(), 256);
  EXPECT_EQ(tok->eos_id(), 0u);
  EXPECT_EQ(tok->name(), "byte");
  EXPECT_EQ(tok->hash(), sha256_hex("moe-byte-tokenizer-v1"));
  EXPECT_EQ(tok->hash().size(), 64u);
}

TEST(ByteTokenizer, DecodeRejectsNonBytes) {
  auto tok = make_tokenizer("byte");
  std::string msg = test::error_of([&] { tok->decode({65, 256}); });
  EXPECT_NE(msg.find("token id 256 at position 1"), std::string::npos) << msg;
}

TEST(MakeTokenizer, MissingTokenizerFileIsAClearError) {
  std::string msg = test::error_of([] { make_tokenizer("tok/tokenizer.json"); });
  EXPECT_NE(msg.find("tok/tokenizer.json: cannot read tokenizer file"), std::string::npos) << msg;
}

}  // namespace
}  // namespace moe
