// `moe inspect PATH [--json]`: verify and summarise a shard folder or a checkpoint. What PATH is
// is decided from what it holds, so one command covers everything `preprocess` and `train` write.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoints/checkpoint.h"
#include "data_pipeline/shards.h"
#include "framework/config.h"
#include "framework/error.h"
#include "launch/args.h"
#include "launch/commands.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

const char* kInspectUsage =
    "usage: moe inspect PATH [--json]\n"
    "       moe inspect CHECKPOINT --compare OTHER [--tolerance X] [--weights-only] [--json]\n"
    "\n"
    "Verifies every checksum and summarises PATH, which is one of:\n"
    "  a preprocessed folder (train/ and val/ with manifests) or one split folder (manifest.json):\n"
    "    checksums, document indexes and token range; documents, tokens, bytes/token per split\n"
    "  a Megatron-LM .bin/.idx pair (its PREFIX, either file, or a folder holding it)\n"
    "  a checkpoint folder (step-N), a 'latest' link, or a checkpoints folder (its newest checkpoint)\n"
    "\n"
    "  --json   print one JSON object instead of text\n"
    "  --compare OTHER  compare every tensor of two checkpoints (e.g. runs on different layouts):\n"
    "                   prints each tensor's largest difference relative to its largest value\n"
    "  --tolerance X    with --compare: exit 1 if any relative difference exceeds X\n"
    "  --weights-only   with --compare: leave out the optimizer's tensors (e.g. against an imported\n"
    "                   checkpoint, which has none)\n"
    "A checksum mismatch is an error (exit 2).\n";

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

bool is_split_folder(const fs::path& p) { return path_exists(p / "manifest.json"); }
bool is_preprocessed_folder(const fs::path& p) {
  return path_exists(p / "train" / "manifest.json") || path_exists(p / "val" / "manifest.json");
}

// A checkpoint, a `latest` link, or a folder of step-N checkpoints (resolve_checkpoint says which
// and reports uncommitted ones); anything else is not ours to guess about.
bool looks_like_checkpoint(const fs::path& p) {
  std::string name = p.filename().string();
  if (name == "latest") return true;  // even dangling: resolve_checkpoint explains
  std::error_code ec;
  if (!fs::is_directory(p, ec)) return false;
  if (name.rfind("step-", 0) == 0 || path_exists(p / "COMMITTED") || path_exists(p / "state.h5")) return true;
  for (const auto& e : fs::directory_iterator(p, ec)) {
    std::string n = e.path().filename().string();
    if (n == "latest" || n.rfind("step-", 0) == 0) return true;
  }
  return false;
}

std::string with_commas(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return n < 0 ? "-" + out : out;
}

std::string human_bytes(int64_t b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  double v = double(b);
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  char buf[32];
  snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

// A bare Megatron-LM pair: PREFIX (or PREFIX.bin / PREFIX.idx) with both files present, or a
// folder holding such pairs and no manifest.
bool is_megatron_pair(const fs::path& p) {
  std::string s = p.string();
  if (s.ends_with(".bin") || s.ends_with(".idx")) s.resize(s.size() - 4);
  if (path_exists(s + ".idx") && path_exists(s + ".bin")) return true;
  std::error_code ec;
  if (!fs::is_directory(p, ec)) return false;
  for (const auto& e : fs::directory_iterator(p, ec)) {
    fs::path idx = e.path();
    if (idx.extension() == ".idx" && path_exists(fs::path(idx).replace_extension(".bin"))) return true;
  }
  return false;
}

std::string bytes_per_token(const nlohmann::json& m, int64_t tokens) {
  if (!m.contains("bytes") || !m["bytes"].is_number() || tokens == 0) return "-";
  char buf[32];
  snprintf(buf, sizeof buf, "%.3f", m["bytes"].get<double>() / double(tokens));
  return buf;
}

// Verifies every file of each split (checksums, indexes, token range) and prints a row per split.
int inspect_shards(const fs::path& p, bool json) {
  std::vector<TokenDataset> splits;
  if (is_split_folder(p)) {
    splits.push_back(TokenDataset::open(p.string()));
  } else if (is_preprocessed_folder(p)) {
    for (const char* split : {"train", "val"}) splits.push_back(TokenDataset::open(p.string(), split));
  } else {
    splits.push_back(TokenDataset::open(p.string(), "train"));  // a bare Megatron pair is one split
  }
  ordered_json out = {{"kind", "shards"}, {"path", p.string()}, {"splits", ordered_json::array()}};
  for (const TokenDataset& d : splits) {
    d.verify();  // throws naming the file whose checksum, index or tokens are wrong
    const nlohmann::json& m = d.manifest();
    ordered_json row = {{"split", m.value("split", fs::path(d.dir()).filename().string())},
                        {"format", m.value("format", "shards")},
                        {"tokens", d.num_tokens()},
                        {"documents", m.value("documents", int64_t(0))},
                        {"shards", m.contains("shards") ? m["shards"].size() : 0},
                        {"vocab_size", d.vocab_size()},
                        {"tokenizer", d.tokenizer_name()}};
    if (m.contains("bytes")) {
      row["bytes"] = m["bytes"];
      if (d.num_tokens() > 0) row["bytes_per_token"] = std::round(m["bytes"].get<double>() / double(d.num_tokens()) * 1000) / 1000;
    }
    row["ok"] = true;
    out["splits"].push_back(row);
  }
  if (json) {
    printf("%s\n", out.dump().c_str());
    return 0;
  }
  printf("shards     %s\n", p.string().c_str());
  printf("%-6s %-8s %15s %12s %7s %15s %11s %8s  %-12s %s\n", "split", "format", "tokens", "documents", "shards",
         "bytes", "bytes/token", "vocab", "tokenizer", "checks");
  for (size_t i = 0; i < out["splits"].size(); ++i) {
    const auto& s = out["splits"][i];
    std::string bytes = s.contains("bytes") ? with_commas(s["bytes"].get<int64_t>()) : "-";
    std::string tok = s["tokenizer"].get<std::string>();
    printf("%-6s %-8s %15s %12s %7s %15s %11s %8s  %-12s ok\n", s["split"].get<std::string>().c_str(),
           s["format"].get<std::string>().c_str(), with_commas(s["tokens"].get<int64_t>()).c_str(),
           with_commas(s["documents"].get<int64_t>()).c_str(), with_commas(s["shards"].get<int64_t>()).c_str(),
           bytes.c_str(), bytes_per_token(splits[i].manifest(), s["tokens"].get<int64_t>()).c_str(),
           with_commas(s["vocab_size"].get<int64_t>()).c_str(), tok.empty() ? "-" : tok.c_str());
  }
  return 0;
}

int inspect_checkpoint(const std::string& path, bool json) {
  CheckpointReader r(path);
  r.verify();
  int64_t tensors = 0, params = 0, optimizer = 0;
  for (const std::string& name : r.names()) {
    if (name.rfind("optimizer.", 0) == 0) {
      ++optimizer;
    } else {
      ++tensors;
      params += shape_numel(r.shape(name));
    }
  }
  int64_t bytes = int64_t(fs::file_size(r.dir() + "/state.h5"));
  Config c = parse_config(r.config_yaml(), r.dir() + "/config.yaml");
  const ModelConfig& m = c.model;
  ordered_json model = {{"vocab_size", m.vocab_size},         {"hidden", m.hidden},
                        {"layers", m.layers},                 {"dense_layers", m.dense_layers},
                        {"heads", m.heads},                   {"routed_experts", m.routed_experts},
                        {"experts_per_token", m.experts_per_token}, {"shared_experts", m.shared_experts},
                        {"mtp_depth", m.mtp_depth}};
  if (json) {
    ordered_json out = {{"kind", "checkpoint"}, {"path", r.dir()},         {"step", r.step()},
                        {"tensors", tensors},   {"parameters", params},    {"optimizer_tensors", optimizer},
                        {"state_bytes", bytes}, {"run", c.run.name},       {"model", model},
                        {"meta", r.meta()},     {"ok", true}};
    printf("%s\n", out.dump().c_str());
    return 0;
  }
  printf("checkpoint  %s\n", r.dir().c_str());
  printf("step        %s\n", with_commas(r.step()).c_str());
  printf("tensors     %s (%s parameters), %s optimizer\n", with_commas(tensors).c_str(), with_commas(params).c_str(),
         with_commas(optimizer).c_str());
  printf("state.h5    %s\n", human_bytes(bytes).c_str());
  printf("run         %s (seed %llu)\n", c.run.name.c_str(), (unsigned long long)c.run.seed);
  printf("model       %d layers (%d dense), hidden %d, %d heads, %d routed experts (top %d) + %d shared, vocab %d\n",
         m.layers, m.dense_layers, m.hidden, m.heads, m.routed_experts, m.experts_per_token, m.shared_experts,
         m.vocab_size);
  printf("meta        %s\n", r.meta().dump().c_str());
  printf("checksums   ok\n");
  return 0;
}

// Largest |a - b| over a tensor, relative to its largest |a| (so a tensor of zeros compares by
// absolute difference). Names and shapes must agree: a mismatch is an error, not a difference.
// weights_only: the optimizer's tensors are left out (an imported checkpoint has none).
int compare_checkpoints(const std::string& path, const std::string& other, double tolerance, bool json,
                        bool weights_only) {
  auto skipped = [&](const std::string& name) { return weights_only && name.rfind("optimizer.", 0) == 0; };
  CheckpointReader a(path), b(other);
  a.verify();
  b.verify();
  ordered_json rows = ordered_json::array();
  double worst = 0;
  std::string worst_name;
  for (const std::string& name : a.names()) {
    if (skipped(name)) continue;
    if (!b.has(name)) throw error(b.dir(), ": has no tensor ", name, " (present in ", a.dir(), ")");
    if (a.shape(name) != b.shape(name)) throw error(name, ": shapes differ between ", a.dir(), " and ", b.dir());
    Tensor x = a.read(name), y = b.read(name);
    if (x.dtype() != DType::F32 || y.dtype() != DType::F32) continue;
    double diff = 0, scale = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float a_i = x.f32()[i], b_i = y.f32()[i];
      // A NaN on one side only is a difference (std::max would drop it); NaN on both is not.
      if (std::isnan(a_i) != std::isnan(b_i)) diff = INFINITY;
      if (std::isnan(a_i) || std::isnan(b_i)) continue;
      diff = std::max(diff, double(std::fabs(a_i - b_i)));
      scale = std::max(scale, double(std::fabs(x.f32()[i])));
    }
    double rel = scale > 0 ? diff / scale : diff;
    rows.push_back({{"name", name}, {"max_abs_diff", diff}, {"max_rel_diff", rel}});
    if (rel >= worst) worst = rel, worst_name = name;
  }
  for (const std::string& name : b.names())
    if (!skipped(name) && !a.has(name)) throw error(a.dir(), ": has no tensor ", name, " (present in ", b.dir(), ")");
  bool ok = tolerance < 0 || worst <= tolerance;
  if (json) {
    printf("%s\n", ordered_json({{"kind", "comparison"}, {"a", a.dir()}, {"b", b.dir()}, {"tensors", rows},
                                  {"max_rel_diff", worst}, {"worst", worst_name}, {"ok", ok}})
                       .dump()
                       .c_str());
  } else {
    for (const auto& r : rows)
      printf("%-60s max |a-b| %.3e  relative %.3e\n", r["name"].get<std::string>().c_str(),
             r["max_abs_diff"].get<double>(), r["max_rel_diff"].get<double>());
    printf("%zu tensors compared; largest relative difference %.3e (%s)%s\n", rows.size(), worst, worst_name.c_str(),
           tolerance < 0 ? "" : ok ? ", within tolerance" : ", ABOVE tolerance");
  }
  return ok ? 0 : 1;
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  Args a(argc, argv, {"compare", "tolerance"}, {"json", "weights-only"});
  if (a.help()) {
    fputs(kInspectUsage, stdout);
    return 0;
  }
  if (a.positional().size() != 1) throw error("inspect: expected one PATH, got ", a.positional().size(), " (see --help)");
  std::string path = a.positional()[0];
  bool json = a.has("json");
  if (a.has("compare")) return compare_checkpoints(path, a.get("compare"), a.get_double("tolerance", -1), json,
                                                     a.has("weights-only"));
  if (a.has("weights-only")) throw error("inspect: --weights-only needs --compare OTHER (see --help)");
  if (a.has("tolerance")) throw error("inspect: --tolerance needs --compare OTHER (see --help)");
  fs::path p(path);
  std::error_code ec;
  if (!path_exists(p) && !is_megatron_pair(p) && !fs::is_symlink(fs::symlink_status(p, ec)))
    throw error(path, ": no such file or folder (expected a shard folder or a checkpoint)");
  if (is_split_folder(p) || is_preprocessed_folder(p) || is_megatron_pair(p)) return inspect_shards(p, json);
  if (looks_like_checkpoint(p)) return inspect_checkpoint(path, json);
  throw error(path, ": neither a shard folder (manifest.json, or train/ and val/ with manifests) nor a checkpoint "
                    "(a step-N folder, a 'latest' link or a checkpoints folder)");
}

}  // namespace moe
