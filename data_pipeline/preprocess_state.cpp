#include "data_pipeline/preprocess_state.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "framework/error.h"

using nlohmann::json;

namespace moe {

json RunState::to_json() const {
  const Counts& c = counts;
  return {{"version", kStateVersion},
          {"fingerprint", fingerprint},
          {"stream", {{"tokens", stream.tokens}, {"doc_starts", stream.doc_starts}, {"shard_sha256", stream.shard_sha256}}},
          {"input", {{"file", at.file}, {"offset", at.offset}, {"line", at.line}, {"doc_line", at.doc_line},
                     {"mid_doc", at.mid_doc}, {"skip", skip}, {"done", input_done}}},
          {"counts", {{"documents", c.documents}, {"empty", c.empty}, {"bad_lines", c.bad_lines},
                      {"invalid_docs", c.invalid_docs}, {"invalid_bytes", c.invalid_bytes},
                      {"text_bytes", c.text_bytes}, {"doc_tokens", c.doc_tokens},
                      {"doc_invalid", c.doc_invalid}, {"first_bad", c.first_bad}}},
          {"val", val}};
}

namespace {

// A count as to_json writes it: an integer in [0, max]. nlohmann's get<> would take 2.5 or -1 and
// convert it (a float out of range even with undefined behaviour), resuming from a position no
// run recorded.
template <class T>
T count_at(const json& j, const char* key) {
  const json& v = j.at(key);
  if (!v.is_number_integer() || (v.is_number_unsigned() ? v.get<uint64_t>() > uint64_t(std::numeric_limits<T>::max())
                                                        : v.get<int64_t>() < 0 || uint64_t(v.get<int64_t>()) > uint64_t(std::numeric_limits<T>::max())))
    throw std::runtime_error(std::string("progress.json: ") + key + " is not a count");
  return v.is_number_unsigned() ? T(v.get<uint64_t>()) : T(v.get<int64_t>());
}

bool flag_at(const json& j, const char* key) {
  const json& v = j.at(key);
  if (!v.is_boolean()) throw std::runtime_error(std::string("progress.json: ") + key + " is not true/false");
  return v.get<bool>();
}

std::string string_at(const json& j, const char* key) {
  const json& v = j.at(key);
  if (!v.is_string()) throw std::runtime_error(std::string("progress.json: ") + key + " is not a string");
  return v.get<std::string>();
}

}  // namespace

RunState RunState::from_json(const json& j) {
  if (!j.is_object() || !j.at("version").is_number_integer() || j.at("version").get<int64_t>() != kStateVersion)
    throw std::runtime_error("progress.json version");
  RunState s;
  s.fingerprint = string_at(j, "fingerprint");
  const json &st = j.at("stream"), &in = j.at("input"), &c = j.at("counts");
  s.stream = {count_at<int64_t>(st, "tokens"), count_at<int64_t>(st, "doc_starts"), {}};
  for (const json& h : st.at("shard_sha256")) {
    if (!h.is_string()) throw std::runtime_error("progress.json: shard_sha256 holds a non-string");
    s.stream.shard_sha256.push_back(h.get<std::string>());
  }
  s.at = {count_at<uint32_t>(in, "file"), count_at<uint64_t>(in, "offset"), count_at<int64_t>(in, "line"),
          count_at<int64_t>(in, "doc_line"), flag_at(in, "mid_doc")};
  s.skip = count_at<int64_t>(in, "skip");
  s.input_done = flag_at(in, "done");
  s.counts = {count_at<int64_t>(c, "documents"),     count_at<int64_t>(c, "empty"),
              count_at<int64_t>(c, "bad_lines"),     count_at<int64_t>(c, "invalid_docs"),
              count_at<uint64_t>(c, "invalid_bytes"), count_at<uint64_t>(c, "text_bytes"),
              count_at<int64_t>(c, "doc_tokens"),    flag_at(c, "doc_invalid"),
              string_at(c, "first_bad")};
  // What finishing recorded (shard_writer.cpp, megatron.cpp): null, or the val split's byte count
  // and sha256 (one per shard, or the one Megatron .bin's).
  s.val = j.at("val");
  if (!s.val.is_null()) {
    const json& sha = s.val.at("sha256_bin");
    (void)count_at<uint64_t>(s.val, "bytes");
    bool ok = sha.is_string() || sha.is_array();
    if (sha.is_array())
      for (const json& h : sha) ok = ok && h.is_string();
    if (!ok) throw std::runtime_error("progress.json: val.sha256_bin is not a string or a list of them");
  }
  return s;
}

FolderLock::FolderLock(const std::filesystem::path& dir) {
  fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_ < 0) throw error(dir.string(), ": cannot open (", std::strerror(errno), ")");
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    throw error(dir.string(), ": another moe preprocess is writing this output (expected one run per --output)");
  }
}

FolderLock::~FolderLock() { ::close(fd_); }

}  // namespace moe
