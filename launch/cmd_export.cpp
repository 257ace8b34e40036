// `moe export --checkpoint X --format safetensors --output DIR [--dtype bf16|f32|int8]`: the model
// of a checkpoint as a Hugging Face folder (checkpoints/hf_export.h does the work).
#include <cstdio>

#include <nlohmann/json.hpp>

#include "checkpoints/checkpoint.h"
#include "checkpoints/hf_export.h"
#include "framework/error.h"
#include "launch/args.h"
#include "launch/commands.h"

namespace moe {

int cmd_export(int argc, char** argv) {
  Args a(argc, argv, {"checkpoint", "format", "output", "dtype"}, {"int8-embeddings"});
  if (a.help()) {
    puts("usage: moe export --checkpoint PATH --format safetensors --output DIR [--dtype bf16|f32|int8]\n"
         "                  [--int8-embeddings]\n"
         "\n"
         "Writes DIR/model.safetensors (every model parameter under its Hugging Face name, no optimizer\n"
         "state) and DIR/config.json (DeepseekV3Config, plus the tokenizer, step and val loss) from a\n"
         "checkpoint (a step-N folder, 'latest' or a checkpoints folder); a tokenizer file is copied in.\n"
         "Weights are rounded to bf16 (nearest even) unless --dtype f32; the routers'\n"
         "e_score_correction_bias stays f32. --dtype int8: every Linear weight as int8 with one f32 scale\n"
         "per output row (<module>.weight I8, <module>.weight_scale F32), lm_head included; the embedding\n"
         "table (unless --int8-embeddings), norms and routers stay f32. moe generate, eval and serve load\n"
         "DIR directly. Prints one JSON line.");
    return 0;
  }
  if (!a.positional().empty()) throw error("moe export: unexpected argument '", a.positional()[0], "' (see --help)");
  std::string format = a.get("format", "safetensors");
  if (format != "safetensors") throw error("--format: '", format, "' (expected safetensors)");
  std::string dtype_flag = a.get("dtype", "bf16");
  if (dtype_flag != "bf16" && dtype_flag != "f32" && dtype_flag != "int8")
    throw error("--dtype: '", dtype_flag, "' (expected bf16, f32 or int8)");
  std::string out = a.required("output");
  const bool int8_embeddings = a.has("int8-embeddings");
  if (int8_embeddings && dtype_flag != "int8") throw error("--int8-embeddings: only with --dtype int8");

  CheckpointReader ckpt(a.required("checkpoint"));
  ckpt.verify();  // never export a corrupt checkpoint
  ExportSummary s = export_hf(ckpt, out, dtype_flag, int8_embeddings);
  nlohmann::ordered_json line = {{"checkpoint", ckpt.dir()}, {"step", ckpt.step()},       {"output", out},
                                 {"dtype", dtype_flag},     {"tensors", s.tensors},       {"parameters", s.parameters},
                                 {"bytes", s.bytes}};
  puts(line.dump().c_str());
  return 0;
}

}  // namespace moe
