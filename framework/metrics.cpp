#include "framework/metrics.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

#include "framework/error.h"

namespace moe {

MetricsLog::MetricsLog(const std::string& path) {
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
  fwrite(line.data(), 1, line.size(), f_);
  fflush(f_);
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

}  // namespace moe
