// The YAML config, its `--set key=value` overrides and validation (framework/config.h).
// Input: the YAML text, a part marker, then one override per line.
// Property: an accepted config writes back (config_to_yaml) to YAML that parses to the same config.
#include <sstream>

#include "framework/config.h"
#include "tests/fuzz/fuzz_common.h"

using namespace moe;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string> parts = fuzz::split_parts(data, size, 2);
  std::vector<std::string> overrides;
  std::istringstream lines(parts[1]);
  for (std::string line; std::getline(lines, line);) overrides.push_back(line);
  Config c;
  if (fuzz::refused([&] { c = parse_config(parts[0], "fuzz.yaml", overrides); })) return 0;
  Config again;
  if (fuzz::refused([&] { again = parse_config(config_to_yaml(c), "fuzz.yaml"); }))
    fuzz::fail("an accepted config's config_to_yaml is refused:\n" + config_to_yaml(c));
  fuzz::expect(again == c, "config_to_yaml does not round-trip");
  return 0;
}
