#include "launch/eval_results.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "framework/error.h"
#include "framework/json_depth.h"

namespace moe {

std::string EvalSettings::describe() const {
  std::ostringstream s;
  s << "batches " << batches << ", micro_batch " << micro_batch << ", seq_len " << seq_len << ", precision "
    << precision;
  return s.str();
}

void set_key_fields(nlohmann::json& row, const EvalKey& key, const EvalSettings& settings) {
  row["checksum"] = key.checksum;
  row["step"] = key.step;
  row["dataset"] = key.dataset;
  row["split"] = key.split;
  row["batches"] = settings.batches;
  row["micro_batch"] = settings.micro_batch;
  row["seq_len"] = settings.seq_len;
  row["precision"] = settings.precision;
}

EvalKey row_key(const nlohmann::json& row) {
  return {row.at("checksum").get<std::string>(), row.at("step").get<int64_t>(), row.at("dataset").get<std::string>(),
          row.at("split").get<std::string>()};
}

EvalSettings row_settings(const nlohmann::json& row) {
  return {row.at("batches").get<int64_t>(), row.at("micro_batch").get<int64_t>(), row.at("seq_len").get<int64_t>(),
          row.at("precision").get<std::string>()};
}

ResultsFile ResultsFile::open(const std::string& path, bool truncate_torn) {
  ResultsFile f;
  f.path_ = path;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return f;
    throw error(path, ": cannot read (", std::strerror(errno), ")");
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t begin = 0, complete = 0;  // complete: bytes up to the end of the last good line
  int64_t line = 0;
  while (begin < text.size()) {
    ++line;
    const size_t nl = text.find('\n', begin);
    const bool last = nl == std::string::npos || nl + 1 == text.size();
    const std::string s = text.substr(begin, (nl == std::string::npos ? text.size() : nl) - begin);
    nlohmann::json row;
    std::string problem;
    try {
      if (json_depth(s) > kMaxJsonDepth) {
        problem = "nested deeper than " + std::to_string(kMaxJsonDepth) + " levels";
      } else {
        row = nlohmann::json::parse(s);
        if (!row.is_object()) problem = "not a JSON object";
        else {
          row_key(row);
          row_settings(row);
        }
      }
    } catch (const nlohmann::json::exception& e) {
      problem = e.what();
    }
    if (problem.empty() && nl != std::string::npos) {
      f.rows_.push_back(std::move(row));
      f.line_of_.push_back(line);
      complete = nl + 1;
      begin = nl + 1;
      continue;
    }
    // Only the last line can be torn by a killed writer; anything else is not ours to drop.
    if (!last) throw error(path, ":", line, ": not a results row (", problem, "); fix or move the file");
    f.note_ = "dropped a torn last line of " + path + " (line " + std::to_string(line) +
              ", from a sweep stopped mid-write); it is evaluated again";
    break;
  }
  if (!f.note_.empty() && truncate_torn && ::truncate(path.c_str(), off_t(complete)) != 0)
    throw error(path, ": cannot drop the torn last line (", std::strerror(errno), ")");
  return f;
}

bool ResultsFile::done(const EvalKey& key, const EvalSettings& settings) const {
  for (size_t i = 0; i < rows_.size(); ++i) {
    if (row_key(rows_[i]) != key) continue;
    const EvalSettings theirs = row_settings(rows_[i]);
    if (theirs == settings) return true;
    const std::string where = i < line_of_.size() ? path_ + ":" + std::to_string(line_of_[i]) : path_;
    throw error(where, ": step ", key.step, " on ", key.dataset, "/", key.split, " was evaluated with ",
                theirs.describe(), ", this sweep uses ", settings.describe(),
                " (results of different settings are not mixed: use another --out)");
  }
  return false;
}

void ResultsFile::append(const nlohmann::json& row) {
  // nlohmann writes NaN as null and never a raw newline, so the dump is one line.
  const std::string line = row.dump() + "\n";
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw error(path_, ": cannot open for appending (", std::strerror(errno), ")");
  // The whole row or nothing: a write the disk or a quota cuts short is retried for its reason,
  // and the file is cut back to its rows so far (no torn row for the next sweep to find).
  const off_t before = ::lseek(fd, 0, SEEK_END);
  size_t done = 0;
  int write_errno = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      write_errno = n < 0 ? errno : EIO;
      break;
    }
    done += size_t(n);
  }
  if (done != line.size()) {
    if (before >= 0 && ::ftruncate(fd, before) != 0) write_errno = write_errno ? write_errno : errno;
    ::close(fd);
    throw error(path_, ": cannot append a row (", std::strerror(write_errno), ")");
  }
  const bool synced = ::fsync(fd) == 0;
  const int sync_errno = errno;
  ::close(fd);
  if (!synced) throw error(path_, ": cannot fsync (", std::strerror(sync_errno), ")");
  rows_.push_back(row);
}

}  // namespace moe
