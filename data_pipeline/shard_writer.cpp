#include "data_pipeline/shard_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "framework/error.h"
#include "framework/sha256.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

// Consecutive shard files of one split, S tokens each, each written as .tmp, synced and renamed.
class SplitWriter {
 public:
  SplitWriter(std::string dir, int width, int64_t S) : dir_(std::move(dir)), width_(width), S_(S) {}
  void write(const uint32_t* ids, size_t n) {
    while (n > 0) {
      if (!f_.is_open()) {
        f_ = OutFile::create(path(true));
        sha_ = Sha256();
        in_shard_ = 0;
      }
      size_t take = size_t(std::min<int64_t>(int64_t(n), S_ - in_shard_));
      buf_.resize(take * size_t(width_));
      for (size_t i = 0; i < take; ++i)
        for (int b = 0; b < width_; ++b) buf_[i * size_t(width_) + size_t(b)] = uint8_t(ids[i] >> (8 * b));
      f_.write(buf_.data(), buf_.size());
      sha_.update(buf_.data(), buf_.size());
      in_shard_ += int64_t(take);
      ids += take, n -= take;
      if (in_shard_ == S_) close_shard();
    }
  }
  std::vector<std::string> finish() {
    if (f_.is_open()) close_shard();
    return std::move(shas_);
  }

 private:
  std::string path(bool tmp) const { return dir_ + "/" + shard_name(int64_t(shas_.size()), tmp ? ".bin.tmp" : ".bin"); }
  void close_shard() {
    f_.sync();
    f_.close();
    rename_path(path(true), path(false));
    shas_.push_back(sha_.hex());
  }
  std::string dir_;
  int width_;
  int64_t S_, in_shard_ = 0;
  OutFile f_;
  Sha256 sha_;
  std::vector<uint8_t> buf_;
  std::vector<std::string> shas_;
};

// Writes `path` (atomically) holding the piece offsets of tokens [lo, hi) within it, then hi - lo.
// Returns {pieces, sha256}.
std::pair<int64_t, std::string> write_shard_index(DocStarts& starts, int64_t lo, int64_t hi, const std::string& path) {
  OutFile f = OutFile::create(path + ".tmp");
  Sha256 sha;
  int64_t pieces = 0;
  auto put = [&](uint64_t v) {
    f.write(&v, 8);
    sha.update(&v, 8);
  };
  starts.pieces(lo, hi, [&](int64_t b, int64_t) {
    put(uint64_t(b - lo));
    ++pieces;
  });
  put(uint64_t(hi - lo));
  f.sync();
  f.close();
  rename_path(path + ".tmp", path);
  return {pieces, sha.hex()};
}

}  // namespace

int token_width(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

void read_tokens(const std::string& path, int width, int64_t first, int64_t lo, int64_t hi,
                 const std::function<void(const uint32_t*, size_t)>& fn) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw error(path, ": cannot open (", std::strerror(errno), ")");
  std::vector<uint8_t> raw;
  std::vector<uint32_t> ids;
  bool ok = fseeko(f, off_t((lo - first) * width), SEEK_SET) == 0;
  for (int64_t at = lo; ok && at < hi;) {
    size_t n = size_t(std::min<int64_t>(hi - at, 1 << 18));
    raw.resize(n * size_t(width));
    ids.resize(n);
    ok = std::fread(raw.data(), 1, raw.size(), f) == raw.size();
    if (!ok) break;
    for (size_t i = 0; i < n; ++i) {
      uint32_t v = 0;
      std::memcpy(&v, raw.data() + i * size_t(width), size_t(width));
      ids[i] = v;
    }
    fn(ids.data(), n);
    at += int64_t(n);
  }
  std::fclose(f);
  if (!ok) throw error(path, ": read error or shorter than expected (", std::strerror(errno), ")");
}

nlohmann::ordered_json write_manifest(const std::string& split_dir, const char* split, const char* format,
                                      const ShardHeader& h, const char* dtype, uint64_t bytes,
                                      nlohmann::ordered_json files) {
  nlohmann::ordered_json m;
  m["format_version"] = 1;
  m["format"] = format;
  m["split"] = split;
  m["tokenizer"] = h.tokenizer;
  m["tokenizer_hash"] = h.tokenizer_hash;
  m["vocab_size"] = h.vocab_size;
  m["eos_id"] = h.eos_id;
  m["dtype"] = dtype;
  int64_t docs = 0, toks = 0;
  for (const auto& f : files) docs += f["documents"].get<int64_t>(), toks += f["tokens"].get<int64_t>();
  m["documents"] = docs;
  m["tokens"] = toks;
  m["bytes"] = bytes;
  m["shards"] = std::move(files);
  write_file_atomic(split_dir + "/manifest.json", m.dump(2) + "\n");
  return m;
}

std::pair<nlohmann::ordered_json, nlohmann::ordered_json> finish_shards(const FinishInput& in) {
  const ShardHeader& h = in.header;
  const int64_t S = in.shard_tokens, total = in.stream.tokens, cut = in.cut;
  const int w = h.width;
  MOE_CHECK(cut > 0 && cut <= total && int64_t(in.stream.shard_sha256.size()) == (total + S - 1) / S);
  const std::string train = in.dir + "/train", val = in.dir + "/val";
  auto stream_shard = [&](int64_t k) { return train + "/" + shard_name(k, ".bin"); };

  // Val first: its tokens are copied out of the stream before the train side is cut.
  nlohmann::json rec;
  if (in.val_record) {
    rec = *in.val_record;
  } else {
    fs::remove_all(val);
    fs::create_directories(val);
    SplitWriter out(val, w, S);
    uint64_t bytes = 0;
    for (int64_t k = cut / S; k * S < total; ++k)
      read_tokens(stream_shard(k), w, k * S, std::max(cut, k * S), std::min(total, (k + 1) * S),
                  [&](const uint32_t* ids, size_t n) {
                    bytes += in.bytes_of(ids, n);
                    out.write(ids, n);
                  });
    rec = {{"bytes", bytes}, {"sha256_bin", out.finish()}};
    sync_dir(val);
    in.save_val(rec);
  }
  const uint64_t val_bytes = rec.at("bytes").get<uint64_t>();
  const std::vector<std::string> val_sha = rec.at("sha256_bin").get<std::vector<std::string>>();

  // Train: the stream shards up to the one holding token cut - 1, that one cut to length.
  const int64_t last = (cut - 1) / S;
  const uint64_t last_bytes = uint64_t(cut - last * S) * uint64_t(w);
  if (fs::file_size(stream_shard(last)) > last_bytes) fs::resize_file(stream_shard(last), last_bytes);
  for (int64_t k = last + 1; k * S < total; ++k) fs::remove(stream_shard(k));
  std::vector<std::string> train_sha(in.stream.shard_sha256.begin(), in.stream.shard_sha256.begin() + last + 1);
  if (cut < std::min(total, (last + 1) * S) || train_sha[size_t(last)].empty())
    train_sha[size_t(last)] = sha256_file(stream_shard(last));
  sync_dir(train);

  DocStarts starts(in.dir + "/doc-starts.u64", in.stream.doc_starts);
  auto list = [&](const std::string& dir, int64_t lo, int64_t hi, const std::vector<std::string>& sha) {
    nlohmann::ordered_json files = nlohmann::ordered_json::array();
    for (int64_t k = 0; lo + k * S < hi; ++k) {
      const int64_t b = lo + k * S, e = std::min(hi, b + S);
      auto [pieces, sha_idx] = write_shard_index(starts, b, e, dir + "/" + shard_name(k, ".idx"));
      files.push_back({{"file", shard_name(k, ".bin")},
                       {"tokens", e - b},
                       {"documents", pieces},
                       {"sha256_bin", sha.at(size_t(k))},
                       {"sha256_idx", sha_idx}});
    }
    return files;
  };
  auto train_files = list(train, 0, cut, train_sha);
  auto val_files = list(val, cut, total, val_sha);
  const char* dtype = w == 2 ? "u16" : "u32";
  return {write_manifest(train, "train", "shards", h, dtype, in.text_bytes - val_bytes, std::move(train_files)),
          write_manifest(val, "val", "shards", h, dtype, val_bytes, std::move(val_files))};
}

}  // namespace moe
