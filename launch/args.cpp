#include "launch/args.h"

#include <algorithm>
#include <cstdlib>

#include "framework/error.h"

namespace moe {

Args::Args(int argc, char** argv, const std::vector<std::string>& value_flags,
           const std::vector<std::string>& switches) {
  auto is = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  static const std::string kRepeat = "...";
  std::vector<std::string> value_names;
  for (const std::string& f : value_flags) {
    const bool repeat = f.size() > kRepeat.size() && f.compare(f.size() - kRepeat.size(), kRepeat.size(), kRepeat) == 0;
    value_names.push_back(repeat ? f.substr(0, f.size() - kRepeat.size()) : f);
    if (repeat) repeatable_.push_back(value_names.back());
  }
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
      continue;
    }
    if (a.rfind("--", 0) != 0 || a == "--") {
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    if (is(switches, name)) {
      if (inline_value) throw error("--", name, ": takes no value");
      values_[name] = {"1"};
    } else if (is(value_names, name)) {
      if (!inline_value) {
        if (i + 1 >= argc) throw error("--", name, ": missing value");
        value = argv[++i];
      }
      std::vector<std::string>& seen = values_[name];
      if (!seen.empty() && !is(repeatable_, name))
        throw error("--", name, " given twice ('", seen.back(), "' and '", value, "'); it takes one value");
      seen.push_back(value);
    } else {
      throw error("unknown flag --", name, " (see --help)");
    }
  }
}

bool Args::has(const std::string& flag) const { return values_.count(flag) > 0; }

std::string Args::get(const std::string& flag, const std::string& fallback) const {
  auto it = values_.find(flag);
  return it == values_.end() ? fallback : it->second.back();
}

std::string Args::required(const std::string& flag) const {
  if (!has(flag)) throw error("missing required flag --", flag, " (see --help)");
  return get(flag);
}

std::vector<std::string> Args::all(const std::string& flag) const {
  MOE_CHECK(std::find(repeatable_.begin(), repeatable_.end(), flag) != repeatable_.end(), "--", flag,
            " is not declared repeatable (\"", flag, "...\")");
  auto it = values_.find(flag);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

long long Args::get_int(const std::string& flag, long long fallback) const {
  if (!has(flag)) return fallback;
  std::string v = get(flag);
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end) throw error("--", flag, ": '", v, "' is not an integer");
  return x;
}

double Args::get_double(const std::string& flag, double fallback) const {
  if (!has(flag)) return fallback;
  std::string v = get(flag);
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end) throw error("--", flag, ": '", v, "' is not a number");
  return x;
}

Precision parse_precision_flag(const std::string& value, const std::string& flag) {
  if (value != "fp32" && value != "bf16" && value != "fp8")
    throw error(flag, ": '", value, "' (expected fp32, bf16 or fp8)");
  return parse_precision(value);
}

}  // namespace moe
