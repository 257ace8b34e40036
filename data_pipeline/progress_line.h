// The progress line of long-running data commands, on stderr: rewritten in place ('\r') every
// second on a terminal, a plain line every few seconds otherwise (a log file, a SLURM output).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace moe {

// "1.20 / 10.00 GB (12.0%), 45.6 MB/s, 11.2 M tokens/s, ETA 3m20s": done/total input bytes, the
// rates of this run, and the time left at that rate ("ETA -" before there is a rate).
std::string progress_text(uint64_t done_bytes, uint64_t total_bytes, double bytes_per_s, double tokens_per_s);

class ProgressLine {
 public:
  // `every_seconds` between updates: < 0 picks 1 on a terminal and 5 otherwise, 0 shows none. The
  // first line waits as long as two intervals, so short runs stay quiet.
  ProgressLine(std::string label, uint64_t total_bytes, double every_seconds);
  ~ProgressLine();
  void update(uint64_t done_bytes, int64_t tokens_this_run);
  // Where this run started reading (a resumed run skips what is done), for the rates.
  void set_start(uint64_t start_bytes) { start_ = start_bytes; }
  // A message line, after ending an in-place line.
  void note(const std::string& message);

 private:
  void end_line();
  using Clock = std::chrono::steady_clock;
  std::string label_;
  uint64_t total_, start_;
  bool tty_;
  double every_;
  Clock::time_point t0_ = Clock::now();
  double last_ = 0;
  bool open_line_ = false;
};

}  // namespace moe
