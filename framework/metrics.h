// Training metrics: a human line on stdout every log_every steps and one JSON object per line in
// <out_dir>/metrics.jsonl (appended across resumes, flushed each line so a kill loses nothing).
#pragma once
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace moe {

class MetricsLog {
 public:
  MetricsLog() = default;
  explicit MetricsLog(const std::string& path);  // throws moe::Error if it cannot be opened
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const nlohmann::json& row);  // a failed write is a warning on stderr, once per streak

 private:
  std::string path_;
  FILE* f_ = nullptr;
  bool failing_ = false;
};

// Peak resident memory of this process in MiB (from getrusage).
double peak_rss_mib();

}  // namespace moe
