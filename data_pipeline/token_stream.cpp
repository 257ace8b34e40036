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
    if (format_ == OutputFormat::Shards && pending_ == 0) {
      data_ = OutFile::create(shard_path(state_.tokens / S_, true));
      sha_ = Sha256();
    }
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
    if (format_ == OutputFormat::Shards) sha_.update(buf_.data(), buf_.size());
    pending_ += int64_t(take);
    ids += take, n -= take, unit_done += int64_t(take);
    if (pending_ == S_)
      checkpoint([&](const StreamState& s) {
        if (on_checkpoint_) on_checkpoint_(s, unit_done);
      });
  }
}

// The order is what makes a kill at any moment safe: data and document starts durable, then the
// progress file (via `record`) with the shard's sha256, then the shard's final name. A .bin name
// therefore always stands for a recorded, complete shard; a recorded shard may still be .bin.tmp
// (settle_recorded_shards).
void TokenStream::checkpoint(const Record& record) {
  data_.sync();
  int64_t k = -1;
  if (format_ == OutputFormat::Shards) {
    data_.close();
    k = state_.tokens / S_;
    state_.shard_sha256.push_back(sha_.hex());
  }
  starts_.sync();
  sync_dir(dir_ + "/train");  // a new .tmp shard's name, before the record points at it
  state_.tokens += pending_;
  state_.doc_starts += starts_pending_;
  pending_ = starts_pending_ = 0;
  record(state_);
  // Not synced here: a lost rename is redone by settle_recorded_shards, and the next checkpoint
  // syncs the folder anyway.
  if (k >= 0) rename_path(shard_path(k, true), shard_path(k, false));
}

StreamState TokenStream::finish(const Record& record) {
  if (pending_ > 0) {
    checkpoint(record);  // the last shard is shorter; it is complete all the same
  } else {
    starts_.sync();
    state_.doc_starts += starts_pending_;
    starts_pending_ = 0;
    record(state_);
  }
  if (data_.is_open()) data_.close();
  starts_.close();
  return state_;
}

void settle_recorded_shards(const std::string& dir, const StreamState& state) {
  const std::string train = dir + "/train";
  bool renamed = false;
  for (size_t k = 0; k < state.shard_sha256.size(); ++k) {
    const std::string done = train + "/" + shard_name(int64_t(k), ".bin"), tmp = done + ".tmp";
    std::error_code ec;
    if (fs::exists(done, ec) || !fs::exists(tmp, ec) || state.shard_sha256[k].empty()) continue;
    if (sha256_file(tmp) != state.shard_sha256[k])
      throw error(tmp, ": recorded as complete in ", dir, "/progress.json but its sha256 differs (the disk lost "
                  "data; delete ", dir, " to start over)");
    rename_path(tmp, done);
    renamed = true;
  }
  if (renamed) sync_dir(train);
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
