// A Hugging Face config.json (DeepseekV3Config) as `moe import` and `moe generate --model <export>`
// read it (checkpoints/hf_import.h). Property: an accepted config is a valid Config (it passes
// validation again as YAML: config_to_yaml, parse_config).
#include <nlohmann/json.hpp>

#include "checkpoints/hf_import.h"
#include "framework/json_depth.h"
#include "tests/fuzz/fuzz_common.h"

using namespace moe;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // As model_source.cpp and cmd_import.cpp read config.json: the depth check, then the parse.
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (fuzz::refused([&] { check_json_depth(text, "config.json", "a DeepseekV3 config.json"); })) return 0;
  const nlohmann::json hf = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (hf.is_discarded()) return 0;
  Config c;
  if (fuzz::refused([&] { c = config_from_hf(hf, "config.json"); })) return 0;
  if (fuzz::refused([&] { (void)parse_config(config_to_yaml(c), "config.json"); }))
    fuzz::fail("config_from_hf accepted a config that validation refuses as YAML:\n" + config_to_yaml(c));
  return 0;
}
