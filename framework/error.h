// Errors. Two kinds, both exceptions so library code never calls exit():
//  - moe::Error: the user's input was wrong (config, data, checkpoint path). The message is one line in
//    the form "<file>:<line>: <what> (expected <what>)"; the CLI prints "error: <message>" and exits 2.
//  - moe::InternalError: an invariant of ours broke (MOE_CHECK). Carries file:line of the check; exit 3.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace moe {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct InternalError : std::logic_error {
  using std::logic_error::logic_error;
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Builds a user-facing error from pieces: throw error(path, ":", line, ": bad value");
template <class... Args>
Error error(const Args&... args) {
  return Error(detail::concat(args...));
}

}  // namespace moe

#define MOE_CHECK(cond, ...)                                                                   \
  do {                                                                                         \
    if (!(cond))                                                                               \
      throw ::moe::InternalError(::moe::detail::concat(__FILE__, ":", __LINE__, ": check `",  \
                                                       #cond, "` failed. " __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)
