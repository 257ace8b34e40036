// YAML config → validated Config. The pipeline is
//   text → YAML tree → flat map {dotted key → (value node, where it came from)} → `--set` overrides
//   replace entries → typed fields → validation rules.
// Keeping the origin of every key ("file:line" or "--set a.b") until validation lets every error,
// including one about a combination of keys, point at the line the user has to change.
#include "framework/config.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <variant>

#include "framework/error.h"

namespace moe {
namespace {

using Slot = std::variant<int*, int64_t*, uint64_t*, double*, bool*, std::string*, std::vector<DataSource>*>;

struct Field {
  const char* key;  // dotted path; its prefixes are the sections
  Slot slot;
};

// The schema: every accepted key, in the order config_to_yaml writes them.
std::vector<Field> schema(Config& c) {
  RunConfig& u = c.run;
  ModelConfig& m = c.model;
  RouterConfig& r = c.model.router;
  TrainConfig& t = c.train;
  return {
      {"run.name", &u.name}, {"run.out_dir", &u.out_dir}, {"run.seed", &u.seed},
      {"run.rank_logs", &u.rank_logs},
      {"model.vocab_size", &m.vocab_size}, {"model.hidden", &m.hidden}, {"model.layers", &m.layers},
      {"model.dense_layers", &m.dense_layers}, {"model.dense_inter", &m.dense_inter},
      {"model.heads", &m.heads}, {"model.q_lora_rank", &m.q_lora_rank},
      {"model.kv_lora_rank", &m.kv_lora_rank}, {"model.qk_nope_dim", &m.qk_nope_dim},
      {"model.qk_rope_dim", &m.qk_rope_dim}, {"model.v_head_dim", &m.v_head_dim},
      {"model.shared_experts", &m.shared_experts}, {"model.routed_experts", &m.routed_experts},
      {"model.experts_per_token", &m.experts_per_token}, {"model.expert_inter", &m.expert_inter},
      {"model.router.score", &r.score}, {"model.router.bias_update_rate", &r.bias_update_rate},
      {"model.router.aux_loss_coef", &r.aux_loss_coef}, {"model.router.z_loss_coef", &r.z_loss_coef},
      {"model.router.routed_scaling", &r.routed_scaling}, {"model.router.groups", &r.groups},
      {"model.router.groups_per_token", &r.groups_per_token},
      {"model.rope_theta", &m.rope_theta}, {"model.rms_norm_eps", &m.rms_norm_eps},
      {"model.init_std", &m.init_std}, {"model.mtp_depth", &m.mtp_depth},
      {"model.mtp_loss_weight", &m.mtp_loss_weight}, {"model.mtp_loss_weight_step", &m.mtp_loss_weight_step},
      {"model.mtp_loss_weight_final", &m.mtp_loss_weight_final},
      {"model.tie_embeddings", &m.tie_embeddings},
      {"data.path", &c.data.path}, {"data.mix", &c.data.mix}, {"data.seq_len", &c.data.seq_len},
      {"data.document_mask", &c.data.document_mask},
      {"train.micro_batch", &t.micro_batch}, {"train.grad_accum", &t.grad_accum},
      {"train.steps", &t.steps}, {"train.lr", &t.lr}, {"train.min_lr", &t.min_lr},
      {"train.warmup", &t.warmup}, {"train.schedule", &t.schedule},
      {"train.decay_steps", &t.decay_steps}, {"train.decay_shape", &t.decay_shape},
      {"train.weight_decay", &t.weight_decay}, {"train.beta1", &t.beta1}, {"train.beta2", &t.beta2},
      {"train.eps", &t.eps}, {"train.grad_clip", &t.grad_clip}, {"train.precision", &t.precision},
      {"train.recompute", &t.recompute}, {"train.eval_every", &t.eval_every},
      {"train.eval_batches", &t.eval_batches}, {"train.log_every", &t.log_every},
      {"train.expert_report_every", &t.expert_report_every}, {"train.sample_every", &t.sample_every},
      {"train.sample_prompt", &t.sample_prompt}, {"train.sample_tokens", &t.sample_tokens},
      {"train.sample_temperature", &t.sample_temperature}, {"train.stop_after", &t.stop_after},
      {"train.time_limit", &t.time_limit}, {"train.threads", &t.threads},
      {"train.max_bad_steps", &t.max_bad_steps}, {"train.max_rollbacks", &t.max_rollbacks},
      {"train.spike_window", &t.spike_window}, {"train.spike_zscore", &t.spike_zscore},
      {"parallel.ep", &c.parallel.ep}, {"parallel.fp8_dispatch", &c.parallel.fp8_dispatch},
      {"parallel.dp_replicate", &c.parallel.dp_replicate},
      {"checkpoint.every", &c.checkpoint.every}, {"checkpoint.keep_last", &c.checkpoint.keep_last},
      {"checkpoint.keep_every", &c.checkpoint.keep_every}, {"checkpoint.resume", &c.checkpoint.resume},
      {"checkpoint.init_from", &c.checkpoint.init_from}, {"checkpoint.write_timeout_s", &c.checkpoint.write_timeout_s},
      {"device", &c.device},
  };
}

std::vector<std::string> schema_keys() {
  Config c;
  std::vector<std::string> keys;
  for (const Field& f : schema(c)) keys.push_back(f.key);
  return keys;
}

const std::vector<std::string>& all_keys() {
  static const std::vector<std::string> keys = schema_keys();
  return keys;
}

bool is_leaf(const std::string& path) {
  const auto& k = all_keys();
  return std::find(k.begin(), k.end(), path) != k.end();
}

bool is_section(const std::string& path) {
  if (path.empty()) return true;
  for (const std::string& k : all_keys())
    if (k.size() > path.size() && k.compare(0, path.size(), path) == 0 && k[path.size()] == '.')
      return true;
  return false;
}

// The names directly inside a section ("" = top level), in schema order: "hidden, layers, ...".
std::vector<std::string> children(const std::string& section) {
  std::string prefix = section.empty() ? "" : section + ".";
  std::vector<std::string> out;
  for (const std::string& k : all_keys()) {
    if (k.compare(0, prefix.size(), prefix) != 0) continue;
    std::string name = k.substr(prefix.size(), k.find('.', prefix.size()) - prefix.size());
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  }
  return out;
}

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

// "unknown key 'model.hiden', did you mean 'hidden'? (expected one of: vocab_size, hidden, ...)"
Error unknown_key(const std::string& where, const std::string& section, const std::string& path) {
  std::vector<std::string> names = children(section);
  std::string name = path.substr(section.empty() ? 0 : section.size() + 1);
  std::string hint;
  size_t best = 3;  // suggest only close misspellings
  for (const std::string& n : names)
    if (size_t d = edit_distance(name, n); d < best) best = d, hint = ", did you mean '" + n + "'?";
  return error(where, ": unknown key '", path, "'", hint, " (expected one of: ", join(names), ")");
}

// Where a value came from. `order` ranks origins so that a rule about several keys blames the one
// given last; overrides come after every line of the file, in command-line order.
struct Origin {
  std::string where;  // "file:line" or "--set a.b"
  int64_t order;
};

struct Entry {
  YAML::Node value;
  Origin origin;
};

using Entries = std::map<std::string, Entry>;

const char* kind(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence: return "a sequence";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: return "a value";
    default: return "empty";
  }
}

std::string expected_top() {
  return "a mapping with sections " + join(children(""));
}

// Walks one YAML mapping, recording each leaf key with its line; rejects unknown and repeated keys.
void flatten(const YAML::Node& map, const std::string& section, const std::string& source,
             Entries& out, std::map<std::string, int>& section_lines) {
  for (const auto& kv : map) {
    const YAML::Mark mark = kv.first.Mark();
    const int line = mark.line + 1;
    const std::string where = source + ":" + std::to_string(line);
    if (!kv.first.IsScalar())
      throw error(where, ": a key is ", kind(kv.first), " (expected one of: ", join(children(section)), ")");
    const std::string path = section.empty() ? kv.first.Scalar() : section + "." + kv.first.Scalar();
    if (kv.first.Scalar().empty()) throw unknown_key(where, section, path);
    if (is_section(path)) {
      if (auto [it, fresh] = section_lines.emplace(path, line); !fresh)
        throw error(where, ": duplicate section '", path, "' (expected it once; first at line ", it->second, ")");
      if (kv.second.IsNull()) continue;  // `router:` with nothing under it keeps the defaults
      if (!kv.second.IsMap())
        throw error(where, ": section '", path, "' is ", kind(kv.second),
                    " (expected a mapping with keys ", join(children(path)), ")");
      flatten(kv.second, path, source, out, section_lines);
    } else if (is_leaf(path)) {
      if (auto it = out.find(path); it != out.end())
        throw error(where, ": duplicate key '", path, "' (expected it once; first at ", it->second.origin.where, ")");
      out[path] = Entry{kv.second, Origin{where, int64_t(mark.line) * 100000 + mark.column}};
    } else {
      throw unknown_key(where, section, path);
    }
  }
}

// Applies one "a.b=v"; v is parsed as YAML so that it is typed exactly as it would be in the file.
void apply_override(const std::string& text, int64_t index, Entries& out) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos)
    throw error("--set ", text, ": malformed override (expected key=value, e.g. --set train.lr=1e-3)");
  std::string key = text.substr(0, eq);
  key.erase(0, key.find_first_not_of(" \t"));
  key.erase(key.find_last_not_of(" \t") + 1);
  const std::string value = text.substr(eq + 1);
  const std::string where = "--set " + key;
  if (key.empty())
    throw error("--set ", text, ": override without a key (expected key=value, e.g. --set train.lr=1e-3)");
  if (!is_leaf(key)) {
    if (is_section(key))
      throw error(where, ": '", key, "' is a section (expected one of its keys: ", join(children(key)), ")");
    std::string section = key;  // the deepest existing section names the choices
    do {
      const size_t dot = section.rfind('.');
      section = dot == std::string::npos ? "" : section.substr(0, dot);
    } while (!is_section(section));
    throw unknown_key(where, section, key);
  }
  YAML::Node node;
  try {
    node = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw error(where, ": malformed value '", value, "': ", e.msg, " (expected a YAML scalar)");
  }
  out[key] = Entry{node, Origin{where, int64_t(1) << 40 | index}};
}

template <class T>
bool parse_integer(const std::string& s, T& v, bool& overflow) {
  const char* b = s.data();
  const char* e = b + s.size();
  if (b != e && *b == '+') ++b;
  auto [p, ec] = std::from_chars(b, e, v);
  overflow = ec == std::errc::result_out_of_range;
  return b != e && p == e && ec == std::errc();
}

// data.mix: a sequence of {path: DIR, weight: W} mappings (weights checked by validate()).
std::vector<DataSource> data_sources(const std::string& key, const Entry& e) {
  const char* expected = "a list of {path: DIR, weight: W}";
  if (e.value.IsNull()) return {};
  if (!e.value.IsSequence()) throw error(e.origin.where, ": ", key, " is ", kind(e.value), " (expected ", expected, ")");
  std::vector<DataSource> out;
  for (size_t i = 0; i < e.value.size(); ++i) {
    const YAML::Node& item = e.value[i];
    const std::string at = key + "[" + std::to_string(i) + "]";
    if (!item.IsMap()) throw error(e.origin.where, ": ", at, " is ", kind(item), " (expected {path: DIR, weight: W})");
    DataSource src;
    bool has_path = false;
    for (const auto& kv : item) {
      const std::string name = kv.first.IsScalar() ? kv.first.Scalar() : "";
      if (name == "path" && kv.second.IsScalar() && !kv.second.Scalar().empty()) {
        src.path = kv.second.Scalar();
        has_path = true;
      } else if (name == "weight") {
        const std::string w = kv.second.IsScalar() ? kv.second.Scalar() : "";
        auto [p, ec] = std::from_chars(w.data() + (!w.empty() && w[0] == '+'), w.data() + w.size(), src.weight);
        if (w.empty() || ec != std::errc() || p != w.data() + w.size() || !std::isfinite(src.weight))
          throw error(e.origin.where, ": ", at, ".weight is '", w, "' (expected a finite number)");
      } else if (name != "path") {
        throw error(e.origin.where, ": ", at, " has unknown key '", name, "' (expected path and weight)");
      }
    }
    if (!has_path) throw error(e.origin.where, ": ", at, ".path is missing or empty (expected a preprocessed folder)");
    out.push_back(src);
  }
  return out;
}

// Converts one entry into its typed field; the message quotes the value as written.
void assign(const std::string& key, const Entry& e, const Slot& slot) {
  const YAML::Node& n = e.value;
  auto fail = [&](const std::string& expected) -> Error {
    if (n.IsScalar()) return error(e.origin.where, ": ", key, " is '", n.Scalar(), "' (expected ", expected, ")");
    return error(e.origin.where, ": ", key, " is ", kind(n), " (expected ", expected, ")");
  };
  auto integer = [&](auto* dst, const char* expected, const char* range) {
    bool overflow = false;
    if (!n.IsScalar() || !parse_integer(n.Scalar(), *dst, overflow)) throw fail(overflow ? range : expected);
  };
  std::visit(
      [&](auto* dst) {
        using T = std::remove_pointer_t<decltype(dst)>;
        if constexpr (std::is_same_v<T, int>) {
          integer(dst, "an integer", "an integer within +-2147483647");
        } else if constexpr (std::is_same_v<T, int64_t>) {
          integer(dst, "an integer", "a 64-bit integer");
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          integer(dst, "a non-negative integer", "a 64-bit non-negative integer");
        } else if constexpr (std::is_same_v<T, double>) {
          const std::string s = n.IsScalar() ? n.Scalar() : "";
          const char* b = s.data() + (!s.empty() && s[0] == '+');
          auto [p, ec] = std::from_chars(b, s.data() + s.size(), *dst);
          if (!n.IsScalar() || s.empty() || ec != std::errc() || p != s.data() + s.size() || !std::isfinite(*dst))
            throw fail("a finite number");
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!n.IsScalar() || !YAML::convert<bool>::decode(n, *dst)) throw fail("true or false");
        } else if constexpr (std::is_same_v<T, std::vector<DataSource>>) {
          *dst = data_sources(key, e);
        } else {
          if (!n.IsScalar()) throw fail("a string");
          *dst = n.Scalar();
        }
      },
      slot);
}

template <class T>
std::string show(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// The validation rules. Each `need` names the keys it reads; a failure blames whichever of them
// was given last (the file line or the override), or the file itself when all are defaults.
class Rules {
 public:
  Rules(const Entries& given, const std::string& source) : given_(given), source_(source) {}

  void need(bool ok, std::initializer_list<const char*> keys, const std::string& what,
            const std::string& expected) const {
    if (ok) return;
    const Origin* blame = nullptr;
    for (const char* k : keys)
      if (auto it = given_.find(k); it != given_.end() && (!blame || it->second.origin.order > blame->order))
        blame = &it->second.origin;
    throw error(blame ? blame->where : source_, ": ", what, " (expected ", expected, ")");
  }

  // One key against a bound: "model.hidden is 0 (expected > 0)".
  template <class T>
  void at_least(const char* key, T v, T lo) const {
    need(v >= lo, {key}, std::string(key) + " is " + show(v), ">= " + show(lo));
  }
  template <class T>
  void positive(const char* key, T v) const {
    need(v > 0, {key}, std::string(key) + " is " + show(v), "> 0");
  }
  void one_of(const char* key, const std::string& v, std::initializer_list<const char*> choices) const {
    bool ok = false;
    std::string list;
    for (const char* c : choices) ok |= v == c, list += (list.empty() ? "" : " | ") + std::string(c);
    need(ok, {key}, std::string(key) + " is '" + v + "'", list);
  }

 private:
  const Entries& given_;
  const std::string& source_;
};

void validate(const Config& c, const Rules& r) {
  const ModelConfig& m = c.model;
  const RouterConfig& g = m.router;
  const TrainConfig& t = c.train;
  // Single keys first, so that the combination rules below never divide by zero.
  r.need(!c.run.name.empty(), {"run.name"}, "run.name is empty", "a name");
  r.need(!c.run.out_dir.empty(), {"run.out_dir"}, "run.out_dir is empty", "a folder");
  r.positive("model.vocab_size", m.vocab_size);
  r.positive("model.hidden", m.hidden);
  r.positive("model.layers", m.layers);
  r.at_least("model.dense_layers", m.dense_layers, 0);
  r.positive("model.dense_inter", m.dense_inter);
  r.positive("model.heads", m.heads);
  r.at_least("model.q_lora_rank", m.q_lora_rank, 0);
  r.positive("model.kv_lora_rank", m.kv_lora_rank);
  r.positive("model.qk_nope_dim", m.qk_nope_dim);
  r.positive("model.qk_rope_dim", m.qk_rope_dim);
  r.need(m.qk_rope_dim % 2 == 0, {"model.qk_rope_dim"}, "model.qk_rope_dim is " + show(m.qk_rope_dim),
         "an even number: RoPE rotates pairs of dimensions");
  r.positive("model.v_head_dim", m.v_head_dim);
  r.at_least("model.shared_experts", m.shared_experts, 0);
  r.at_least("model.routed_experts", m.routed_experts, 0);
  r.positive("model.experts_per_token", m.experts_per_token);
  r.positive("model.expert_inter", m.expert_inter);
  r.one_of("model.router.score", g.score, {"sigmoid", "softmax"});
  r.at_least("model.router.bias_update_rate", g.bias_update_rate, 0.0);
  r.at_least("model.router.aux_loss_coef", g.aux_loss_coef, 0.0);
  r.at_least("model.router.z_loss_coef", g.z_loss_coef, 0.0);
  r.positive("model.router.routed_scaling", g.routed_scaling);
  r.positive("model.router.groups", g.groups);
  r.positive("model.router.groups_per_token", g.groups_per_token);
  r.positive("model.rope_theta", m.rope_theta);
  r.positive("model.rms_norm_eps", m.rms_norm_eps);
  r.positive("model.init_std", m.init_std);
  r.at_least("model.mtp_depth", m.mtp_depth, 0);
  r.at_least("model.mtp_loss_weight", m.mtp_loss_weight, 0.0);
  r.at_least("model.mtp_loss_weight_step", m.mtp_loss_weight_step, int64_t(0));
  r.at_least("model.mtp_loss_weight_final", m.mtp_loss_weight_final, 0.0);
  r.positive("data.seq_len", c.data.seq_len);
  double weights = 0;
  for (size_t i = 0; i < c.data.mix.size(); ++i) {
    const double w = c.data.mix[i].weight;
    r.need(w > 0, {"data.mix"}, "data.mix[" + show(i) + "].weight is " + show(w) + " for " + c.data.mix[i].path,
           "a weight > 0");
    weights += w;
  }
  r.need(c.data.mix.empty() || (weights > 0 && std::isfinite(weights)), {"data.mix"},
         "data.mix weights sum to " + show(weights), "a positive finite sum");
  r.need(c.data.mix.size() <= kMaxMixSources, {"data.mix"}, "data.mix has " + show(c.data.mix.size()) + " sources",
         "at most " + show(kMaxMixSources));
  r.need(c.data.mix.empty() || c.data.path.empty(), {"data.path", "data.mix"},
         "data.path and data.mix are both set", "one of them: a folder, or a list of folders with weights; --set data.path=\"\" clears it");
  r.positive("train.micro_batch", t.micro_batch);
  r.positive("train.grad_accum", t.grad_accum);
  r.at_least("train.steps", t.steps, int64_t(0));
  r.at_least("train.lr", t.lr, 0.0);
  r.at_least("train.min_lr", t.min_lr, 0.0);
  r.at_least("train.warmup", t.warmup, int64_t(0));
  r.one_of("train.schedule", t.schedule, {"cosine", "constant", "linear", "wsd"});
  r.at_least("train.decay_steps", t.decay_steps, int64_t(0));
  r.one_of("train.decay_shape", t.decay_shape, {"linear", "cosine", "sqrt"});
  r.at_least("train.weight_decay", t.weight_decay, 0.0);
  r.need(t.beta1 >= 0 && t.beta1 < 1, {"train.beta1"}, "train.beta1 is " + show(t.beta1), "0 <= beta1 < 1");
  r.need(t.beta2 >= 0 && t.beta2 < 1, {"train.beta2"}, "train.beta2 is " + show(t.beta2), "0 <= beta2 < 1");
  r.positive("train.eps", t.eps);
  r.at_least("train.grad_clip", t.grad_clip, 0.0);
  r.one_of("train.precision", t.precision, {"fp32", "bf16", "fp8"});
  r.at_least("train.eval_every", t.eval_every, int64_t(0));
  r.positive("train.eval_batches", t.eval_batches);
  r.positive("train.log_every", t.log_every);
  r.at_least("train.expert_report_every", t.expert_report_every, int64_t(0));
  r.at_least("train.sample_every", t.sample_every, int64_t(0));
  r.positive("train.sample_tokens", t.sample_tokens);
  r.at_least("train.sample_temperature", t.sample_temperature, 0.0);
  r.at_least("train.stop_after", t.stop_after, int64_t(0));
  r.at_least("train.time_limit", t.time_limit, 0.0);
  r.at_least("train.threads", t.threads, 0);
  r.at_least("train.max_bad_steps", t.max_bad_steps, 0);
  r.at_least("train.max_rollbacks", t.max_rollbacks, 0);
  r.need(t.spike_window == 0 || t.spike_window >= 2, {"train.spike_window"},
         "train.spike_window is " + show(t.spike_window), "0 (off) or a window of at least 2 losses");
  r.positive("train.spike_zscore", t.spike_zscore);
  r.positive("parallel.ep", c.parallel.ep);
  r.positive("parallel.dp_replicate", c.parallel.dp_replicate);
  r.at_least("checkpoint.every", c.checkpoint.every, int64_t(0));
  r.at_least("checkpoint.keep_last", c.checkpoint.keep_last, 0);
  r.at_least("checkpoint.keep_every", c.checkpoint.keep_every, int64_t(0));
  r.at_least("checkpoint.write_timeout_s", c.checkpoint.write_timeout_s, 0.0);
  r.need(!c.checkpoint.resume.empty(), {"checkpoint.resume"}, "checkpoint.resume is empty",
         "auto | never | a checkpoint path");
  r.one_of("device", c.device, {"auto", "cpu", "cuda"});

  // Combinations.
  // The MTP modules' blocks are layers L..L+D-1 (Hugging Face numbering), dense below dense_layers.
  if (m.mtp_depth == 0)
    r.need(m.dense_layers <= m.layers, {"model.layers", "model.dense_layers"},
           "model.dense_layers is " + show(m.dense_layers) + " but model.layers is " + show(m.layers),
           "dense_layers <= layers");
  else
    r.need(m.dense_layers <= m.layers + m.mtp_depth, {"model.layers", "model.dense_layers", "model.mtp_depth"},
           "model.dense_layers is " + show(m.dense_layers) + " but model.layers + model.mtp_depth is " +
               show(m.layers + m.mtp_depth),
           "dense_layers <= layers + mtp_depth (the MTP blocks are layers L..L+mtp_depth-1)");
  r.need(m.mtp_depth < c.data.seq_len, {"model.mtp_depth", "data.seq_len"},
         "model.mtp_depth is " + show(m.mtp_depth) + " but data.seq_len is " + show(c.data.seq_len),
         "seq_len > mtp_depth: MTP module k predicts token i+k+1 of the window");
  // The MTP blocks attend over the whole shifted window (no document masks there yet).
  r.need(m.mtp_depth == 0 || !c.data.document_mask, {"model.mtp_depth", "data.document_mask"},
         "model.mtp_depth is " + show(m.mtp_depth) + " with data.document_mask true",
         "one of them: the MTP modules do not take document masks yet");
  if (m.dense_layers < m.layers + m.mtp_depth) {  // there are MoE layers: the routing must be possible
    r.need(m.routed_experts > 0, {"model.routed_experts", "model.layers", "model.dense_layers"},
           "model.routed_experts is 0 but layers - dense_layers = " + show(m.layers - m.dense_layers) +
               " blocks are MoE blocks",
           "routed_experts > 0, or dense_layers = layers for an all-dense model");
    r.need(m.experts_per_token <= m.routed_experts, {"model.experts_per_token", "model.routed_experts"},
           "model.experts_per_token is " + show(m.experts_per_token) + " but model.routed_experts is " +
               show(m.routed_experts),
           "experts_per_token <= routed_experts");
    r.need(m.routed_experts % g.groups == 0, {"model.routed_experts", "model.router.groups"},
           "model.router.groups is " + show(g.groups) + " but model.routed_experts is " + show(m.routed_experts),
           "groups to divide routed_experts");
    r.need(g.groups == 1 || m.routed_experts / g.groups >= 2, {"model.routed_experts", "model.router.groups"},
           "model.router.groups is " + show(g.groups) + " with " + show(m.routed_experts) + " routed experts",
           "at least 2 experts per group: a group is ranked by the sum of its top-2 scores");
    r.need(g.groups_per_token <= g.groups, {"model.router.groups", "model.router.groups_per_token"},
           "model.router.groups_per_token is " + show(g.groups_per_token) + " but model.router.groups is " +
               show(g.groups),
           "groups_per_token <= groups");
    const int reachable = g.groups_per_token * (m.routed_experts / g.groups);
    r.need(m.experts_per_token <= reachable,
           {"model.experts_per_token", "model.routed_experts", "model.router.groups", "model.router.groups_per_token"},
           "model.experts_per_token is " + show(m.experts_per_token) + " but the " + show(g.groups_per_token) +
               " chosen groups hold only " + show(reachable) + " experts",
           "experts_per_token <= groups_per_token * routed_experts / groups");
  }
  r.need(m.routed_experts % c.parallel.ep == 0, {"model.routed_experts", "parallel.ep"},
         "parallel.ep is " + show(c.parallel.ep) + " but model.routed_experts is " + show(m.routed_experts),
         "ep to divide routed_experts, so every expert-parallel rank holds the same number");
  r.need(!c.parallel.fp8_dispatch || t.precision == "fp8", {"parallel.fp8_dispatch", "train.precision"},
         "parallel.fp8_dispatch is true but train.precision is " + show(t.precision),
         "train.precision fp8 (the tokens travel as the E4M3 rows the fp8 expert GEMMs read)");
  r.need(t.min_lr <= t.lr, {"train.lr", "train.min_lr"},
         "train.min_lr is " + show(t.min_lr) + " but train.lr is " + show(t.lr), "min_lr <= lr");
  r.need(t.steps == 0 || t.warmup <= t.steps, {"train.steps", "train.warmup"},
         "train.warmup is " + show(t.warmup) + " but train.steps is " + show(t.steps), "warmup <= steps");
  if (t.schedule == "wsd") {
    r.need(t.decay_steps >= 1 && t.decay_steps <= t.steps - t.warmup,
           {"train.decay_steps", "train.schedule", "train.steps", "train.warmup"},
           "train.decay_steps is " + show(t.decay_steps) + " with train.schedule wsd, train.steps " + show(t.steps) +
               " and train.warmup " + show(t.warmup),
           "1 <= decay_steps <= steps - warmup = " + show(t.steps - t.warmup));
  } else {
    r.need(t.decay_steps == 0, {"train.decay_steps", "train.schedule"},
           "train.decay_steps is " + show(t.decay_steps) + " but train.schedule is " + t.schedule,
           "decay_steps only with schedule wsd (" + t.schedule + " decays over steps - warmup)");
  }
}

// YAML double-quoted string, so names like "true", "1e3" or "" read back as the same string.
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += char(ch);
    } else if (ch < 0x20 || ch == 0x7f) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\x%02x", ch);
      out += buf;
    } else {
      out += char(ch);
    }
  }
  return out + "\"";
}

}  // namespace

// Where each YAML document starts, and where its first node does (the line an error names).
struct DocumentStarts : YAML::EventHandler {
  std::vector<YAML::Mark> starts, first_nodes;
  void node(const YAML::Mark& mark) {
    if (first_nodes.size() < starts.size()) first_nodes.push_back(mark);
  }
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t) override { node(m); }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t) override { node(m); }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t, const std::string&) override { node(m); }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    node(m);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    node(m);
  }
  void OnMapEnd() override {}
};

// The one document of a config (a null node when there is none). Not YAML::LoadAll: at a stray ','
// outside a flow collection, yaml-cpp 0.7's parser hands out empty documents forever without
// consuming it, and LoadAll loops until memory runs out (found by tests/fuzz/fuzz_config). So at
// most three documents are asked for: one that starts where the one before it did is that stuck
// parser, and any second document is an error.
YAML::Node load_single_document(const std::string& yaml_text, const std::string& source_name) {
  std::istringstream in(yaml_text);
  YAML::Parser parser(in);
  DocumentStarts docs;
  for (int i = 0; i < 3 && parser.HandleNextDocument(docs); ++i) {
    const size_t n = docs.starts.size();
    if (n >= 2 && docs.starts[n - 1].pos == docs.starts[n - 2].pos)
      throw error(source_name, ":", docs.starts[n - 1].line + 1, ": malformed YAML: cannot parse from column ",
                  docs.starts[n - 1].column + 1, " (a ',' outside [ ] or { }?)");
  }
  if (docs.starts.size() >= 2) {
    const YAML::Mark& at = docs.first_nodes.size() >= 2 ? docs.first_nodes[1] : docs.starts[1];
    throw error(source_name, ":", at.line + 1, ": a second YAML document (expected one document)");
  }
  return docs.starts.empty() ? YAML::Node() : YAML::Load(yaml_text);
}

Config parse_config(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = load_single_document(yaml_text, source_name);
  } catch (const YAML::ParserException& e) {
    // yaml-cpp reports errors found at the end of input one line past the last; name the last.
    const int lines = int(std::count(yaml_text.begin(), yaml_text.end(), '\n')) +
                      (!yaml_text.empty() && yaml_text.back() != '\n');
    throw error(source_name, ":", std::clamp(e.mark.line + 1, 1, std::max(lines, 1)), ": malformed YAML: ", e.msg);
  }
  if (root.IsNull()) throw error(source_name, ":1: the config is empty (expected ", expected_top(), ")");
  if (!root.IsMap())
    throw error(source_name, ":", root.Mark().line + 1, ": the top level is ", kind(root), " (expected ",
                expected_top(), ")");

  Entries given;
  std::map<std::string, int> section_lines;
  flatten(root, "", source_name, given, section_lines);
  for (size_t i = 0; i < overrides.size(); ++i) apply_override(overrides[i], int64_t(i), given);

  Config c;
  for (const Field& f : schema(c))
    if (auto it = given.find(f.key); it != given.end()) assign(f.key, it->second, f.slot);
  validate(c, Rules(given, source_name));
  c.source = source_name;
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) throw error(path, ": cannot read config file (", strerror(errno), ")");
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const int read_errno = ferror(f) ? errno : 0;  // a folder opens but fails here with EISDIR
  fclose(f);
  if (read_errno) throw error(path, ": cannot read config file (", strerror(read_errno), ")");
  return parse_config(text, path, overrides);
}

std::string config_to_yaml(const Config& config) {
  Config c = config;  // schema() hands out pointers into a mutable Config
  std::ostringstream os;
  std::vector<std::string> open;  // the sections the previous key was in
  for (const Field& f : schema(c)) {
    std::vector<std::string> parts;  // "model.router.score" -> {model, router}, leaf "score"
    std::string key = f.key;
    for (size_t dot; (dot = key.find('.')) != std::string::npos; key.erase(0, dot + 1))
      parts.push_back(key.substr(0, dot));
    const std::string& leaf = key;
    size_t same = 0;
    while (same < open.size() && same < parts.size() && open[same] == parts[same]) ++same;
    for (size_t d = same; d < parts.size(); ++d) os << std::string(2 * d, ' ') << parts[d] << ":\n";
    open = parts;
    os << std::string(2 * parts.size(), ' ') << leaf << ": ";
    std::visit(
        [&](auto* v) {
          using T = std::remove_pointer_t<decltype(v)>;
          if constexpr (std::is_same_v<T, double>) {
            char buf[32];  // shortest text that reads back as the same double
            os << std::string_view(buf, std::to_chars(buf, buf + sizeof buf, *v).ptr);
          } else if constexpr (std::is_same_v<T, bool>) {
            os << (*v ? "true" : "false");
          } else if constexpr (std::is_same_v<T, std::string>) {
            os << quoted(*v);
          } else if constexpr (std::is_same_v<T, std::vector<DataSource>>) {
            os << "[";
            for (size_t i = 0; i < v->size(); ++i) {
              char buf[32];
              os << (i ? ", " : "") << "{path: " << quoted((*v)[i].path) << ", weight: "
                 << std::string_view(buf, std::to_chars(buf, buf + sizeof buf, (*v)[i].weight).ptr) << "}";
            }
            os << "]";
          } else {
            os << *v;
          }
        },
        f.slot);
    os << "\n";
  }
  return os.str();
}

}  // namespace moe
