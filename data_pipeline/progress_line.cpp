#include "data_pipeline/progress_line.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace moe {
namespace {

std::string duration(double s) {
  char buf[32];
  long t = long(std::lround(s));
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, t % 3600 / 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

}  // namespace

std::string progress_text(uint64_t done, uint64_t total, double bytes_per_s, double tokens_per_s) {
  const double unit = total >= 1e9 ? 1e9 : 1e6;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%.2f / %.2f %s (%.1f%%), %.1f MB/s, %.1f M tokens/s, ETA %s", double(done) / unit,
                double(total) / unit, unit == 1e9 ? "GB" : "MB", total ? 100.0 * double(done) / double(total) : 100.0,
                bytes_per_s / 1e6, tokens_per_s / 1e6,
                bytes_per_s > 0 ? duration(double(total > done ? total - done : 0) / bytes_per_s).c_str() : "-");
  return buf;
}

ProgressLine::ProgressLine(std::string label, uint64_t total_bytes, double every_seconds)
    : label_(std::move(label)), total_(total_bytes), start_(0), tty_(isatty(fileno(stderr))),
      every_(every_seconds < 0 ? (tty_ ? 1.0 : 5.0) : every_seconds) {
  last_ = every_;  // the first line after two intervals
}

ProgressLine::~ProgressLine() { end_line(); }

void ProgressLine::update(uint64_t done_bytes, int64_t tokens_this_run) {
  if (every_ <= 0) return;
  const double t = std::chrono::duration<double>(Clock::now() - t0_).count();
  if (t - last_ < every_) return;
  last_ = t;
  const double rate = double(done_bytes > start_ ? done_bytes - start_ : 0) / t;
  std::string text = label_ + ": " + progress_text(done_bytes, total_, rate, double(tokens_this_run) / t);
  if (tty_) {
    std::fprintf(stderr, "\r%s\033[K", text.c_str());  // \033[K clears what a longer line left
    open_line_ = true;
  } else {
    std::fprintf(stderr, "%s\n", text.c_str());
  }
  std::fflush(stderr);
}

void ProgressLine::end_line() {
  if (open_line_) std::fputc('\n', stderr);
  open_line_ = false;
}

void ProgressLine::note(const std::string& message) {
  end_line();
  std::fprintf(stderr, "%s: %s\n", label_.c_str(), message.c_str());
}

}  // namespace moe
