// Command-line flags for the subcommands: `--name value`, `--name=value`, repeatable flags,
// boolean switches and positionals. Unknown flags, missing values and a value flag given twice
// that is not declared repeatable are moe::Error with the flag named, so every subcommand reports
// bad usage the same way and a second value never silently replaces the first.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "framework/precision.h"

namespace moe {

class Args {
 public:
  // `value_flags` take a value, `switches` do not; both without the leading "--". A value flag
  // that may be given several times is declared with a trailing "..." ("set..."), as usage
  // texts write it; all() returns its values in order. A repeated switch is the same as one.
  Args(int argc, char** argv, const std::vector<std::string>& value_flags,
       const std::vector<std::string>& switches);

  bool has(const std::string& flag) const;
  std::string get(const std::string& flag, const std::string& fallback = "") const;
  std::string required(const std::string& flag) const;
  std::vector<std::string> all(const std::string& flag) const;  // a repeatable flag's values, in order
  long long get_int(const std::string& flag, long long fallback) const;
  double get_double(const std::string& flag, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }
  bool help() const { return help_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> repeatable_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

// The value of a --precision style flag: fp32 | bf16 | fp8, else moe::Error naming the flag.
Precision parse_precision_flag(const std::string& value, const std::string& flag);

}  // namespace moe
