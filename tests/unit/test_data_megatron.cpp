// Megatron-LM indexed datasets: files built byte by byte from the format's description are read
// by TokenDataset (by prefix, by file, by folder); `--format megatron` output is checked field by
// field and reads back like the shard output; malformed indexes are clear errors; and, when
// /usr/bin/python3 has numpy, a writer and a reader that follow Megatron's MMapIndexedDataset code
// agree with ours.
#include <gtest/gtest.h>

#include <cstdlib>

#include "data_pipeline/megatron.h"
#include "data_pipeline/shards.h"
#include "test_data_util.h"

namespace moe {
namespace {

using test::error_of;
using test::read_file;
using test::TempDir;
using test::write_file;
namespace fs = std::filesystem;

template <class T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// An index for sequences of the given sizes, back to back; doc_index as given.
std::string index_bytes(uint8_t code, int item, const std::vector<int32_t>& sizes, const std::vector<int64_t>& docs) {
  std::string s("MMIDIDX\0\0", 9);
  put<uint64_t>(s, 1);
  put<uint8_t>(s, code);
  put<uint64_t>(s, sizes.size());
  put<uint64_t>(s, docs.size());
  for (int32_t n : sizes) put(s, n);
  int64_t at = 0;
  for (int32_t n : sizes) put(s, at), at += int64_t(n) * item;
  for (int64_t d : docs) put(s, d);
  return s;
}

TEST(Megatron, ReadsAHandBuiltPair) {
  TempDir t;
  // Two documents: sequences [5 6 7] [8 9] | [300 1 2 3]; u16 (code 8).
  std::string bin;
  for (uint16_t v : {5, 6, 7, 8, 9, 300, 1, 2, 3}) put(bin, v);
  write_file(t / "m/corpus_text_document.bin", bin);
  write_file(t / "m/corpus_text_document.idx", index_bytes(8, 2, {3, 2, 4}, {0, 2, 3}));
  for (std::string path : {t / "m/corpus_text_document", t / "m/corpus_text_document.idx", t / "m/corpus_text_document.bin",
                           t / "m", t / "m/"}) {
    auto d = TokenDataset::open(path);
    ASSERT_EQ(d.num_tokens(), 9) << path;
    EXPECT_EQ(d.vocab_size(), 301);  // no manifest: the largest id + 1
    EXPECT_EQ(d.tokenizer_name(), "");
    std::vector<int32_t> all(9);
    d.read(0, 9, all.data());
    EXPECT_EQ(all, (std::vector<int32_t>{5, 6, 7, 8, 9, 300, 1, 2, 3}));
    EXPECT_EQ(d.manifest()["documents"], 3);  // sequences
    d.verify();
    EXPECT_EQ(TokenDataset::open(path, "val").num_tokens(), 0);  // a bare pair is all train
  }
  // Several pairs in a folder: the split's name picks one.
  write_file(t / "m/valid_text_document.bin", bin.substr(0, 4));
  write_file(t / "m/valid_text_document.idx", index_bytes(8, 2, {2}, {0, 1}));
  EXPECT_EQ(TokenDataset::open(t / "m", "val").num_tokens(), 2);
  EXPECT_NE(error_of([&] { TokenDataset::open(t / "m", "train"); }).find("holds several Megatron pairs"), std::string::npos);

  // Other integer dtypes: i32 (4), i64 (5), u8 (1).
  for (auto [code, item] : {std::pair{4, 4}, std::pair{5, 8}, std::pair{1, 1}}) {
    std::string b;
    for (int64_t v : {1, 2, 250}) b.append(reinterpret_cast<const char*>(&v), size_t(item));
    write_file(t / "d/x.bin", b);
    write_file(t / "d/x.idx", index_bytes(uint8_t(code), item, {3}, {0, 1}));
    auto d = TokenDataset::open(t / "d/x");
    std::vector<int32_t> v(3);
    d.read(0, 3, v.data());
    EXPECT_EQ(v, (std::vector<int32_t>{1, 2, 250})) << code;
  }
}

TEST(Megatron, MalformedIndexesAreErrors) {
  TempDir t;
  std::string bin;
  for (int32_t v : {1, 2, 3, 4}) put(bin, v);
  auto expect = [&](const std::string& idx, const std::string& what, const std::string& b = "") {
    write_file(t / "x.bin", b.empty() ? bin : b);
    write_file(t / "x.idx", idx);
    std::string msg = error_of([&] { TokenDataset::open(t / "x"); });
    EXPECT_EQ(msg.rfind(t / "x.", 0), 0u) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  };
  std::string good = index_bytes(4, 4, {2, 2}, {0, 2});
  EXPECT_NO_THROW((write_file(t / "x.bin", bin), write_file(t / "x.idx", good), TokenDataset::open(t / "x")));
  expect("TNTIDX\0\0" + good.substr(8), "not a Megatron index");
  std::string v2 = good;
  v2[9] = 2;
  expect(v2, "index version 2");
  expect(index_bytes(6, 4, {2, 2}, {0, 2}), "dtype code 6 is a float type");
  expect(index_bytes(9, 4, {2, 2}, {0, 2}), "unknown dtype code 9");
  expect(good.substr(0, good.size() - 8), "do not hold 2 sequences and 2 document entries");
  std::string gap = good;
  gap[9 + 8 + 1 + 8 + 8 + 8 + 8] = 12;  // pointer of sequence 1: 12, not 8
  expect(gap, "sequence 1 starts at byte 12 of .bin, not 8");
  expect(index_bytes(4, 4, {2, 2}, {1, 2}), "document index entry 0 is 1");
  expect(good, "size 12 bytes", bin.substr(0, 12));
  std::string neg;
  for (int32_t v : {1, -2, 3, 4}) put(neg, v);
  expect(good, "token -2 at offset 1 is negative", neg);
}

PreprocessOptions options(const TempDir& t, const std::string& format) {
  PreprocessOptions o;
  o.inputs = {t / "in"};
  o.output = t / format;
  o.format = format;
  o.val_fraction = 0.2;
  o.workers = 2;
  o.shard_tokens = 7;
  o.progress_seconds = 0;
  return o;
}

TEST(Megatron, PreprocessWritesThePairPerSplit) {
  TempDir t;
  write_file(t / "in/a.jsonl", "{\"text\": \"hello\"}\n{\"text\": \"ab\"}\n{\"text\": \"\"}\n{\"text\": \"xyz\"}\n");
  preprocess(options(t, "megatron"));
  preprocess(options(t, "shards"));
  // Stream "hello\0ab\0xyz\0" (13 tokens); val = ceil(0.2 * 13) = 3 = "yz\0": train "hello\0ab\0x".
  std::string idx = read_file(t / "megatron/train/data_text_document.idx");
  std::string want = index_bytes(8, 2, {6, 3, 1}, {0, 1, 2, 3});
  EXPECT_EQ(idx, want);
  EXPECT_EQ(read_file(t / "megatron/val/data_text_document.idx"), index_bytes(8, 2, {3}, {0, 1}));
  std::string train_bin = read_file(t / "megatron/train/data_text_document.bin");
  EXPECT_EQ(train_bin.size(), 20u);
  EXPECT_EQ(train_bin[0], 'h');
  auto m = nlohmann::json::parse(read_file(t / "megatron/train/manifest.json"));
  EXPECT_EQ(m["format"], "megatron");
  EXPECT_EQ(m["dtype"], "u16");
  EXPECT_EQ(m["documents"], 3);
  EXPECT_EQ(m["bytes"], 8);  // "hello" "ab" "x"
  for (const char* split : {"train", "val"}) {
    auto a = TokenDataset::open(t / "megatron", split), b = TokenDataset::open(t / "shards", split);
    a.verify();
    ASSERT_EQ(a.num_tokens(), b.num_tokens());
    std::vector<int32_t> x(size_t(a.num_tokens())), y(x.size());
    a.read(0, a.num_tokens(), x.data());
    b.read(0, b.num_tokens(), y.data());
    EXPECT_EQ(x, y) << split;
    EXPECT_EQ(a.vocab_size(), 256);
    EXPECT_EQ(a.tokenizer_name(), "byte");
  }
  // A corrupt .bin is found by verify (sha256), a swapped index by open.
  std::string bin = train_bin;
  bin[2] ^= 1;
  write_file(t / "megatron/train/data_text_document.bin", bin);
  EXPECT_NE(error_of([&] { TokenDataset::open(t / "megatron").verify(); }).find("sha256 differs"), std::string::npos);
  write_file(t / "megatron/train/data_text_document.idx", index_bytes(8, 2, {6, 4}, {0, 1, 2}));
  EXPECT_NE(error_of([&] { TokenDataset::open(t / "megatron"); }).find("the manifest says 3 and 10"), std::string::npos);
}

// The Python side follows megatron/core/datasets/indexed_dataset.py (_IndexWriter.write and
// _IndexReader.__init__) line by line, with numpy.
const char* kPython = R"PY(
import struct, sys, numpy
d = sys.argv[1]
# Writer: three documents, sequences as Megatron's preprocess_data.py makes them, int32 tokens.
seqs = [[11, 12, 13], [70000], [1, 2], [3]]
doc_idx = [0, 1, 3, 4]
with open(d + "/py.bin", "wb") as f:
    for s in seqs: f.write(numpy.array(s, dtype=numpy.int32).tobytes(order="C"))
with open(d + "/py.idx", "wb") as f:
    f.write(b"MMIDIDX\x00\x00"); f.write(struct.pack("<Q", 1)); f.write(struct.pack("<B", 4))
    sizes = [len(s) for s in seqs]
    f.write(struct.pack("<Q", len(sizes))); f.write(struct.pack("<Q", len(doc_idx)))
    f.write(numpy.array(sizes, dtype=numpy.int32).tobytes(order="C"))
    ptr, pointers = 0, []
    for s in sizes: pointers.append(ptr); ptr += s * 4
    f.write(numpy.array(pointers, dtype=numpy.int64).tobytes(order="C"))
    f.write(numpy.array(doc_idx, dtype=numpy.int64).tobytes(order="C"))
# Reader, on our train split.
p = d + "/megatron/train/data_text_document"
buf = memoryview(numpy.memmap(p + ".idx", mode="r", order="C"))
assert bytes(buf[:9]) == b"MMIDIDX\x00\x00"
assert struct.unpack("<Q", buf[9:17])[0] == 1
dtype = {1: numpy.uint8, 4: numpy.int32, 8: numpy.uint16}[struct.unpack("<B", buf[17:18])[0]]
n, dc = struct.unpack("<Q", buf[18:26])[0], struct.unpack("<Q", buf[26:34])[0]
sizes = numpy.frombuffer(buf, dtype=numpy.int32, count=n, offset=34)
pointers = numpy.frombuffer(buf, dtype=numpy.int64, count=n, offset=34 + sizes.nbytes)
docs = numpy.frombuffer(buf, dtype=numpy.int64, count=dc, offset=34 + sizes.nbytes + pointers.nbytes)
data = numpy.memmap(p + ".bin", mode="r", dtype=dtype)
seqs = [bytes(numpy.frombuffer(data, dtype=dtype, count=int(s), offset=int(q)).astype(numpy.uint8)) for s, q in zip(sizes, pointers)]
assert docs[0] == 0 and docs[-1] == n
print(repr(b"|".join(seqs)))
)PY";

TEST(Megatron, AgreesWithMegatronsOwnCodeInNumpy) {
  if (std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) GTEST_SKIP() << "no numpy for /usr/bin/python3";
  TempDir t;
  write_file(t / "in/a.txt", "first doc");
  write_file(t / "in/b.txt", "second");
  auto o = options(t, "megatron");
  o.val_fraction = 0;
  o.shard_tokens = 1000;
  preprocess(o);
  write_file(t / "check.py", kPython);
  std::string cmd = "/usr/bin/python3 " + t / "check.py" + " " + t.path.string() + " > " + t / "py.out";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(t / "py.out");
  EXPECT_EQ(read_file(t / "py.out"), "b'first doc\\x00|second\\x00'\n");
  auto d = TokenDataset::open(t / "py");
  EXPECT_EQ(d.num_tokens(), 7);
  EXPECT_EQ(d.vocab_size(), 70001);
  std::vector<int32_t> v(7);
  d.read(0, 7, v.data());
  EXPECT_EQ(v, (std::vector<int32_t>{11, 12, 13, 70000, 1, 2, 3}));
  EXPECT_EQ(d.manifest()["documents"], 4);
}

}  // namespace
}  // namespace moe
