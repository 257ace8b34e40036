// preprocess's progress.json (data_pipeline/preprocess_state.h), which a resumed run trusts for
// where to continue. preprocess treats a file it cannot take as "not ours to resume" (any
// std::exception from the parse); what must never happen is a crash, undefined behaviour, or a
// state accepted with values no run writes: an accepted file writes back (to_json) to the same JSON
// (keys it does not know aside).
#include <nlohmann/json.hpp>

#include "data_pipeline/preprocess_state.h"
#include "framework/json_depth.h"
#include "tests/fuzz/fuzz_common.h"

using namespace moe;

// `given` without the object keys `known` lacks, recursively.
static nlohmann::json known_part(const nlohmann::json& given, const nlohmann::json& known) {
  if (!given.is_object() || !known.is_object()) return given;
  nlohmann::json out = nlohmann::json::object();
  for (auto it = given.begin(); it != given.end(); ++it)
    if (known.contains(it.key())) out[it.key()] = known_part(it.value(), known[it.key()]);
  return out;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // As preprocess.cpp reads it: the depth check, then the parse.
  if (json_depth(std::string_view(reinterpret_cast<const char*>(data), size)) > kMaxJsonDepth) return 0;
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  RunState s;
  try {
    s = RunState::from_json(j);
  } catch (const std::exception&) {
    return 0;
  }
  const nlohmann::json back = s.to_json();
  const nlohmann::json given = known_part(j, back);
  fuzz::expect(back == given, "an accepted progress.json does not write back the same:\n" + given.dump() + "\n" + back.dump());
  return 0;
}
