#include "framework/metrics.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

#include "framework/error.h"

namespace moe {

MetricsLog::MetricsLog(const std::string& path) : path_(path) {
  f_ = fopen(path.c_str(), "a");
  if (!f_) throw error(path, ": cannot open for appending (", strerror(errno), ")");
}

MetricsLog::~MetricsLog() {
  if (f_) fclose(f_);
}

void MetricsLog::write(const nlohmann::json& row) {
  if (!f_) return;
  // Invalid UTF-8 (text sampled from a byte-level model) becomes U+FFFD instead of an exception.
  std::string line = row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  // A row that cannot be written (disk full, quota) is reported, not fatal: the run and its
  // checkpoints matter more than a log row (a checkpoint that cannot be written does stop the run).
  // One warning per streak of failures; a torn row is dropped when a resumed run rereads the file.
  const bool ok = fwrite(line.data(), 1, line.size(), f_) == line.size() && fflush(f_) == 0;
  if (!ok && !failing_)
    fprintf(stderr, "warning: %s: cannot append a row (%s); rows are lost until it can\n", path_.c_str(),
            strerror(errno));
  if (ok && failing_) fprintf(stderr, "note: %s: rows are written again\n", path_.c_str());
  failing_ = !ok;
  if (!ok) clearerr(f_);
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

}  // namespace moe
