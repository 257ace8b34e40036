// What every fuzz target (tests/fuzz, `make fuzz`, docs/testing.md "Fuzzing") shares: the input cut
// into the files a parser reads, a scratch folder to write them to, and the one rule they enforce.
//
// The rule: a parser may refuse its input only with moe::Error, which the CLI prints as
// "error: <file>: <what> (expected ...)" and exits 2. Any other exception (a nlohmann type_error, a
// YAML exception, std::out_of_range, a MOE_CHECK's InternalError) would reach the user as "internal
// error: ..." without naming the file, so it escapes LLVMFuzzerTestOneInput and libFuzzer reports it
// as a crash, like AddressSanitizer's and UBSan's findings. Allocations are capped by libFuzzer's
// -malloc_limit_mb (tests/fuzz/run.sh), so a size read from the input and trusted is a finding too.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "framework/error.h"

namespace moe::fuzz {

// The marker line between the parts of a multi-file input; the seed corpora use it.
inline constexpr std::string_view kPartMarker = "\n----8<----\n";

// `data` cut at each kPartMarker into exactly n parts: the last takes the rest (markers included),
// missing ones are empty.
std::vector<std::string> split_parts(const uint8_t* data, size_t size, size_t n);

// A folder private to this process (on /dev/shm when it exists: the targets write files on every
// run), removed at exit.
const std::string& scratch_dir();

// Replaces `path` with exactly `bytes`.
void write_file(const std::string& path, std::string_view bytes);

// Runs f; a moe::Error is the parser refusing the input as it should, anything else propagates.
template <class F>
bool refused(F&& f) {
  try {
    f();
    return false;
  } catch (const moe::Error&) {
    return true;
  }
}

// Stops the target with a message when a property the parser promises does not hold.
[[noreturn]] void fail(const std::string& what);
inline void expect(bool ok, const char* what) {
  if (!ok) fail(what);
}
inline void expect(bool ok, const std::string& what) {
  if (!ok) fail(what);
}

}  // namespace moe::fuzz
