#include "data_pipeline/megatron.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>

#include "framework/error.h"
#include "framework/sha256.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
constexpr size_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Writes a Megatron index for the document pieces of stream tokens [lo, hi): one sequence per piece,
// one document per sequence. Three passes over the document starts keep memory flat. Returns
// {sequences, sha256 of the file}.
std::pair<int64_t, std::string> write_index(const FinishInput& in, int64_t lo, int64_t hi, const std::string& path) {
  const std::string starts = in.dir + "/doc-starts.u64";
  int64_t n = 0;
  DocStarts(starts, in.stream.doc_starts).pieces(lo, hi, [&](int64_t, int64_t) { ++n; });
  OutFile f = OutFile::create(path + ".tmp");
  Sha256 sha;
  auto put = [&](const void* p, size_t bytes) {
    f.write(p, bytes);
    sha.update(p, bytes);
  };
  const uint64_t version = 1, count = uint64_t(n), doc_entries = uint64_t(n + 1);
  const uint8_t code = uint8_t(megatron_code(in.header.width));
  put(kMagic, 9), put(&version, 8), put(&code, 1), put(&count, 8), put(&doc_entries, 8);
  DocStarts(starts, in.stream.doc_starts).pieces(lo, hi, [&](int64_t b, int64_t e) {
    if (e - b > std::numeric_limits<int32_t>::max())
      throw error(path, ": a document of ", e - b, " tokens (expected at most 2^31 - 1: Megatron stores sizes as int32)");
    const int32_t size = int32_t(e - b);
    put(&size, 4);
  });
  DocStarts(starts, in.stream.doc_starts).pieces(lo, hi, [&](int64_t b, int64_t) {
    const int64_t pointer = (b - lo) * in.header.width;
    put(&pointer, 8);
  });
  for (int64_t i = 0; i <= n; ++i) put(&i, 8);
  f.sync();
  f.close();
  rename_path(path + ".tmp", path);
  return {n, sha.hex()};
}

}  // namespace

int megatron_code(int width) { return width == 2 ? 8 : 4; }

MegatronIndex parse_megatron_index(const std::string& path, const uint8_t* data, size_t size) {
  const char* kRerun = "(expected a Megatron-LM .idx file: MMIDIDX header, version 1)";
  if (size < kHeaderBytes || std::memcmp(data, kMagic, 9) != 0) throw error(path, ": not a Megatron index ", kRerun);
  if (uint64_t v = load<uint64_t>(data + 9); v != 1) throw error(path, ": index version ", v, " ", kRerun);
  MegatronIndex ix;
  ix.dtype_code = data[17];
  switch (ix.dtype_code) {
    case 1: ix.item_size = 1; break;
    case 2: ix.item_size = 1, ix.is_signed = true; break;
    case 3: ix.item_size = 2, ix.is_signed = true; break;
    case 4: ix.item_size = 4, ix.is_signed = true; break;
    case 5: ix.item_size = 8, ix.is_signed = true; break;
    case 8: ix.item_size = 2; break;
    case 6:
    case 7: throw error(path, ": dtype code ", ix.dtype_code, " is a float type (expected integer token ids: 1-5 or 8)");
    default: throw error(path, ": unknown dtype code ", ix.dtype_code, " (expected 1-8)");
  }
  const uint64_t n = load<uint64_t>(data + 18), d = load<uint64_t>(data + 26);
  const uint64_t body = size - kHeaderBytes;
  // N sizes + N pointers + D document entries; Megatron-Core may append N one-byte sequence modes.
  if (n > body / 12 || d == 0 || d > body / 8 || (12 * n + 8 * d != body && 13 * n + 8 * d != body))
    throw error(path, ": ", size, " bytes do not hold ", n, " sequences and ", d, " document entries ", kRerun);
  ix.sequences = int64_t(n);
  ix.documents = int64_t(d) - 1;
  const uint8_t* sizes = data + kHeaderBytes;
  const uint8_t* pointers = sizes + 4 * n;
  const uint8_t* docs = pointers + 8 * n;
  int64_t at = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const int32_t s = load<int32_t>(sizes + 4 * i);
    const int64_t p = load<int64_t>(pointers + 8 * i);
    if (s < 0) throw error(path, ": sequence ", i, " has size ", s, " (expected >= 0)");
    if (p != at * ix.item_size)
      throw error(path, ": sequence ", i, " starts at byte ", p, " of .bin, not ", at * ix.item_size,
                  " (expected sequences back to back, as Megatron-LM writes them)");
    at += s;
  }
  ix.tokens = at;
  int64_t prev = 0;
  for (uint64_t i = 0; i < d; ++i) {
    const int64_t v = load<int64_t>(docs + 8 * i);
    if ((i == 0 && v != 0) || v < prev || v > int64_t(n))
      throw error(path, ": document index entry ", i, " is ", v, " (expected 0 first, then rising to at most ", n, ")");
    prev = v;
  }
  return ix;
}

std::vector<int64_t> megatron_document_starts(const uint8_t* data, size_t size) {
  const uint64_t n = load<uint64_t>(data + 18), d = load<uint64_t>(data + 26);
  MOE_CHECK(size >= kHeaderBytes + 12 * n + 8 * d, "megatron index of ", size, " bytes");
  const uint8_t* sizes = data + kHeaderBytes;
  const uint8_t* docs = sizes + 12 * n;
  std::vector<int64_t> seq_start(size_t(n) + 1, 0);
  for (uint64_t i = 0; i < n; ++i) seq_start[i + 1] = seq_start[i] + load<int32_t>(sizes + 4 * i);
  std::vector<int64_t> out;
  for (uint64_t j = 0; j + 1 < d; ++j) {
    const int64_t s = seq_start[size_t(load<int64_t>(docs + 8 * j))];
    if (out.empty() || s > out.back()) out.push_back(s);  // empty documents start nothing
  }
  return out;
}

std::pair<nlohmann::ordered_json, nlohmann::ordered_json> finish_megatron(const FinishInput& in) {
  const ShardHeader& h = in.header;
  const int64_t total = in.stream.tokens, cut = in.cut;
  const int w = h.width;
  MOE_CHECK(cut > 0 && cut <= total);
  const std::string train = in.dir + "/train", val = in.dir + "/val";
  const std::string name = kMegatronName, train_bin = train + "/" + name + ".bin", val_bin = val + "/" + name + ".bin";

  // Val first: its tokens are copied out of the stream before the train side is cut.
  nlohmann::json rec;
  if (in.val_record) {
    rec = *in.val_record;
  } else {
    fs::remove_all(val);
    fs::create_directories(val);
    OutFile out = OutFile::create(val_bin + ".tmp");
    Sha256 sha;
    uint64_t bytes = 0;
    std::vector<uint8_t> buf;
    read_tokens(train_bin, w, 0, cut, total, [&](const uint32_t* ids, size_t n) {
      bytes += in.bytes_of(ids, n);
      buf.resize(n * size_t(w));
      for (size_t i = 0; i < n; ++i)
        for (int b = 0; b < w; ++b) buf[i * size_t(w) + size_t(b)] = uint8_t(ids[i] >> (8 * b));
      out.write(buf.data(), buf.size());
      sha.update(buf.data(), buf.size());
    });
    out.sync();
    out.close();
    rename_path(val_bin + ".tmp", val_bin);
    sync_dir(val);
    rec = {{"bytes", bytes}, {"sha256_bin", sha.hex()}};
    in.save_val(rec);
  }
  const uint64_t want = uint64_t(cut) * uint64_t(w);
  if (fs::file_size(train_bin) > want) fs::resize_file(train_bin, want);

  auto entry = [&](const std::string& dir, int64_t lo, int64_t hi, const std::string& sha_bin) {
    auto [pieces, sha_idx] = write_index(in, lo, hi, dir + "/" + name + ".idx");
    return nlohmann::ordered_json::array({{{"file", name + ".bin"},
                                           {"tokens", hi - lo},
                                           {"documents", pieces},
                                           {"sha256_bin", sha_bin},
                                           {"sha256_idx", sha_idx}}});
  };
  auto train_files = entry(train, 0, cut, sha256_file(train_bin));
  auto val_files = entry(val, cut, total, rec.at("sha256_bin").get<std::string>());
  const uint64_t val_bytes = rec.at("bytes").get<uint64_t>();
  const char* dtype = w == 2 ? "u16" : "i32";
  return {write_manifest(train, "train", "megatron", h, dtype, in.text_bytes - val_bytes, std::move(train_files)),
          write_manifest(val, "val", "megatron", h, dtype, val_bytes, std::move(val_files))};
}

}  // namespace moe
