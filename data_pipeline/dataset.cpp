// TokenDataset: a split opened read-only — a split folder written by moe preprocess (shards or a
// Megatron pair, described by manifest.json) or a bare Megatron-LM .bin/.idx pair. open() trusts
// nothing it can check cheaply (types, sums, file sizes, the Megatron index); verify() reads every
// byte (sha256, indexes, token range). Token values are range-checked as they are read, so a
// corrupt file can never feed the model an id outside the vocabulary.
#include <algorithm>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "data_pipeline/megatron.h"
#include "data_pipeline/mmap_file.h"
#include "data_pipeline/shards.h"
#include "framework/error.h"
#include "framework/json_depth.h"
#include "framework/sha256.h"
#include "framework/threads.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace moe {
namespace {

constexpr const char* kRerun = "(corrupt or truncated shard; re-run moe preprocess)";

struct Shard {
  std::string bin, idx;  // paths
  int64_t begin = 0, tokens = 0, documents = 0;
  std::string sha_bin, sha_idx;  // empty for a bare Megatron pair (nothing to check against)
  MappedFile map;
};

// Manifest fields with their type checked; errors name the manifest and the key.
class ManifestReader {
 public:
  explicit ManifestReader(std::string path) : path_(std::move(path)) {}
  const json& get(const json& obj, const std::string& key, const std::string& where, json::value_t type,
                  const char* expected) const {
    auto it = obj.find(key);
    bool ok = it != obj.end() && (it->type() == type || (type == json::value_t::number_unsigned &&
                                                          it->type() == json::value_t::number_integer &&
                                                          it->get<int64_t>() >= 0));
    if (!ok) throw error(path_, ": ", where, key, it == obj.end() ? " missing" : " has the wrong type", " (expected ", expected, ")");
    return *it;
  }
  int64_t count(const json& obj, const std::string& key, const std::string& where = "") const {
    return get(obj, key, where, json::value_t::number_unsigned, "a non-negative integer").get<int64_t>();
  }
  std::string str(const json& obj, const std::string& key, const std::string& where = "") const {
    return get(obj, key, where, json::value_t::string, "a string").get<std::string>();
  }

 private:
  std::string path_;
};

bool is_file(const std::string& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// Where a split lives: a folder with manifest.json, or a bare Megatron pair (its path prefix).
struct SplitSource {
  std::string dir;     // folder with manifest.json; for a bare pair its folder
  std::string prefix;  // bare Megatron pair: PREFIX.bin and PREFIX.idx
  bool empty = false;  // a bare pair has no split of this name: an empty dataset
};

// The Megatron pairs (.idx with a .bin beside it) directly in `dir`, as prefixes, sorted.
std::vector<std::string> megatron_pairs(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string p = e.path().string();
    if (p.ends_with(".idx") && is_file(p) && is_file(p.substr(0, p.size() - 4) + ".bin")) out.push_back(p.substr(0, p.size() - 4));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A folder of bare pairs: one pair is the train split; with several, the split's own is the one
// whose name holds the split's name ("val" also matches "valid").
bool pick_pair(const std::string& dir, const std::string& split, SplitSource& src) {
  auto pairs = megatron_pairs(dir);
  if (pairs.empty()) return false;
  src.dir = dir;
  if (pairs.size() == 1) {
    src.prefix = pairs[0];
    src.empty = split != "train";
    return true;
  }
  std::vector<std::string> match;
  for (const auto& p : pairs)
    if (fs::path(p).filename().string().find(split) != std::string::npos) match.push_back(p);
  if (match.size() != 1) {
    std::string names;
    for (const auto& p : pairs) names += (names.empty() ? "" : ", ") + fs::path(p).filename().string();
    throw error(dir, ": holds several Megatron pairs (", names, ") and ", match.size(), " of them name the '", split,
                "' split (expected one, or a PREFIX path naming the pair)");
  }
  src.prefix = match[0];
  return true;
}

SplitSource resolve_split(std::string dir, const std::string& split) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();  // "data/x/" names shards "data/x/train/..."
  SplitSource src;
  // A path prefix, or the .bin/.idx file itself, of a Megatron pair.
  for (std::string prefix : {dir, dir.substr(0, dir.size() >= 4 ? dir.size() - 4 : 0)}) {
    if ((prefix == dir || dir.ends_with(".bin") || dir.ends_with(".idx")) && is_file(prefix + ".idx") &&
        is_file(prefix + ".bin")) {
      src.dir = fs::path(prefix).parent_path().string();
      src.prefix = prefix;
      src.empty = split != "train";
      return src;
    }
  }
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw error(dir, ": no such data folder (expected the output of moe preprocess)");
  if (fs::exists(fs::path(dir) / "manifest.json", ec)) return src.dir = dir, src;
  fs::path sub = fs::path(dir) / split;
  if (fs::is_directory(sub, ec)) {
    if (!fs::exists(sub / "manifest.json", ec) && pick_pair(sub.string(), split, src)) return src.empty = false, src;
    return src.dir = sub.string(), src;
  }
  if (pick_pair(dir, split, src)) return src;
  throw error(dir, ": no manifest.json and no '", split,
              "' split folder (expected the output of moe preprocess, one of its split folders, or a Megatron-LM "
              ".bin/.idx pair)");
}

}  // namespace

struct TokenDataset::Impl {
  std::string dir;
  json manifest;
  std::string tokenizer, tokenizer_hash;
  int64_t vocab = 0, tokens = 0, eos = -1;
  int width = 2;           // bytes per token on disk: 1, 2, 4 or 8
  bool is_signed = false;  // Megatron i8/i16/i32/i64
  bool megatron = false;
  std::vector<Shard> shards;
  std::vector<int64_t> begins;  // shards[i].begin, for binary search

  size_t shard_of(int64_t i) const { return size_t(std::upper_bound(begins.begin(), begins.end(), i) - begins.begin() - 1); }
  [[noreturn]] void bad_token(const Shard& s, int64_t local, int64_t t) const {
    if (t < 0) throw error(s.bin, ": token ", t, " at offset ", local, " is negative (expected token ids >= 0)");
    throw error(s.bin, ": token ", t, " at offset ", local, " is outside the vocabulary (vocab_size ", vocab, ") ", kRerun);
  }
  template <class T>
  void widen(const Shard& s, int64_t local, int64_t n, int32_t* out) const {
    const uint8_t* p = s.map.data() + local * int64_t(sizeof(T));
    uint64_t hi = 0;  // negative ids wrap to huge values, so one maximum catches both ends
    for (int64_t k = 0; k < n; ++k) {
      T v;
      std::memcpy(&v, p + k * int64_t(sizeof(T)), sizeof(T));
      out[k] = int32_t(v);
      hi = std::max(hi, uint64_t(int64_t(v)));
    }
    if (hi >= uint64_t(vocab))
      for (int64_t k = 0; k < n; ++k) {
        T v;
        std::memcpy(&v, p + k * int64_t(sizeof(T)), sizeof(T));
        if (uint64_t(int64_t(v)) >= uint64_t(vocab)) bad_token(s, local + k, int64_t(v));
      }
  }
  // Widens tokens [local, local+n) of shard s into out, checking each against the vocabulary.
  void copy(const Shard& s, int64_t local, int64_t n, int32_t* out) const {
    switch (width * (is_signed ? -1 : 1)) {
      case 1: return widen<uint8_t>(s, local, n, out);
      case 2: return widen<uint16_t>(s, local, n, out);
      case 4: return widen<uint32_t>(s, local, n, out);
      case -1: return widen<int8_t>(s, local, n, out);
      case -2: return widen<int16_t>(s, local, n, out);
      case -4: return widen<int32_t>(s, local, n, out);
      case -8: return widen<int64_t>(s, local, n, out);
      default: MOE_CHECK(false, "token width ", width);
    }
  }
  // Global token offsets where documents start, rising; built on the first document_starts().
  mutable std::once_flag docs_once;
  mutable std::vector<int64_t> doc_starts;
  void read_document_starts() const;

  void load_manifest(const std::string& path);
  void open_bare_megatron(const std::string& prefix, const std::string& split);
  void check_megatron_index(const Shard& s, const MappedFile& idx) const;
};

void TokenDataset::Impl::load_manifest(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, ": no such file (expected the manifest written by moe preprocess)");
  std::stringstream text;
  text << in.rdbuf();
  check_json_depth(text.str(), path, "the manifest written by moe preprocess");
  try {
    manifest = json::parse(text.str());
  } catch (const json::exception& e) {
    std::string what = e.what();  // "[json.exception.parse_error.101] parse error at ..."
    if (auto p = what.find("] "); what[0] == '[' && p != std::string::npos) what = what.substr(p + 2);
    throw error(path, ": not valid JSON (", what, ")");
  }
  if (!manifest.is_object()) throw error(path, ": not a JSON object (expected the manifest written by moe preprocess)");
  ManifestReader m(path);
  int64_t version = m.count(manifest, "format_version");
  if (version != 1) throw error(path, ": format_version ", version, " is not supported (expected 1)");
  const std::string format = manifest.contains("format") ? m.str(manifest, "format") : "shards";
  if (format != "shards" && format != "megatron") throw error(path, ": format '", format, "' (expected shards or megatron)");
  megatron = format == "megatron";
  tokenizer = m.str(manifest, "tokenizer");
  tokenizer_hash = m.str(manifest, "tokenizer_hash");
  vocab = m.count(manifest, "vocab_size");
  eos = m.count(manifest, "eos_id");
  std::string dtype = m.str(manifest, "dtype");
  const char* wide = megatron ? "i32" : "u32";
  if (dtype != "u16" && dtype != wide) throw error(path, ": dtype '", dtype, "' (expected u16 or ", wide, ")");
  width = dtype == "u16" ? 2 : 4;
  is_signed = dtype == "i32";
  const int64_t limit = width == 2 ? 65536 : is_signed ? int64_t(1) << 31 : int64_t(1) << 32;
  if (vocab < 1 || vocab > limit || eos >= vocab)
    throw error(path, ": vocab_size ", vocab, " / eos_id ", eos, " do not fit dtype ", dtype,
                " (expected 0 <= eos_id < vocab_size <= ", limit, ")");
  int64_t documents = m.count(manifest, "documents");
  tokens = m.count(manifest, "tokens");
  const json& list = m.get(manifest, "shards", "", json::value_t::array, "a list of shards");
  int64_t sum_tokens = 0, sum_docs = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    std::string where = "shards[" + std::to_string(i) + "].";
    if (!list[i].is_object()) throw error(path, ": ", where.substr(0, where.size() - 1), " is not an object");
    Shard s;
    std::string file = m.str(list[i], "file", where);
    if (file.size() < 5 || file.substr(file.size() - 4) != ".bin" || file.find('/') != std::string::npos || file[0] == '.')
      throw error(path, ": ", where, "file '", file, "' (expected a file name like shard-00000.bin)");
    s.bin = dir + "/" + file;
    s.idx = dir + "/" + file.substr(0, file.size() - 4) + ".idx";
    s.tokens = m.count(list[i], "tokens", where);
    s.documents = m.count(list[i], "documents", where);
    s.sha_bin = m.str(list[i], "sha256_bin", where);
    s.sha_idx = m.str(list[i], "sha256_idx", where);
    s.begin = sum_tokens;
    sum_tokens += s.tokens;
    sum_docs += s.documents;
    shards.push_back(std::move(s));
  }
  if (sum_tokens != tokens || sum_docs != documents)
    throw error(path, ": shards hold ", sum_tokens, " tokens and ", sum_docs, " documents, the totals say ", tokens,
                " and ", documents, " (expected them to agree; re-run moe preprocess)");
}

// The index must describe the .bin exactly: its dtype, its token and sequence counts.
void TokenDataset::Impl::check_megatron_index(const Shard& s, const MappedFile& idx) const {
  MegatronIndex ix = parse_megatron_index(s.idx, idx.data(), idx.size());
  if (ix.item_size != width || ix.is_signed != is_signed || ix.tokens != s.tokens || ix.sequences != s.documents)
    throw error(s.idx, ": holds ", ix.sequences, " sequences and ", ix.tokens, " tokens of dtype code ", ix.dtype_code,
                ", the manifest says ", s.documents, " and ", s.tokens, " of ", megatron_code(width), " ", kRerun);
}

// A Megatron pair without a manifest: no tokenizer is known, and the vocabulary is taken to be the
// largest id + 1 (one pass over the tokens).
void TokenDataset::Impl::open_bare_megatron(const std::string& prefix, const std::string& split) {
  megatron = true;
  Shard s;
  s.bin = prefix + ".bin";
  s.idx = prefix + ".idx";
  MappedFile idx(s.idx);
  MegatronIndex ix = parse_megatron_index(s.idx, idx.data(), idx.size());
  width = ix.item_size;
  is_signed = ix.is_signed;
  s.tokens = tokens = ix.tokens;
  s.documents = ix.sequences;
  s.map = MappedFile(s.bin);
  if (s.map.size() != uint64_t(s.tokens) * uint64_t(width))
    throw error(s.bin, ": size ", s.map.size(), " bytes, ", s.idx, " says ", s.tokens, " tokens of ", width,
                " bytes (expected the .bin that belongs to this index)");
  vocab = int64_t(1) << 31;  // ids must fit int32 for the model; the real bound comes from the scan
  std::vector<int64_t> max_of(size_t(std::max(1, num_threads())), -1);
  std::vector<std::exception_ptr> errors(max_of.size());
  const int64_t chunk = 1 << 20;
  const int64_t chunks = (s.tokens + chunk - 1) / chunk;
  parallel_for(int64_t(max_of.size()), [&](int64_t b, int64_t e) {
    std::vector<int32_t> buf;
    for (int64_t t = b; t < e; ++t) {
      try {
        for (int64_t c = t; c < chunks; c += int64_t(max_of.size())) {
          int64_t n = std::min(chunk, s.tokens - c * chunk);
          buf.resize(size_t(n));
          copy(s, c * chunk, n, buf.data());
          for (int32_t v : buf) max_of[size_t(t)] = std::max<int64_t>(max_of[size_t(t)], v);
        }
      } catch (...) {
        errors[size_t(t)] = std::current_exception();
      }
    }
  });
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  vocab = *std::max_element(max_of.begin(), max_of.end()) + 1;
  manifest = {{"format_version", 1}, {"format", "megatron"}, {"split", split}, {"tokenizer", ""},
              {"tokenizer_hash", ""}, {"vocab_size", vocab}, {"dtype", ix.dtype_code}, {"documents", ix.sequences},
              {"tokens", ix.tokens}, {"shards", json::array({{{"file", fs::path(s.bin).filename().string()},
                                                              {"tokens", ix.tokens}, {"documents", ix.sequences}}})}};
  shards.push_back(std::move(s));
}

TokenDataset::TokenDataset() : impl_(std::make_unique<Impl>()) {}
TokenDataset::~TokenDataset() = default;
TokenDataset::TokenDataset(TokenDataset&&) noexcept = default;
TokenDataset& TokenDataset::operator=(TokenDataset&&) noexcept = default;

TokenDataset TokenDataset::open(const std::string& dir, const std::string& split) {
  TokenDataset d;
  Impl& im = *d.impl_;
  SplitSource src = resolve_split(dir, split);
  im.dir = src.dir;
  if (src.empty) {  // a bare pair is all train
    im.megatron = true;
    im.manifest = {{"format_version", 1}, {"format", "megatron"}, {"split", split}, {"tokens", 0}, {"documents", 0},
                   {"shards", json::array()}};
    return d;
  }
  if (!src.prefix.empty()) {
    im.dir = src.prefix;
    im.open_bare_megatron(src.prefix, split);
    im.begins.push_back(0);
    return d;
  }
  im.load_manifest(im.dir + "/manifest.json");
  for (Shard& s : im.shards) {
    auto check_size = [](const std::string& path, uint64_t want) {
      std::error_code ec;
      uint64_t got = fs::file_size(path, ec);
      if (ec) throw error(path, ": missing (listed in manifest.json; re-run moe preprocess)");
      if (got != want) throw error(path, ": size ", got, " bytes, manifest says ", want, " ", kRerun);
    };
    check_size(s.bin, uint64_t(s.tokens) * uint64_t(im.width));
    if (im.megatron) {
      std::error_code ec;
      if (!fs::exists(s.idx, ec)) throw error(s.idx, ": missing (listed in manifest.json; re-run moe preprocess)");
      im.check_megatron_index(s, MappedFile(s.idx));
    } else {
      check_size(s.idx, uint64_t(s.documents + 1) * 8);
    }
    s.map = MappedFile(s.bin);
    im.begins.push_back(s.begin);
  }
  return d;
}

int64_t TokenDataset::num_tokens() const { return impl_->tokens; }
int64_t TokenDataset::vocab_size() const { return impl_->vocab; }
const std::string& TokenDataset::tokenizer_name() const { return impl_->tokenizer; }
const std::string& TokenDataset::tokenizer_hash() const { return impl_->tokenizer_hash; }
const std::string& TokenDataset::dir() const { return impl_->dir; }
const json& TokenDataset::manifest() const { return impl_->manifest; }

// A shard's pieces start documents, except a first piece continuing a document that the previous
// shard's boundary cut (that shard does not end with EOS). docs/formats.md describes pieces.
void TokenDataset::Impl::read_document_starts() const {
  for (const Shard& s : shards) {
    if (s.tokens == 0) continue;
    MappedFile idx(s.idx);
    if (megatron) {
      for (int64_t start : megatron_document_starts(idx.data(), idx.size())) doc_starts.push_back(s.begin + start);
      continue;
    }
    MOE_CHECK(idx.size() == size_t(s.documents + 1) * 8, s.idx, ": ", idx.size(), " bytes");
    for (int64_t k = 0; k < s.documents; ++k) {
      uint64_t off;
      std::memcpy(&off, idx.data() + 8 * k, 8);
      const int64_t start = s.begin + int64_t(off);
      if (start >= tokens) throw error(s.idx, ": document offset ", off, " beyond the shard's tokens ", kRerun);
      if (k == 0 && s.begin > 0) {
        int32_t last;
        const Shard& prev = shards[shard_of(s.begin - 1)];
        copy(prev, s.begin - 1 - prev.begin, 1, &last);
        if (last != eos) continue;
      }
      doc_starts.push_back(start);
    }
  }
}

void TokenDataset::document_starts(int64_t begin, int64_t n, int32_t* start) const {
  const Impl& im = *impl_;
  MOE_CHECK(begin >= 0 && n >= 0 && begin + n <= im.tokens, "document_starts [", begin, ", ", begin + n, ")");
  std::call_once(im.docs_once, [&] { im.read_document_starts(); });
  const std::vector<int64_t>& d = im.doc_starts;
  // The last document start at or before `begin`, then every one after it within the range.
  auto next = std::upper_bound(d.begin(), d.end(), begin);
  int64_t current = begin;
  for (int64_t i = 0; i < n; ++i) {
    if (next != d.end() && *next == begin + i) current = *next++;
    start[i] = int32_t(current - begin);
  }
}

uint32_t TokenDataset::token(int64_t i) const {
  int32_t t;
  read(i, 1, &t);
  return uint32_t(t);
}

void TokenDataset::read(int64_t begin, int64_t n, int32_t* out) const {
  const Impl& im = *impl_;
  MOE_CHECK(begin >= 0 && n >= 0 && begin + n <= im.tokens, "read [", begin, ", ", begin + n, ") of ", im.tokens, " tokens");
  if (n == 0) return;
  for (size_t s = im.shard_of(begin); n > 0; ++s) {
    const Shard& sh = im.shards[s];
    int64_t local = begin - sh.begin, take = std::min(n, sh.tokens - local);
    if (take <= 0) continue;  // an empty shard
    im.copy(sh, local, take, out);
    out += take, begin += take, n -= take;
  }
}

void TokenDataset::verify() const {
  const Impl& im = *impl_;
  // One task per shard; pool threads must not throw, so the first failing shard (in order) is
  // reported after all have run.
  std::vector<std::exception_ptr> errors(im.shards.size());
  parallel_for(int64_t(im.shards.size()), [&](int64_t b, int64_t e) {
    std::vector<int32_t> buf;
    for (int64_t i = b; i < e; ++i) {
      const Shard& s = im.shards[i];
      try {
        if (!s.sha_bin.empty()) {
          Sha256 h;
          h.update(s.map.data(), s.map.size());
          if (h.hex() != s.sha_bin) throw error(s.bin, ": sha256 differs from manifest.json ", kRerun);
          if (sha256_file(s.idx) != s.sha_idx) throw error(s.idx, ": sha256 differs from manifest.json ", kRerun);
        }
        MappedFile idx(s.idx);
        if (im.megatron) {
          parse_megatron_index(s.idx, idx.data(), idx.size());
        } else {
          // Document offsets: 0 first, strictly increasing, the shard's token count last.
          if (idx.size() != size_t(s.documents + 1) * 8) throw error(s.idx, ": changed size while being verified");
          std::vector<uint64_t> off(size_t(s.documents + 1));
          std::memcpy(off.data(), idx.data(), off.size() * 8);
          bool ok = off.back() == uint64_t(s.tokens) && (s.documents == 0 || off[0] == 0);
          for (size_t k = 1; ok && k < off.size(); ++k) ok = off[k - 1] < off[k];
          if (!ok) throw error(s.idx, ": document offsets are not 0 < ... < ", s.tokens, " ", kRerun);
        }
        for (int64_t at = 0; at < s.tokens; at += 1 << 20) {
          int64_t n = std::min<int64_t>(1 << 20, s.tokens - at);
          buf.resize(size_t(n));
          im.copy(s, at, n, buf.data());
        }
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  });
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace moe
