#include "data_pipeline/sentencepiece.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "data_pipeline/bpe.h"
#include "data_pipeline/jsonl.h"
#include "framework/error.h"
#include "framework/sha256.h"

namespace moe {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581, SentencePiece's whitespace
constexpr size_t kPartBytes = 4096;

bool valid_utf8(std::string_view s) { return count_invalid_utf8(s) == 0; }

// True when `piece` holds whitespace ("▁" or ' ') right after another character: the model joins
// a word with the whitespace after it, so text cannot be cut before a space (CutRule::BeforeSpace).
bool space_after_char(std::string_view piece) {
  bool after_space = true;  // the start of the piece counts as whitespace
  for (size_t p = 0; p < piece.size();) {
    const bool mark = piece.substr(p, 3) == kSpaceMark, space = mark || piece[p] == ' ';
    if (space && !after_space) return true;
    after_space = space;
    p += mark ? 3 : 1;
  }
  return false;
}

// The protobuf wire format, just enough to list a ModelProto's pieces (field 1, each a SentencePiece
// message whose field 1 is the piece text) without libsentencepiece. Returns false when the bytes
// are not a well-formed message; libsentencepiece's parser then says so.
bool read_varint(std::string_view& in, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    const uint8_t b = uint8_t(in.front());
    in.remove_prefix(1);
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

// Calls f(field, bytes) for every length-delimited field of a message and skips the others.
template <class F>
bool for_each_bytes_field(std::string_view in, F&& f) {
  while (!in.empty()) {
    uint64_t tag = 0, v = 0;
    if (!read_varint(in, tag)) return false;
    switch (tag & 7) {
      case 0: if (!read_varint(in, v)) return false; break;
      case 1: if (in.size() < 8) return false; in.remove_prefix(8); break;
      case 5: if (in.size() < 4) return false; in.remove_prefix(4); break;
      case 2:
        if (!read_varint(in, v) || v > in.size()) return false;
        f(tag >> 3, in.substr(0, size_t(v)));
        in.remove_prefix(size_t(v));
        break;
      default: return false;  // groups: SentencePiece never writes them
    }
  }
  return true;
}

// libsentencepiece builds a trie of the pieces, and its trie builder throws an exception that
// terminates the process (it passes through code built without unwinding) on an empty piece, a NUL
// byte in one, or the same piece twice (found by tests/fuzz/fuzz_sentencepiece). Such a model is
// refused here first, naming the piece.
void check_pieces(std::string_view model, const std::string& name) {
  std::vector<std::string_view> pieces;
  const bool ok = for_each_bytes_field(model, [&](uint64_t field, std::string_view bytes) {
    if (field != 1) return;
    std::string_view piece;
    bool has_piece = false;
    for_each_bytes_field(bytes, [&](uint64_t f, std::string_view b) {
      if (f == 1) piece = b, has_piece = true;  // the last one wins, as in protobuf
    });
    if (has_piece) pieces.push_back(piece);
  });
  if (!ok) return;
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (pieces[i].empty())
      throw error(name, ": piece ", i, " is empty (expected a SentencePiece model as spm_train writes it)");
    if (pieces[i].find('\0') != std::string_view::npos)
      throw error(name, ": piece ", i, " holds a NUL byte (expected a SentencePiece model as spm_train writes it)");
  }
  std::vector<std::string_view> sorted = pieces;
  std::sort(sorted.begin(), sorted.end());
  if (auto dup = std::adjacent_find(sorted.begin(), sorted.end()); dup != sorted.end())
    throw error(name, ": piece '", std::string(*dup), "' appears twice (expected every piece once)");
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(std::string name, std::string hash) : name_(std::move(name)), hash_(std::move(hash)) {}

  void load(std::string_view model);

  std::vector<uint32_t> encode(std::string_view text) const override { return encode_long(text, false); }

  // The text after a cut (CutRule::BeforeSpace), as it would be encoded inside the whole.
  std::vector<uint32_t> encode_continuation(std::string_view text) const override { return encode_long(text, true); }

  std::string decode(const std::vector<uint32_t>& ids) const override {
    for (size_t i = 0; i < ids.size(); ++i) check_id(ids[i], i);
    if (!byte_fallback_) return decode_part(ids, 0, ids.size(), false);
    // SentencePiece decodes byte pieces that do not form UTF-8 as U+FFFD; they are raw bytes here
    // (what encode made of them), the pieces around them decoded by libsentencepiece.
    std::string text;
    size_t from = 0;
    for (size_t i = 0; i < ids.size();) {
      if (byte_of_[ids[i]] < 0) {
        ++i;
        continue;
      }
      size_t j = i;
      std::string run;
      while (j < ids.size() && byte_of_[ids[j]] >= 0) run += char(byte_of_[ids[j++]]);
      if (!valid_utf8(run)) {
        text += decode_part(ids, from, i, !text.empty());
        text += run;
        from = j;
      }
      i = j;
    }
    return text + decode_part(ids, from, ids.size(), !text.empty());
  }

  std::string token_text(uint32_t id) const override {
    check_id(id, 0);
    if (sp_.IsControl(int(id))) return "";
    if (byte_of_[id] >= 0) return std::string(1, char(byte_of_[id]));
    if (sp_.IsUnknown(int(id))) return unk_text_;
    std::string text;
    std::string_view piece = sp_.IdToPiece(int(id));
    for (size_t p = 0; p < piece.size();) {
      const bool mark = piece.substr(p, 3) == kSpaceMark;
      text += mark ? ' ' : piece[p];
      p += mark ? 3 : 1;
    }
    return text;
  }

  int64_t vocab_size() const override { return int64_t(byte_of_.size()); }
  uint32_t eos_id() const override { return eos_; }
  std::string name() const override { return name_; }
  std::string hash() const override { return hash_; }
  CutRule cut_rule() const override { return cut_rule_; }

 private:
  void check_id(uint32_t id, size_t at) const {
    if (id >= byte_of_.size())
      throw error(name_, ": token id ", id, " at position ", at, " is not in the vocabulary (expected 0..",
                  byte_of_.size() - 1, ")");
  }

  // Long text goes to libsentencepiece in parts of about kPartBytes cut where the cut rule allows,
  // which gives the same ids: SentencePiece is ~3x slower on a 1 MB text than on its lines.
  std::vector<uint32_t> encode_long(std::string_view text, bool continuation) const {
    if (cut_rule_ != CutRule::BeforeSpace || text.size() <= 2 * kPartBytes)
      return continuation ? encode_after_cut(text) : encode_part(text);
    std::vector<uint32_t> ids;
    for (size_t from = 0; from < text.size();) {
      const size_t to = next_cut(cut_rule_, text, std::min(text.size(), from + kPartBytes));
      const std::string_view part = text.substr(from, to - from);
      const std::vector<uint32_t> part_ids = from == 0 && !continuation ? encode_part(part) : encode_after_cut(part);
      ids.insert(ids.end(), part_ids.begin(), part_ids.end());
      from = to;
    }
    return ids;
  }

  std::vector<uint32_t> encode_part(std::string_view text) const {
    if (!byte_fallback_ || valid_utf8(text)) return encode_plain(text);
    return encode_spans(text, 0);
  }

  // Encoded behind one character ('a', printable ASCII like the one before any BeforeSpace cut)
  // whose pieces are then dropped, so neither a dummy prefix nor the stripping of leading
  // whitespace applies. After a cut the text starts with a space, and no piece joins 'a' to it:
  // the ids then start with those of "a" alone, and dropping them needs no spans (the faster path).
  std::vector<uint32_t> encode_after_cut(std::string_view text) const {
    std::string s;
    s.reserve(text.size() + 1);
    s += 'a';
    s += text;
    if (text.starts_with(' ') && (!byte_fallback_ || valid_utf8(text))) {
      std::vector<uint32_t> ids = encode_plain(s);
      if (ids.size() >= sentinel_.size() && std::equal(sentinel_.begin(), sentinel_.end(), ids.begin())) {
        ids.erase(ids.begin(), ids.begin() + ptrdiff_t(sentinel_.size()));
        return ids;
      }
    }
    return encode_spans(s, 1);
  }

  std::vector<uint32_t> encode_plain(std::string_view text) const {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    MOE_CHECK(status.ok(), name_, ": SentencePiece encode failed: ", status.ToString());
    return std::vector<uint32_t>(ids.begin(), ids.end());
  }

  // libsentencepiece's pieces of `s` with their spans in `s`: those of the first `skip` bytes are
  // dropped, and with byte fallback a piece whose text is not UTF-8 (SentencePiece read it as
  // U+FFFD) becomes the byte pieces of that text.
  std::vector<uint32_t> encode_spans(std::string_view s, size_t skip) const {
    const auto spt = sp_.EncodeAsImmutableProto(s);
    std::vector<uint32_t> ids;
    ids.reserve(spt.pieces_size());
    size_t lead_bytes = 0;  // zero-width byte pieces just appended: the first bytes of a fallback character
    for (size_t i = 0; i < spt.pieces_size(); ++i) {
      const auto piece = spt.pieces(int(i));
      const size_t begin = piece.begin(), end = piece.end();
      if (begin < skip) {
        // A piece across the cut: no known safe place (CutRule::Nowhere); the ids near it may
        // differ from those of the whole text.
        if (end > skip) return encode_plain(s.substr(skip));
        continue;
      }
      if (begin == end) {  // a dummy prefix "▁", or a fallback byte before the character's last
        ids.push_back(piece.id());
        lead_bytes = byte_of_[piece.id()] >= 0 ? lead_bytes + 1 : 0;
        continue;
      }
      const std::string_view text = s.substr(begin, end - begin);
      if (byte_fallback_ && !valid_utf8(text)) {
        ids.resize(ids.size() - lead_bytes);
        for (unsigned char c : text) ids.push_back(byte_id_[c]);
      } else {
        ids.push_back(piece.id());
      }
      lead_bytes = 0;
    }
    return ids;
  }

  // libsentencepiece's decode of ids[from, to). SentencePiece drops the leading space of a text
  // (its dummy prefix); `after_text`: these ids continue a text, so a leading space stays. Decoded
  // behind the byte piece 'a', which is then removed.
  std::string decode_part(const std::vector<uint32_t>& ids, size_t from, size_t to, bool after_text) const {
    if (from == to) return "";
    std::vector<int> part;
    part.reserve(to - from + 1);
    if (after_text) part.push_back(int(byte_id_[uint8_t('a')]));
    for (size_t i = from; i < to; ++i) part.push_back(int(ids[i]));
    std::string text;
    const auto status = sp_.Decode(part, &text);
    MOE_CHECK(status.ok(), name_, ": SentencePiece decode failed: ", status.ToString());
    if (after_text) {
      MOE_CHECK(!text.empty() && text[0] == 'a');
      text.erase(0, 1);
    }
    return text;
  }

  std::string name_, hash_;
  sentencepiece::SentencePieceProcessor sp_;
  std::vector<int16_t> byte_of_;  // by id: the byte of a <0xNN> piece, else -1
  uint32_t byte_id_[256] = {};
  bool byte_fallback_ = false;    // all 256 byte pieces exist
  uint32_t eos_ = 0;
  std::string unk_text_;          // what an unknown piece decodes to (" ⁇ " by default)
  std::vector<uint32_t> sentinel_;  // the ids of "a" (encode_continuation)
  CutRule cut_rule_ = CutRule::BeforeSpace;
};

void SentencePieceTokenizer::load(std::string_view model) {
  check_pieces(model, name_);
  const auto status = sp_.LoadFromSerializedProto(model);
  if (!status.ok()) {
    // libsentencepiece says "<source>(line) [ParseFromArray(...)]" when the bytes are no protobuf.
    std::string why = status.message();
    if (why.find("ParseFromArray") != std::string::npos) why = "the file does not parse as a protobuf";
    else if (why.ends_with(".")) why.pop_back();
    throw error(name_, ": not a SentencePiece model (", why,
                "; expected a SentencePiece .model protobuf as spm_train writes it)");
  }
  const int n = sp_.GetPieceSize();
  if (n <= 0) throw error(name_, ": the SentencePiece model has no pieces (expected a vocabulary)");
  byte_of_.assign(size_t(n), -1);
  int bytes = 0;
  for (int id = 0; id < n; ++id) {
    const std::string& piece = sp_.IdToPiece(id);
    unsigned b = 0;
    char end = 0;
    if (sp_.IsByte(id) && std::sscanf(piece.c_str(), "<0x%2X>%c", &b, &end) == 1 && piece.size() == 6) {
      byte_of_[size_t(id)] = int16_t(b);
      byte_id_[b] = uint32_t(id);
      ++bytes;
      continue;
    }
    if (!sp_.IsControl(id) && !sp_.IsUnknown(id) && space_after_char(piece)) cut_rule_ = CutRule::Nowhere;
  }
  byte_fallback_ = bytes == 256;
  sentinel_ = encode_plain("a");
  if (sp_.unk_id() >= 0) unk_text_ = decode_part({uint32_t(sp_.unk_id())}, 0, 1, false);

  if (sp_.eos_id() >= 0) {
    eos_ = uint32_t(sp_.eos_id());
    return;
  }
  for (const char* eos : kEosCandidates) {
    const int id = sp_.PieceToId(eos);
    if (id >= 0 && sp_.IdToPiece(id) == eos) return void(eos_ = uint32_t(id));
  }
  throw error(name_, ": no end-of-document token (expected an eos_id in the model, as spm_train sets by default, "
              "or one of the pieces '<|endoftext|>', '<|end_of_text|>' or '</s>')");
}

}  // namespace

std::unique_ptr<Tokenizer> parse_sentencepiece_tokenizer(std::string_view model, const std::string& name) {
  auto tok = std::make_unique<SentencePieceTokenizer>(name, sha256_hex(model));
  tok->load(model);
  return tok;
}

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, ": cannot read tokenizer file (expected a SentencePiece .model)");
  std::stringstream s;
  s << in.rdbuf();
  return parse_sentencepiece_tokenizer(s.str(), path);
}

}  // namespace moe
