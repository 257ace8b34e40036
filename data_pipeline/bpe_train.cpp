#include "data_pipeline/bpe_train.h"

#include <algorithm>
#include <exception>
#include <queue>
#include <unordered_set>

#include "data_pipeline/bpe.h"
#include "framework/error.h"
#include "framework/threads.h"

namespace moe {

// ---- counting ----

void count_pieces(const std::vector<std::string_view>& texts, const PreTokenizer& pre, PieceCounts& counts) {
  // Work items of about kPartBytes: long texts are cut where the cut changes no piece (safe_cut).
  constexpr size_t kPartBytes = size_t(1) << 20;
  std::vector<std::string_view> parts;
  for (std::string_view t : texts) {
    while (t.size() > 2 * kPartBytes) {
      size_t cut = safe_cut(t, kPartBytes);
      parts.push_back(t.substr(0, cut));
      t.remove_prefix(cut);
    }
    if (!t.empty()) parts.push_back(t);
  }
  // One map per thread's range of parts (keyed by the range's first part), summed afterwards:
  // sums do not depend on the split, so neither do the counts.
  std::vector<PieceCounts> local(parts.size());
  std::vector<std::exception_ptr> errors(parts.size());
  parallel_for(int64_t(parts.size()), [&](int64_t b, int64_t e) {
    try {
      PieceCounts& m = local[size_t(b)];
      for (int64_t i = b; i < e; ++i)
        for_each_piece(parts[size_t(i)], pre, [&](std::string_view piece) {
          auto it = m.find(piece);
          if (it == m.end()) it = m.emplace(std::string(piece), 0).first;
          ++it->second;
        });
    } catch (...) {  // pool threads must not throw (out of memory is the only way here)
      errors[size_t(b)] = std::current_exception();
    }
  });
  for (size_t i = 0; i < parts.size(); ++i) {
    if (errors[i]) std::rethrow_exception(errors[i]);
    if (counts.empty()) {
      counts.swap(local[i]);
      continue;
    }
    for (auto& [piece, n] : local[i]) {
      auto it = counts.find(piece);
      if (it == counts.end())
        counts.emplace(piece, n);
      else
        it->second += n;
    }
    PieceCounts().swap(local[i]);
  }
}

// ---- merging ----

namespace {

using Pair = uint64_t;  // left id << 32 | right id
Pair pair_of(uint32_t a, uint32_t b) { return uint64_t(a) << 32 | b; }
uint32_t left_of(Pair p) { return uint32_t(p >> 32); }
uint32_t right_of(Pair p) { return uint32_t(p); }

struct Word {
  std::vector<uint32_t> sym;
  int64_t freq;
};

struct Candidate {
  int64_t count;
  Pair pair;
};

class Learner {
 public:
  // Ids: the special tokens, then the 256 bytes.
  Learner(BpeVocab& v, int64_t vocab_size, const std::vector<std::string>& specials)
      : v_(v), vocab_size_(vocab_size), heap_(Lower{&v.tokens}) {
    v.specials = int64_t(specials.size());
    for (const auto& s : specials) {
      if (s.size() < 2) throw error("special token '", s, "': too short (expected at least 2 bytes, so it is not a byte token)");
      if (!id_of_.try_emplace(s, uint32_t(v.tokens.size())).second)
        throw error("special token '", s, "': given twice (expected distinct special tokens)");
      v.tokens.push_back(s);
    }
    for (int b = 0; b < 256; ++b) {
      id_of_.emplace(std::string(1, char(b)), uint32_t(v.tokens.size()));
      v.tokens.emplace_back(1, char(b));
    }
  }

  void add_words(const PieceCounts& counts) {
    // Sorted by bytes: the word order (and so every container's) is independent of hashing.
    std::vector<const PieceCounts::value_type*> sorted;
    sorted.reserve(counts.size());
    for (const auto& e : counts) sorted.push_back(&e);
    std::sort(sorted.begin(), sorted.end(), [](auto* x, auto* y) { return x->first < y->first; });
    words_.reserve(sorted.size());
    for (const auto* e : sorted) {
      Word w{{}, e->second};
      for (unsigned char c : e->first) w.sym.push_back(byte_id(c));
      const auto wi = uint32_t(words_.size());
      for (size_t i = 0; i + 1 < w.sym.size(); ++i) add(pair_of(w.sym[i], w.sym[i + 1]), w.freq, wi);
      words_.push_back(std::move(w));
    }
    seen_.assign(words_.size(), 0);
    std::vector<Candidate> all;
    all.reserve(count_.size());
    for (const auto& [p, n] : count_) all.push_back({n, p});
    heap_ = decltype(heap_)(Lower{&v_.tokens}, std::move(all));  // make_heap: O(pairs)
  }

  void run() {
    while (int64_t(v_.tokens.size()) < vocab_size_ && !heap_.empty()) {
      Candidate top = heap_.top();
      heap_.pop();
      auto it = count_.find(top.pair);
      const int64_t now = it == count_.end() ? 0 : it->second;
      if (now != top.count) {  // stale: the pair lost occurrences since it was pushed
        if (now > 0) heap_.push({now, top.pair});
        continue;
      }
      merge(top.pair);
    }
  }

 private:
  // Higher priority = larger count, then smaller (left bytes, right bytes).
  struct Lower {
    const std::vector<std::string>* tokens;
    bool operator()(const Candidate& x, const Candidate& y) const {
      if (x.count != y.count) return x.count < y.count;
      const auto& t = *tokens;
      int c = t[left_of(x.pair)].compare(t[left_of(y.pair)]);
      if (c != 0) return c > 0;
      return t[right_of(x.pair)] > t[right_of(y.pair)];
    }
  };

  uint32_t byte_id(unsigned char c) const { return uint32_t(v_.specials) + c; }

  // count[p] += n; a word that gains the pair is remembered in where[p].
  void add(Pair p, int64_t n, uint32_t word) {
    count_[p] += n;
    if (n <= 0) return;
    auto& w = where_[p];
    if (w.empty() || w.back() != word) w.push_back(word);
    changed_.push_back(p);
  }

  void merge(Pair p) {
    const uint32_t a = left_of(p), b = right_of(p);
    std::string bytes = v_.tokens[a] + v_.tokens[b];
    auto [it, fresh] = id_of_.try_emplace(bytes, uint32_t(v_.tokens.size()));
    if (fresh) v_.tokens.push_back(std::move(bytes));
    const uint32_t id = it->second;
    if (merged_.insert(p).second) v_.merges.emplace_back(a, b);
    ++stamp_;
    changed_.clear();
    std::vector<uint32_t> words = std::move(where_[p]);
    where_.erase(p);
    for (uint32_t wi : words) {
      if (seen_[wi] == stamp_) continue;  // listed twice
      seen_[wi] = stamp_;
      apply(wi, a, b, id);
    }
    std::sort(changed_.begin(), changed_.end());
    changed_.erase(std::unique(changed_.begin(), changed_.end()), changed_.end());
    for (Pair q : changed_)
      if (int64_t n = count_[q]; n > 0) heap_.push({n, q});
  }

  // Replaces each (a, b) in the word, left to right, by `id`, moving the counts of the pairs it
  // breaks and makes. The neighbours are read after earlier replacements, so for "abab" the
  // (X, a) added by the first is removed by the second and (X, X) is counted once.
  void apply(uint32_t wi, uint32_t a, uint32_t b, uint32_t id) {
    Word& w = words_[wi];
    const int64_t f = w.freq;
    scratch_.clear();
    const size_t n = w.sym.size();
    for (size_t i = 0; i < n;) {
      if (i + 1 < n && w.sym[i] == a && w.sym[i + 1] == b) {
        add(pair_of(a, b), -f, wi);
        if (!scratch_.empty()) {
          add(pair_of(scratch_.back(), a), -f, wi);
          add(pair_of(scratch_.back(), id), f, wi);
        }
        if (i + 2 < n) {
          add(pair_of(b, w.sym[i + 2]), -f, wi);
          add(pair_of(id, w.sym[i + 2]), f, wi);
        }
        scratch_.push_back(id);
        i += 2;
      } else {
        scratch_.push_back(w.sym[i++]);
      }
    }
    w.sym.swap(scratch_);
  }

  BpeVocab& v_;
  int64_t vocab_size_;
  std::vector<Word> words_;
  std::unordered_map<std::string, uint32_t> id_of_;  // token bytes -> id (the first id with them)
  std::unordered_map<Pair, int64_t> count_;          // weighted occurrences of each adjacent pair
  std::unordered_map<Pair, std::vector<uint32_t>> where_;  // words that (may) contain the pair
  std::priority_queue<Candidate, std::vector<Candidate>, Lower> heap_;
  std::unordered_set<Pair> merged_;
  std::vector<Pair> changed_;     // pairs that gained occurrences in the current merge
  std::vector<uint32_t> scratch_;
  std::vector<uint32_t> seen_;    // per word: the stamp of the last merge that rewrote it
  uint32_t stamp_ = 0;
};

}  // namespace

BpeVocab learn_bpe(const PieceCounts& counts, int64_t vocab_size, const std::vector<std::string>& special_tokens) {
  BpeVocab v;
  const int64_t base = int64_t(special_tokens.size()) + 256;
  if (vocab_size < base)
    throw error("--vocab-size ", vocab_size, ": too small (expected at least ", base, ": the ", base - 256,
                " special tokens and the 256 bytes)");
  if (vocab_size > (int64_t(1) << 31)) throw error("--vocab-size ", vocab_size, ": too large (expected at most 2^31)");
  Learner l(v, vocab_size, special_tokens);
  l.add_words(counts);
  l.run();
  return v;
}

nlohmann::ordered_json tokenizer_json(const BpeVocab& v, const PreTokenizer& pre) {
  using nlohmann::ordered_json;
  ordered_json added = ordered_json::array();
  for (int64_t i = 0; i < v.specials; ++i)
    added.push_back({{"id", i},
                     {"content", v.tokens[size_t(i)]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  // ordered_json's operator[] searches its keys linearly: append to the underlying vector instead,
  // checking for repeated keys with a hash set.
  ordered_json vocab = ordered_json::object();
  auto& entries = static_cast<ordered_json::object_t::Container&>(vocab.get_ref<ordered_json::object_t&>());
  std::unordered_set<std::string> seen;
  std::vector<std::string> key(v.tokens.size());  // the token as the file spells it
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    key[i] = int64_t(i) < v.specials ? v.tokens[i] : bytes_to_unicode(v.tokens[i]);
    if (!seen.insert(key[i]).second)
      throw error("special token '", v.tokens[i], "' is spelled like the byte-level token of another id (expected a different special token)");
    entries.emplace_back(key[i], i);
  }
  ordered_json merges = ordered_json::array();
  for (auto [a, b] : v.merges) merges.push_back(key[a] + " " + key[b]);

  ordered_json pre_json;
  ordered_json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  if (pre.pattern == SplitPattern::Gpt2 && !pre.split_digits) {
    pre_json = byte_level;
  } else if (pre.split_digits) {
    MOE_CHECK(pre.pattern == SplitPattern::Gpt2, "digit splitting goes with the GPT-2 pattern");
    ordered_json digits = {{"type", "Digits"}, {"individual_digits", true}};
    pre_json = {{"type", "Sequence"}, {"pretokenizers", ordered_json::array({digits, byte_level})}};
  } else {
    byte_level["use_regex"] = false;
    ordered_json split = {{"type", "Split"}, {"pattern", {{"Regex", kLlama3Regex}}}, {"behavior", "Isolated"}, {"invert", false}};
    pre_json = {{"type", "Sequence"}, {"pretokenizers", ordered_json::array({split, byte_level})}};
  }
  ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = pre_json;
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"vocab", vocab},
                {"merges", merges}};
  return j;
}

}  // namespace moe
