#include "data_pipeline/preprocess_state.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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

RunState RunState::from_json(const json& j) {
  if (j.at("version").get<int>() != kStateVersion) throw std::runtime_error("progress.json version");
  RunState s;
  s.fingerprint = j.at("fingerprint").get<std::string>();
  const json &st = j.at("stream"), &in = j.at("input"), &c = j.at("counts");
  s.stream = {st.at("tokens").get<int64_t>(), st.at("doc_starts").get<int64_t>(),
              st.at("shard_sha256").get<std::vector<std::string>>()};
  s.at = {in.at("file").get<uint32_t>(), in.at("offset").get<uint64_t>(), in.at("line").get<int64_t>(),
          in.at("doc_line").get<int64_t>(), in.at("mid_doc").get<bool>()};
  s.skip = in.at("skip").get<int64_t>();
  s.input_done = in.at("done").get<bool>();
  s.counts = {c.at("documents").get<int64_t>(),     c.at("empty").get<int64_t>(),
              c.at("bad_lines").get<int64_t>(),     c.at("invalid_docs").get<int64_t>(),
              c.at("invalid_bytes").get<uint64_t>(), c.at("text_bytes").get<uint64_t>(),
              c.at("doc_tokens").get<int64_t>(),    c.at("doc_invalid").get<bool>(),
              c.at("first_bad").get<std::string>()};
  s.val = j.at("val");
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
