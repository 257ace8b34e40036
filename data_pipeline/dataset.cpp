// TokenDataset: a split folder opened read-only. open() trusts nothing in the manifest that it can
// check cheaply (types, sums, file sizes); verify() reads every byte (sha256, index, token range).
// Token values are range-checked as they are read, so a corrupt shard can never feed the model an
// id outside the vocabulary.
#include <algorithm>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data_pipeline/mmap_file.h"
#include "data_pipeline/shards.h"
#include "framework/error.h"
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
  std::string sha_bin, sha_idx;
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

// A split folder is one with manifest.json; a preprocessed folder holds one per split.
std::string resolve_split_dir(std::string dir, const std::string& split) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();  // "data/x/" names shards "data/x/train/..."
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw error(dir, ": no such data folder (expected the output of moe preprocess)");
  if (fs::exists(fs::path(dir) / "manifest.json", ec)) return dir;
  fs::path sub = fs::path(dir) / split;
  if (fs::is_directory(sub, ec)) return sub.string();
  throw error(dir, ": no manifest.json and no '", split,
              "' split folder (expected the output of moe preprocess, or one of its split folders)");
}

}  // namespace

struct TokenDataset::Impl {
  std::string dir;
  json manifest;
  std::string tokenizer, tokenizer_hash;
  int64_t vocab = 0, tokens = 0;
  int width = 2;
  std::vector<Shard> shards;
  std::vector<int64_t> begins;  // shards[i].begin, for binary search

  size_t shard_of(int64_t i) const { return size_t(std::upper_bound(begins.begin(), begins.end(), i) - begins.begin() - 1); }
  [[noreturn]] void bad_token(const Shard& s, int64_t local, uint32_t t) const {
    throw error(s.bin, ": token ", t, " at offset ", local, " is outside the vocabulary (vocab_size ", vocab, ") ", kRerun);
  }
  // Widens tokens [local, local+n) of shard s into out, checking each against the vocabulary.
  void copy(const Shard& s, int64_t local, int64_t n, int32_t* out) const {
    const uint8_t* p = s.map.data() + local * width;
    uint32_t hi = 0;
    if (width == 2) {
      for (int64_t k = 0; k < n; ++k) {
        uint16_t v;
        std::memcpy(&v, p + 2 * k, 2);
        out[k] = int32_t(v);
        hi = std::max<uint32_t>(hi, v);
      }
    } else {
      for (int64_t k = 0; k < n; ++k) {
        uint32_t v;
        std::memcpy(&v, p + 4 * k, 4);
        out[k] = int32_t(v);
        hi = std::max(hi, v);
      }
    }
    if (int64_t(hi) >= vocab)
      for (int64_t k = 0; k < n; ++k)
        if (int64_t(uint32_t(out[k])) >= vocab) bad_token(s, local + k, uint32_t(out[k]));
  }
  void load_manifest(const std::string& path);
};

void TokenDataset::Impl::load_manifest(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, ": no such file (expected the manifest written by moe preprocess)");
  std::stringstream text;
  text << in.rdbuf();
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
  tokenizer = m.str(manifest, "tokenizer");
  tokenizer_hash = m.str(manifest, "tokenizer_hash");
  vocab = m.count(manifest, "vocab_size");
  int64_t eos = m.count(manifest, "eos_id");
  std::string dtype = m.str(manifest, "dtype");
  if (dtype != "u16" && dtype != "u32") throw error(path, ": dtype '", dtype, "' (expected u16 or u32)");
  width = dtype == "u16" ? 2 : 4;
  if (vocab < 1 || vocab > (width == 2 ? 65536 : int64_t(1) << 32) || eos >= vocab)
    throw error(path, ": vocab_size ", vocab, " / eos_id ", eos, " do not fit dtype ", dtype,
                " (expected 0 <= eos_id < vocab_size <= ", width == 2 ? "65536)" : "2^32)");
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

TokenDataset::TokenDataset() : impl_(std::make_unique<Impl>()) {}
TokenDataset::~TokenDataset() = default;
TokenDataset::TokenDataset(TokenDataset&&) noexcept = default;
TokenDataset& TokenDataset::operator=(TokenDataset&&) noexcept = default;

TokenDataset TokenDataset::open(const std::string& dir, const std::string& split) {
  TokenDataset d;
  Impl& im = *d.impl_;
  im.dir = resolve_split_dir(dir, split);
  im.load_manifest(im.dir + "/manifest.json");
  for (Shard& s : im.shards) {
    auto check_size = [](const std::string& path, uint64_t want) {
      std::error_code ec;
      uint64_t got = fs::file_size(path, ec);
      if (ec) throw error(path, ": missing (listed in manifest.json; re-run moe preprocess)");
      if (got != want) throw error(path, ": size ", got, " bytes, manifest says ", want, " ", kRerun);
    };
    check_size(s.bin, uint64_t(s.tokens) * uint64_t(im.width));
    check_size(s.idx, uint64_t(s.documents + 1) * 8);
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
        Sha256 h;
        h.update(s.map.data(), s.map.size());
        if (h.hex() != s.sha_bin) throw error(s.bin, ": sha256 differs from manifest.json ", kRerun);
        if (sha256_file(s.idx) != s.sha_idx) throw error(s.idx, ": sha256 differs from manifest.json ", kRerun);
        // Document offsets: 0 first, strictly increasing, the shard's token count last.
        MappedFile idx(s.idx);
        if (idx.size() != size_t(s.documents + 1) * 8) throw error(s.idx, ": changed size while being verified");
        std::vector<uint64_t> off(size_t(s.documents + 1));
        std::memcpy(off.data(), idx.data(), off.size() * 8);
        bool ok = off.back() == uint64_t(s.tokens) && (s.documents == 0 || off[0] == 0);
        for (size_t k = 1; ok && k < off.size(); ++k) ok = off[k - 1] < off[k];
        if (!ok) throw error(s.idx, ": document offsets are not 0 < ... < ", s.tokens, " ", kRerun);
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
