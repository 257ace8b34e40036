#include "data_pipeline/bpe.h"

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <queue>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "data_pipeline/pretokenize.h"
#include "framework/error.h"
#include "framework/json_depth.h"
#include "framework/sha256.h"

namespace moe {
namespace {

using json = nlohmann::json;

// ---- GPT-2 byte <-> unicode map ----

struct ByteMap {
  uint32_t to_cp[256];
  int16_t from_cp[324];  // code points 0..323 cover the map; -1 = not a mapped character
  ByteMap() {
    std::fill(std::begin(from_cp), std::end(from_cp), int16_t(-1));
    uint32_t extra = 256;
    for (int b = 0; b < 256; ++b) {
      bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = self ? uint32_t(b) : extra++;
      from_cp[to_cp[b]] = int16_t(b);
    }
  }
};
const ByteMap kByteMap;

// ---- merge table: (left id, right id) -> (rank, merged id), open addressing ----

class MergeTable {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;
  struct Merge {
    uint32_t rank = kNone, id = 0;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
  }
  // A later merge of the same pair replaces the earlier one, as in Hugging Face.
  void put(uint32_t a, uint32_t b, Merge m) {
    Slot& s = slots_[find(key(a, b))];
    s.key = key(a, b);
    s.merge = m;
  }
  Merge get(uint32_t a, uint32_t b) const { return slots_[find(key(a, b))].merge; }

 private:
  static constexpr uint64_t kEmpty = UINT64_MAX;  // ids are < 2^31, so no pair has this key
  struct Slot {
    uint64_t key = kEmpty;
    Merge merge;
  };
  static uint64_t key(uint32_t a, uint32_t b) { return uint64_t(a) << 32 | b; }
  size_t find(uint64_t k) const {
    size_t i = size_t((k * 0x9E3779B97F4A7C15ull) >> 20) & mask_;
    while (slots_[i].key != k && slots_[i].key != kEmpty) i = (i + 1) & mask_;
    return i;
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

// ---- per-thread cache of encoded pieces ----

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Natural text repeats its words, so most pieces are encoded once per thread. The cache belongs to
// one tokenizer at a time (by serial number) and is dropped when it grows past a bound.
struct PieceCache {
  uint64_t owner = 0;
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash, std::equal_to<>> pieces;  // -> ids span
  std::vector<uint32_t> ids;
  void reset(uint64_t serial) {
    owner = serial;
    pieces.clear();
    ids.clear();
  }
};
constexpr size_t kCacheMaxPieces = 1 << 18;
constexpr size_t kCacheMaxPieceBytes = 64;  // longer pieces are rare: not worth the memory
std::atomic<uint64_t> g_next_serial{1};

class BpeTokenizer final : public Tokenizer {
 public:
  BpeTokenizer(std::string name, std::string hash) : name_(std::move(name)), hash_(std::move(hash)) {}

  std::vector<uint32_t> encode(std::string_view text) const override {
    thread_local PieceCache cache;
    if (cache.owner != serial_) cache.reset(serial_);
    std::vector<uint32_t> ids;
    ids.reserve(text.size() / 3 + 16);
    for_each_piece(text, pre_, [&](std::string_view piece) {
      if (piece.size() == 1) return ids.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
      if (piece.size() > kCacheMaxPieceBytes) return merge_piece(piece, ids);
      if (auto it = cache.pieces.find(piece); it != cache.pieces.end()) {
        const uint32_t* p = cache.ids.data() + it->second.first;
        ids.insert(ids.end(), p, p + it->second.second);
        return;
      }
      size_t before = ids.size();
      merge_piece(piece, ids);
      if (cache.pieces.size() >= kCacheMaxPieces) cache.reset(serial_);
      cache.pieces.emplace(std::string(piece), std::make_pair(uint32_t(cache.ids.size()), uint32_t(ids.size() - before)));
      cache.ids.insert(cache.ids.end(), ids.begin() + ptrdiff_t(before), ids.end());
    });
    return ids;
  }

  std::string decode(const std::vector<uint32_t>& ids) const override {
    std::string text;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] >= token_bytes_.size() || !defined_[ids[i]])
        throw error(name_, ": token id ", ids[i], " at position ", i, " is not in the vocabulary (expected 0..",
                    vocab_size() - 1, ")");
      text += token_bytes_[ids[i]];
    }
    return text;
  }

  int64_t vocab_size() const override { return int64_t(token_bytes_.size()); }
  uint32_t eos_id() const override { return eos_; }
  std::string name() const override { return name_; }
  std::string hash() const override { return hash_; }
  CutRule cut_rule() const override { return CutRule::PreTokens; }

  void load(const json& j);

 private:
  // Appends the ids of one piece: its bytes, merged pair by pair, lowest rank first and leftmost
  // first among equal ranks (Hugging Face's order).
  void merge_piece(std::string_view piece, std::vector<uint32_t>& out) const {
    if (ignore_merges_) {
      if (auto it = whole_.find(piece); it != whole_.end()) return out.push_back(it->second);
    }
    thread_local std::vector<uint32_t> sym;
    sym.resize(piece.size());
    for (size_t i = 0; i < piece.size(); ++i) sym[i] = byte_id_[static_cast<unsigned char>(piece[i])];
    if (piece.size() <= 32)
      merge_short(sym);
    else
      merge_long(sym);
    out.insert(out.end(), sym.begin(), sym.end());
  }

  // O(n^2) rescans: fastest for the short pieces of ordinary text.
  void merge_short(std::vector<uint32_t>& sym) const {
    uint32_t rank[32];
    size_t n = sym.size();
    for (size_t i = 0; i + 1 < n; ++i) rank[i] = merges_.get(sym[i], sym[i + 1]).rank;
    while (n > 1) {
      size_t best = 0;
      for (size_t i = 1; i + 1 < n; ++i)
        if (rank[i] < rank[best]) best = i;
      if (rank[best] == MergeTable::kNone) break;
      sym[best] = merges_.get(sym[best], sym[best + 1]).id;
      std::copy(sym.begin() + ptrdiff_t(best) + 2, sym.begin() + ptrdiff_t(n), sym.begin() + ptrdiff_t(best) + 1);
      if (best + 2 < n) std::copy(rank + best + 2, rank + n - 1, rank + best + 1);
      --n;
      if (best > 0) rank[best - 1] = merges_.get(sym[best - 1], sym[best]).rank;
      if (best + 1 < n) rank[best] = merges_.get(sym[best], sym[best + 1]).rank;
    }
    sym.resize(n);
  }

  // A linked list and a heap of (rank, position): O(n log n) for long pieces (runs of spaces or
  // punctuation, text without spaces). A heap entry is stale when its left symbol has changed or
  // been merged away; it is then skipped.
  void merge_long(std::vector<uint32_t>& sym) const {
    const size_t n = sym.size();
    constexpr uint32_t kGone = UINT32_MAX;
    std::vector<uint32_t> next(n), prev(n);
    for (size_t i = 0; i < n; ++i) next[i] = uint32_t(i + 1), prev[i] = uint32_t(i) - 1;
    std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<>> heap;  // rank << 32 | position
    auto push = [&](uint32_t i) {
      if (next[i] >= n) return;
      uint32_t r = merges_.get(sym[i], sym[next[i]]).rank;
      if (r != MergeTable::kNone) heap.push(uint64_t(r) << 32 | i);
    };
    for (uint32_t i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      uint32_t rank = uint32_t(heap.top() >> 32), i = uint32_t(heap.top());
      heap.pop();
      if (sym[i] == kGone || next[i] >= n) continue;
      MergeTable::Merge m = merges_.get(sym[i], sym[next[i]]);
      if (m.rank != rank) continue;
      uint32_t j = next[i];
      sym[i] = m.id;
      sym[j] = kGone;
      next[i] = next[j];
      if (next[j] < n) prev[next[j]] = i;
      if (prev[i] < n) push(prev[i]);
      push(i);
    }
    sym.erase(std::remove(sym.begin(), sym.end(), kGone), sym.end());
  }

  std::string name_, hash_;
  uint64_t serial_ = g_next_serial++;
  PreTokenizer pre_;
  uint32_t byte_id_[256] = {};
  MergeTable merges_;
  std::vector<std::string> token_bytes_;  // by id
  std::vector<bool> defined_;             // ids without a token are gaps in the vocabulary
  uint32_t eos_ = 0;
  bool ignore_merges_ = false;  // Llama-3: a piece that is a whole token is not merged
  std::unordered_map<std::string, uint32_t, StringHash, std::equal_to<>> whole_;  // bytes -> id, for ignore_merges
  friend class Loader;
};

// ---- tokenizer.json ----

// Parses the JSON into a BpeTokenizer; every complaint names the file and the key.
class Loader {
 public:
  Loader(BpeTokenizer& t, const std::string& name) : t_(t), name_(name) {}

  void load(const json& j) {
    if (!j.is_object()) fail("the top level is not a JSON object (expected a Hugging Face tokenizer.json)");
    auto model = j.find("model");
    if (model == j.end() || !model->is_object()) fail("no \"model\" object (expected a Hugging Face tokenizer.json)");
    check_model(*model);
    check_null_or(j, "normalizer", nullptr, "null");
    check_null_or(j, "decoder", "ByteLevel", "ByteLevel or null");
    t_.pre_ = pre_tokenizer(j);
    read_added_tokens(j);
    read_vocab(*model);
    read_merges(*model);
    find_eos();
  }

 private:
  template <class... A>
  [[noreturn]] void fail(const A&... a) const {
    throw error(name_, ": ", a...);
  }

  static std::string brief(const json& v) {
    std::string s = v.dump();
    return s.size() > 160 ? s.substr(0, 157) + "..." : s;
  }

  void check_model(const json& m) {
    // Files written before `type` was serialised have none; their merges say BPE.
    std::string type = m.contains("type") && m["type"].is_string() ? m["type"].get<std::string>()
                       : m.contains("merges")                     ? "BPE"
                                                                  : "(none)";
    if (type != "BPE")
      fail("model.type is '", type, "' (expected 'BPE': only byte-level BPE tokenizer.json files are supported)");
    if (m.contains("dropout") && !m["dropout"].is_null() && !(m["dropout"].is_number() && m["dropout"] == 0))
      fail("model.dropout is ", brief(m["dropout"]), " (expected null: BPE dropout is for training only)");
    if (m.value("byte_fallback", false))
      fail("model.byte_fallback is true (expected false: that is a SentencePiece-style BPE, not byte-level)");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (m.contains(k) && !m[k].is_null() && m[k] != "") fail("model.", k, " is ", brief(m[k]), " (expected null or \"\")");
    if (m.contains("ignore_merges")) {
      if (!m["ignore_merges"].is_boolean()) fail("model.ignore_merges is ", brief(m["ignore_merges"]), " (expected true or false)");
      t_.ignore_merges_ = m["ignore_merges"].get<bool>();
    }
  }

  // `key` must be absent, null, or an object whose type is `type`.
  void check_null_or(const json& j, const char* key, const char* type, const char* expected) {
    if (!j.contains(key) || j[key].is_null()) return;
    const json& v = j[key];
    if (type && v.is_object() && v.value("type", "") == type) return;
    fail(key, " ", brief(v), " is not supported (expected ", expected, ")");
  }

  static bool byte_level(const json& p, bool use_regex) {
    return p.is_object() && p.value("type", "") == "ByteLevel" && p.value("add_prefix_space", true) == false &&
           p.value("use_regex", true) == use_regex;
  }

  PreTokenizer pre_tokenizer(const json& j) {
    const json* p = j.contains("pre_tokenizer") ? &j["pre_tokenizer"] : nullptr;
    if (p && byte_level(*p, true)) return {SplitPattern::Gpt2, false};
    if (p && p->is_object() && p->value("type", "") == "Sequence" && p->contains("pretokenizers")) {
      const json& seq = (*p)["pretokenizers"];
      if (seq.is_array() && seq.size() == 2) {
        const json &a = seq[0], &b = seq[1];
        if (a.is_object() && a.value("type", "") == "Split" && a.value("behavior", "") == "Isolated" &&
            a.value("invert", true) == false && a.contains("pattern") && a["pattern"].is_object() &&
            a["pattern"].contains("Regex") && byte_level(b, false)) {
          if (a["pattern"]["Regex"] == kGpt2Regex) return {SplitPattern::Gpt2, false};
          if (a["pattern"]["Regex"] == kLlama3Regex) return {SplitPattern::Llama3, false};
        }
        if (a.is_object() && a.value("type", "") == "Digits" && a.value("individual_digits", false) &&
            byte_level(b, true))
          return {SplitPattern::Gpt2, true};
      }
    }
    fail("pre_tokenizer ", p ? brief(*p) : "(none)",
         " is not supported (expected ByteLevel{add_prefix_space: false, use_regex: true}, or a Sequence of "
         "Split{GPT-2 or Llama-3 regex, Isolated} or Digits{individual_digits: true}, then ByteLevel)");
  }

  uint32_t read_id(const json& v, const std::string& where) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= (int64_t(1) << 31))
      fail(where, " is ", brief(v), " (expected a token id, an integer in 0..2^31-1)");
    return v.get<uint32_t>();
  }

  void define(uint32_t id, std::string bytes) {
    if (id >= t_.token_bytes_.size()) t_.token_bytes_.resize(id + 1), t_.defined_.resize(id + 1);
    t_.token_bytes_[id] = std::move(bytes);
    t_.defined_[id] = true;
  }

  void read_added_tokens(const json& j) {
    if (!j.contains("added_tokens") || j["added_tokens"].is_null()) return;
    const json& list = j["added_tokens"];
    if (!list.is_array()) fail("added_tokens is not an array (expected a list of {id, content})");
    for (size_t i = 0; i < list.size(); ++i) {
      const json& a = list[i];
      std::string where = "added_tokens[" + std::to_string(i) + "]";
      if (!a.is_object() || !a.contains("id") || !a.contains("content") || !a["content"].is_string())
        fail(where, " is ", brief(a), " (expected an object with an integer id and a string content)");
      uint32_t id = read_id(a["id"], where + ".id");
      added_[id] = a["content"].get<std::string>();
    }
  }

  void read_vocab(const json& m) {
    if (!m.contains("vocab") || !m["vocab"].is_object()) fail("model.vocab is missing or not an object (expected {token: id})");
    std::string bytes;
    // Ids index the token table, so one id of 2^31 - 1 would allocate a table of 2^31 entries
    // (found by tests/fuzz/fuzz_tokenizer_json). Tokenizer files number their N tokens 0..N-1;
    // unused ids are allowed, up to kMaxUnusedIds of them.
    constexpr uint64_t kMaxUnusedIds = uint64_t(1) << 20;
    const uint64_t limit = m["vocab"].size() + added_.size() + kMaxUnusedIds;
    auto check_dense = [&](uint32_t id, const std::string& where) {
      if (id >= limit)
        fail(where, " has id ", id, " (expected ids below ", limit, ": the ", limit - kMaxUnusedIds,
             " vocab and added tokens, with at most ", kMaxUnusedIds, " unused ids)");
    };
    for (const auto& [id, content] : added_) check_dense(id, "added token \"" + content + "\"");
    for (const auto& [token, v] : m["vocab"].items()) {
      uint32_t id = read_id(v, "model.vocab[\"" + token + "\"]");
      if (id < t_.defined_.size() && t_.defined_[id]) fail("model.vocab: id ", id, " is given to two tokens (expected distinct ids)");
      if (!unicode_to_bytes(token, bytes)) {
        auto it = added_.find(id);
        if (it == added_.end() || it->second != token)
          fail("model.vocab token \"", token, "\" (id ", id,
               ") is not byte-level (expected GPT-2 byte-to-unicode characters: only byte-level BPE is supported)");
        bytes = token;
      }
      check_dense(id, "model.vocab[\"" + token + "\"]");
      by_bytes_.emplace(bytes, id);
      define(id, bytes);
    }
    for (const auto& [id, content] : added_) define(id, content);  // decode gives an added token's content
    for (int b = 0; b < 256; ++b) {
      auto it = by_bytes_.find(std::string(1, char(b)));
      if (it == by_bytes_.end())
        fail("model.vocab has no token for byte 0x", "0123456789ABCDEF"[b >> 4], "0123456789ABCDEF"[b & 15],
             " (expected all 256 byte-level tokens)");
      t_.byte_id_[b] = it->second;
    }
    if (t_.ignore_merges_)
      for (const auto& [bytes, id] : by_bytes_) t_.whole_.emplace(bytes, id);
  }

  uint32_t vocab_id(const std::string& token, size_t i) const {
    std::string bytes;
    auto it = unicode_to_bytes(token, bytes) ? by_bytes_.find(bytes) : by_bytes_.end();
    if (it == by_bytes_.end()) fail("model.merges[", i, "]: \"", token, "\" is not in model.vocab");
    return it->second;
  }

  void read_merges(const json& m) {
    if (!m.contains("merges") || !m["merges"].is_array()) fail("model.merges is missing or not an array (expected [\"a b\", ...] or [[\"a\", \"b\"], ...])");
    const json& merges = m["merges"];
    t_.merges_.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& e = merges[i];
      std::string a, b;
      if (e.is_string()) {
        const std::string& s = e.get_ref<const std::string&>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          fail("model.merges[", i, "] is ", brief(e), " (expected two tokens separated by one space)");
        a = s.substr(0, sp), b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        a = e[0].get<std::string>(), b = e[1].get<std::string>();
      } else {
        fail("model.merges[", i, "] is ", brief(e), " (expected \"a b\" or [\"a\", \"b\"])");
      }
      uint32_t left = vocab_id(a, i), right = vocab_id(b, i), merged = vocab_id(a + b, i);
      t_.merges_.put(left, right, {uint32_t(i), merged});
    }
  }

  void find_eos() {
    for (const char* eos : kEosCandidates) {
      for (const auto& [id, content] : added_)
        if (content == eos) return void(t_.eos_ = id);
      if (auto it = by_bytes_.find(std::string(eos)); it != by_bytes_.end()) return void(t_.eos_ = it->second);
    }
    fail("no end-of-document token (expected one of the tokens '<|endoftext|>', '<|end_of_text|>' or '</s>')");
  }

  BpeTokenizer& t_;
  const std::string& name_;
  std::map<uint32_t, std::string> added_;  // id -> content
  std::unordered_map<std::string, uint32_t> by_bytes_;  // model vocabulary, keyed by token bytes
};

void BpeTokenizer::load(const json& j) { Loader(*this, name_).load(j); }

}  // namespace

std::string bytes_to_unicode(std::string_view bytes) {
  std::string s;
  s.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    uint32_t cp = kByteMap.to_cp[b];
    if (cp < 0x80) {
      s += char(cp);
    } else {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    }
  }
  return s;
}

bool unicode_to_bytes(std::string_view s, std::string& bytes) {
  bytes.clear();
  for (size_t i = 0; i < s.size();) {
    auto b0 = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    if (b0 < 0x80) {
      cp = b0, i += 1;
    } else if ((b0 & 0xE0) == 0xC0 && i + 1 < s.size() && (static_cast<unsigned char>(s[i + 1]) & 0xC0) == 0x80) {
      cp = uint32_t(b0 & 0x1F) << 6 | (static_cast<unsigned char>(s[i + 1]) & 0x3F), i += 2;
    } else {
      return false;  // every mapped character is below U+0800
    }
    if (cp >= std::size(kByteMap.from_cp) || kByteMap.from_cp[cp] < 0) return false;
    bytes += char(kByteMap.from_cp[cp]);
  }
  return true;
}

std::unique_ptr<Tokenizer> parse_bpe_tokenizer(std::string_view json_text, const std::string& name,
                                               const std::string& hash) {
  check_json_depth(json_text, name, "a Hugging Face tokenizer.json");
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::parse_error& e) {
    size_t line = 1 + size_t(std::count(json_text.begin(), json_text.begin() + ptrdiff_t(std::min(e.byte, json_text.size())), '\n'));
    throw error(name, ":", line, ": not valid JSON (expected a Hugging Face tokenizer.json)");
  } catch (const json::exception& e) {  // e.g. a number beyond double's range (found by tests/fuzz)
    throw error(name, ": not valid JSON (", e.what(), "; expected a Hugging Face tokenizer.json)");
  }
  auto tok = std::make_unique<BpeTokenizer>(name, hash);
  tok->load(j);
  return tok;
}

std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, ": cannot read tokenizer file (expected a tokenizer.json)");
  std::stringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  return parse_bpe_tokenizer(text, path, sha256_hex(text));
}

}  // namespace moe
