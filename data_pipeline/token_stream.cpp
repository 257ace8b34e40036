#include "data_pipeline/token_stream.h"

#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "framework/error.h"
#include "framework/sha256.h"

namespace fs = std::filesystem;

namespace moe {

static_assert(std::endian::native == std::endian::little, "token files are little-endian");

std::string shard_name(int64_t k, const char* ext) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "shard-%05lld%s", static_cast<long long>(k), ext);
  return buf;
}

std::string TokenStream::shard_path(int64_t k, bool tmp) const {
  return dir_ + "/train/" + shard_name(k, tmp ? ".bin.tmp" : ".bin");
}

TokenStream::TokenStream(std::string dir, OutputFormat format, int width, int64_t shard_tokens, StreamState from,
                         Checkpoint on_checkpoint)
    : dir_(std::move(dir)), format_(format), width_(width), S_(shard_tokens), on_checkpoint_(std::move(on_checkpoint)),
      state_(std::move(from)) {
  MOE_CHECK((width == 2 || width == 4) && S_ > 0);
  const std::string train = dir_ + "/train";
  fs::create_directories(train);
  // Whatever a killed run wrote after its last checkpoint goes: later shards, partial files.
  if (format_ == OutputFormat::Shards) {
    MOE_CHECK(state_.tokens % S_ == 0 && int64_t(state_.shard_sha256.size()) == state_.tokens / S_);
    for (const auto& e : fs::directory_iterator(train)) {
      std::string name = e.path().filename().string();
      long long k = -1;
      if (name.ends_with(".tmp") || (std::sscanf(name.c_str(), "shard-%lld.bin", &k) == 1 && k >= state_.tokens / S_))
        fs::remove(e.path());
    }
  } else {
    data_ = OutFile::resume(train + "/" + kMegatronName + ".bin", uint64_t(state_.tokens) * uint64_t(width_));
  }
  starts_ = OutFile::resume(dir_ + "/doc-starts.u64", uint64_t(state_.doc_starts) * 8);
}

void TokenStream::append(const uint32_t* ids, size_t n, bool doc_start, int64_t unit_done) {
  if (doc_start && n > 0) {
    uint64_t at = uint64_t(tokens());
    starts_.write(&at, 8);
    ++starts_pending_;
  }
  while (n > 0) {
    if (format_ == OutputFormat::Shards && pending_ == 0) data_ = OutFile::create(shard_path(state_.tokens / S_, true));
    const size_t take = size_t(std::min<int64_t>(int64_t(n), S_ - pending_));
    buf_.resize(take * size_t(width_));
    uint8_t* p = buf_.data();
    if (width_ == 2) {
      uint32_t all = 0;
      for (size_t i = 0; i < take; ++i) *p++ = uint8_t(ids[i]), *p++ = uint8_t(ids[i] >> 8), all |= ids[i];
      MOE_CHECK(all < 65536, "a token id does not fit u16");
    } else {
      std::memcpy(p, ids, take * 4);
    }
    data_.write(buf_.data(), buf_.size());
    pending_ += int64_t(take);
    ids += take, n -= take, unit_done += int64_t(take);
    if (pending_ == S_) checkpoint(unit_done, true);
  }
}

void TokenStream::checkpoint(int64_t unit_tokens, bool hash) {
  data_.sync();
  if (format_ == OutputFormat::Shards) {
    data_.close();
    const int64_t k = state_.tokens / S_;
    rename_path(shard_path(k, true), shard_path(k, false));
    // Read back from the page cache rather than hashed while written: the last shard is left to
    // finishing, which usually cuts it (the val split) and would hash it again.
    state_.shard_sha256.push_back(hash ? sha256_file(shard_path(k, false)) : "");
  }
  starts_.sync();
  sync_dir(dir_ + "/train");
  state_.tokens += pending_;
  state_.doc_starts += starts_pending_;
  pending_ = starts_pending_ = 0;
  if (on_checkpoint_) on_checkpoint_(state_, unit_tokens);
}

StreamState TokenStream::finish() {
  if (pending_ > 0) {
    // The last shard is shorter; it is complete all the same.
    auto cb = std::move(on_checkpoint_);
    on_checkpoint_ = nullptr;
    checkpoint(0, false);
    on_checkpoint_ = std::move(cb);
  } else {
    starts_.sync();
    state_.doc_starts += starts_pending_;
    starts_pending_ = 0;
  }
  if (data_.is_open()) data_.close();
  starts_.close();
  return state_;
}

DocStarts::DocStarts(const std::string& path, int64_t count)
    : path_(path), f_(std::fopen(path.c_str(), "rb")), left_(count) {
  if (!f_) throw error(path, ": cannot open (", std::strerror(errno), ")");
  advance();
}

DocStarts::~DocStarts() { std::fclose(f_); }

void DocStarts::advance() {
  uint64_t v = 0;
  has_ = left_ > 0 && std::fread(&v, 8, 1, f_) == 1;
  if (left_ > 0 && !has_) throw error(path_, ": shorter than its progress record (", left_, " entries missing)");
  --left_;
  next_ = int64_t(v);
}

void DocStarts::pieces(int64_t lo, int64_t hi, const std::function<void(int64_t, int64_t)>& fn) {
  while (has_ && next_ <= lo) advance();
  int64_t begin = lo;
  while (has_ && next_ < hi) {
    fn(begin, next_);
    begin = next_;
    advance();
  }
  if (begin < hi) fn(begin, hi);
}

}  // namespace moe
