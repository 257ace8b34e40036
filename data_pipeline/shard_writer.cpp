#include "data_pipeline/shard_writer.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>

#include "framework/error.h"
#include "framework/sha256.h"
#include "framework/threads.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

// The .idx files and the temporary start list are written as raw uint64s.
static_assert(std::endian::native == std::endian::little, "shard files are little-endian");

FILE* open_file(const std::string& path, const char* mode) {
  FILE* f = std::fopen(path.c_str(), mode);
  if (!f) throw error(path, ": cannot open for writing (", std::strerror(errno), ")");
  return f;
}

void write_all(FILE* f, const void* p, size_t n, const std::string& path) {
  if (n && std::fwrite(p, 1, n, f) != n) throw error(path, ": write failed (", std::strerror(errno), ")");
}

void close_file(FILE*& f, const std::string& path) {
  if (!f) return;
  int rc = std::fclose(f);
  f = nullptr;
  if (rc != 0) throw error(path, ": write failed (", std::strerror(errno), ")");
}

// Reads the sorted global document starts once, front to back, handing out those inside each
// shard's range in turn.
class StartsReader {
 public:
  explicit StartsReader(const std::string& path) : path_(path), f_(std::fopen(path.c_str(), "rb")) {
    if (!f_) throw error(path, ": cannot open (", std::strerror(errno), ")");
    advance();
  }
  ~StartsReader() { std::fclose(f_); }
  // Offsets local to [begin, end): 0 first (the shard may open inside a document), then every
  // document start strictly inside, then end - begin.
  std::vector<uint64_t> shard_index(int64_t begin, int64_t end) {
    std::vector<uint64_t> idx{0};
    while (has_ && next_ <= begin) advance();
    while (has_ && next_ < end) idx.push_back(uint64_t(next_ - begin)), advance();
    idx.push_back(uint64_t(end - begin));
    return idx;
  }

 private:
  void advance() {
    uint64_t v;
    has_ = std::fread(&v, 8, 1, f_) == 1;
    if (!has_ && std::ferror(f_)) throw error(path_, ": read error");
    next_ = int64_t(v);
  }
  std::string path_;
  FILE* f_;
  bool has_ = false;
  int64_t next_ = 0;
};

struct ShardOut {
  ShardOut(std::string d, int64_t k, int64_t b, int64_t e) : dir(std::move(d)), local(k), begin(b), end(e) {}
  std::string path(const char* ext) const { return dir + "/" + shard_name(local, ext); }
  std::string dir;
  int64_t local;       // shard number within its split
  int64_t begin, end;  // global token range
  int64_t documents = 0;
  std::string sha_bin, sha_idx;
};

}  // namespace

std::string shard_name(int64_t k, const char* ext) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "shard-%05lld%s", static_cast<long long>(k), ext);
  return buf;
}

int token_width(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

RollingShardFile::RollingShardFile(std::string dir, int width, int64_t shard_tokens)
    : dir_(std::move(dir)), width_(width), shard_tokens_(shard_tokens) {
  MOE_CHECK(shard_tokens > 0);
}

RollingShardFile::~RollingShardFile() {
  if (f_) std::fclose(f_);
}

void RollingShardFile::write(const uint8_t* bytes, int64_t tokens) {
  while (tokens > 0) {
    if (!f_ || sizes_.back() == shard_tokens_) {
      close();
      f_ = open_file(dir_ + "/" + shard_name(int64_t(sizes_.size()), ".bin"), "wb");
      sizes_.push_back(0);
    }
    int64_t take = std::min(tokens, shard_tokens_ - sizes_.back());
    write_all(f_, bytes, size_t(take * width_), dir_ + "/" + shard_name(int64_t(sizes_.size()) - 1, ".bin"));
    sizes_.back() += take;
    bytes += take * width_;
    tokens -= take;
  }
}

void RollingShardFile::close() {
  if (f_) close_file(f_, dir_ + "/" + shard_name(int64_t(sizes_.size()) - 1, ".bin"));
}

ShardWriter::ShardWriter(std::string dir, ShardHeader header, int64_t shard_tokens)
    : dir_(std::move(dir)),
      header_(std::move(header)),
      shard_tokens_(shard_tokens),
      width_(token_width(header_.vocab_size)),
      stream_(dir_ + "/train", width_, shard_tokens) {
  fs::create_directories(dir_ + "/train");
  starts_ = open_file(dir_ + "/doc-starts.u64", "wb");
}

ShardWriter::~ShardWriter() {
  if (starts_) std::fclose(starts_);
}

void ShardWriter::add_tokens(const std::vector<uint32_t>& ids) {
  if (ids.empty()) return;
  if (!in_document_) {
    uint64_t start = uint64_t(tokens_);
    write_all(starts_, &start, 8, dir_ + "/doc-starts.u64");
    in_document_ = true;
  }
  buf_.resize(ids.size() * size_t(width_));
  uint8_t* p = buf_.data();
  for (uint32_t t : ids) {
    MOE_CHECK(int64_t(t) < header_.vocab_size, "tokenizer produced id ", t);
    for (int b = 0; b < width_; ++b) *p++ = uint8_t(t >> (8 * b));
  }
  stream_.write(buf_.data(), int64_t(ids.size()));
  tokens_ += int64_t(ids.size());
}

void ShardWriter::end_document() {
  MOE_CHECK(in_document_, "end_document() without tokens");
  uint8_t eos[4];
  for (int b = 0; b < width_; ++b) eos[b] = uint8_t(header_.eos_id >> (8 * b));
  stream_.write(eos, 1);
  tokens_ += 1;
  documents_ += 1;
  in_document_ = false;
}

std::pair<nlohmann::ordered_json, nlohmann::ordered_json> ShardWriter::finish(int64_t val_tokens) {
  const int64_t total = tokens_, cut = total - val_tokens, S = shard_tokens_;
  MOE_CHECK(!in_document_ && val_tokens >= 0 && cut > 0, "val_tokens ", val_tokens, " of ", total);
  stream_.close();
  close_file(starts_, dir_ + "/doc-starts.u64");
  const std::string train = dir_ + "/train", val = dir_ + "/val";
  fs::create_directories(val);

  // Val: copy stream tokens [cut, total) into val's own shards.
  {
    RollingShardFile out(val, width_, S);
    std::vector<uint8_t> chunk(size_t(1) << 20);
    for (int64_t k = cut / S; k * S < total; ++k) {
      std::string path = train + "/" + shard_name(k, ".bin");
      FILE* f = std::fopen(path.c_str(), "rb");
      if (!f) throw error(path, ": cannot open (", std::strerror(errno), ")");
      long skip = long(std::max<int64_t>(0, cut - k * S) * width_);
      if (std::fseek(f, skip, SEEK_SET) != 0) {
        std::fclose(f);
        throw error(path, ": seek failed");
      }
      for (size_t n; (n = std::fread(chunk.data(), 1, chunk.size(), f)) > 0;) out.write(chunk.data(), int64_t(n) / width_);
      bool bad = std::ferror(f);
      std::fclose(f);
      if (bad) throw error(path, ": read error");
    }
    out.close();
  }
  // Train: keep stream shards up to the one holding token cut-1, cut to length.
  const int64_t last = (cut - 1) / S;
  fs::resize_file(train + "/" + shard_name(last, ".bin"), uint64_t((cut - last * S) * width_));
  for (int64_t k = last + 1; k * S < total; ++k) fs::remove(train + "/" + shard_name(k, ".bin"));

  std::vector<ShardOut> shards;
  for (int64_t k = 0; k <= last; ++k) shards.emplace_back(train, k, k * S, std::min(cut, (k + 1) * S));
  const size_t n_train = shards.size();
  for (int64_t b = cut; b < total; b += S) shards.emplace_back(val, (b - cut) / S, b, std::min(total, b + S));

  {
    StartsReader starts(dir_ + "/doc-starts.u64");
    for (size_t i = 0; i < shards.size(); ++i) {
      auto idx = starts.shard_index(shards[i].begin, shards[i].end);
      shards[i].documents = int64_t(idx.size()) - 1;
      std::string path = shards[i].path(".idx");
      FILE* f = open_file(path, "wb");
      write_all(f, idx.data(), idx.size() * 8, path);
      close_file(f, path);
    }
  }
  fs::remove(dir_ + "/doc-starts.u64");

  // Checksums, one shard per task. Pool threads must not throw, so errors travel back by value.
  std::vector<std::exception_ptr> errors(shards.size());
  parallel_for(int64_t(shards.size()), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      try {
        shards[i].sha_bin = sha256_file(shards[i].path(".bin"));
        shards[i].sha_idx = sha256_file(shards[i].path(".idx"));
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  });
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);

  auto manifest = [&](const char* split, size_t first, size_t end) {
    nlohmann::ordered_json m;
    m["format_version"] = 1;
    m["split"] = split;
    m["tokenizer"] = header_.tokenizer;
    m["tokenizer_hash"] = header_.tokenizer_hash;
    m["vocab_size"] = header_.vocab_size;
    m["eos_id"] = header_.eos_id;
    m["dtype"] = width_ == 2 ? "u16" : "u32";
    int64_t docs = 0, toks = 0;
    auto list = nlohmann::ordered_json::array();
    for (size_t i = first; i < end; ++i) {
      docs += shards[i].documents;
      toks += shards[i].end - shards[i].begin;
      list.push_back({{"file", shard_name(shards[i].local, ".bin")},
                      {"tokens", shards[i].end - shards[i].begin},
                      {"documents", shards[i].documents},
                      {"sha256_bin", shards[i].sha_bin},
                      {"sha256_idx", shards[i].sha_idx}});
    }
    m["documents"] = docs;
    m["tokens"] = toks;
    m["shards"] = std::move(list);
    std::string path = dir_ + "/" + split + "/manifest.json", text = m.dump(2) + "\n";
    FILE* f = open_file(path, "wb");
    write_all(f, text.data(), text.size(), path);
    close_file(f, path);
    return m;
  };
  return {manifest("train", 0, n_train), manifest("val", n_train, shards.size())};
}

}  // namespace moe
