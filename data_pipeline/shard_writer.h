// The writing side of the shard format (docs/formats.md, "Shards"). preprocess appends documents
// to one token stream; finish() cuts the stream into the train split (its head) and the val split
// (its last `val_tokens` tokens), writes the .idx files, checksums and manifests.
//
// Bounded memory: tokens go straight to `<dir>/train/shard-NNNNN.bin` in shard-sized files and
// document starts to a temporary `<dir>/doc-starts.u64`; finish() moves the tail into `<dir>/val`
// (a copy of the val tokens only) and truncates the train shard the cut falls in.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe {

struct ShardHeader {
  std::string tokenizer;       // Tokenizer::name()
  std::string tokenizer_hash;  // Tokenizer::hash()
  int64_t vocab_size = 0;
  uint32_t eos_id = 0;
};

// "shard-00007.bin" for (7, ".bin").
std::string shard_name(int64_t k, const char* ext);
// Bytes per token on disk: 2 ("u16") when every id fits, else 4 ("u32").
int token_width(int64_t vocab_size);

// Appends little-endian tokens to shard-00000.bin, shard-00001.bin, ... in `dir`, starting a new
// file every `shard_tokens` tokens.
class RollingShardFile {
 public:
  RollingShardFile(std::string dir, int width, int64_t shard_tokens);
  ~RollingShardFile();
  RollingShardFile(const RollingShardFile&) = delete;
  RollingShardFile& operator=(const RollingShardFile&) = delete;
  void write(const uint8_t* bytes, int64_t tokens);
  void close();
  const std::vector<int64_t>& shard_tokens() const { return sizes_; }

 private:
  std::string dir_;
  int width_;
  int64_t shard_tokens_;
  FILE* f_ = nullptr;
  std::vector<int64_t> sizes_;  // tokens in each file so far
};

class ShardWriter {
 public:
  // `dir` must exist and be empty (preprocess's temporary output folder).
  ShardWriter(std::string dir, ShardHeader header, int64_t shard_tokens);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // A document is one or more add_tokens() calls, then end_document() (which appends the EOS id).
  void add_tokens(const std::vector<uint32_t>& ids);
  void end_document();
  int64_t tokens() const { return tokens_; }
  int64_t documents() const { return documents_; }
  // Requires 0 <= val_tokens < tokens(). Writes <dir>/train and <dir>/val; returns their manifests.
  std::pair<nlohmann::ordered_json, nlohmann::ordered_json> finish(int64_t val_tokens);

 private:
  std::string dir_;
  ShardHeader header_;
  int64_t shard_tokens_;
  int width_;
  RollingShardFile stream_;
  FILE* starts_ = nullptr;  // uint64 global start offset of every document
  std::vector<uint8_t> buf_;
  bool in_document_ = false;
  int64_t tokens_ = 0, documents_ = 0;
};

}  // namespace moe
