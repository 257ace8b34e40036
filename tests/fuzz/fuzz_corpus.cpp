// Corpus files as preprocess reads them (data_pipeline/corpus.h over input_stream.h): .txt or
// .jsonl, plain, gzip or zstd, in pieces, from the start or from a position a killed run recorded.
// Input: one options byte, then the file. Its bits: 0-1 compression (none, gzip, zstd, zstd); 2
// .jsonl; 3 split_docs; 4 small pieces (7 bytes); 5 the harness compresses the bytes itself (so
// the decoder sees valid streams, not only garbage), 6 and then flips one of their bytes.
// Properties: a plain or harness-compressed whole .txt comes back byte for byte as its pieces; and
// a reader opened at any piece's position hands out the same pieces from there (resume).
#include <zlib.h>
#include <zstd.h>

#include "data_pipeline/corpus.h"
#include "tests/fuzz/fuzz_common.h"

using namespace moe;

static std::string gzip(std::string_view in) {
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, in.size()) + 32, '\0');
  z.next_in = (Bytef*)in.data();
  z.avail_in = uInt(in.size());
  z.next_out = (Bytef*)out.data();
  z.avail_out = uInt(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

static std::string zstd(std::string_view in) {
  std::string out(ZSTD_compressBound(in.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 3));
  return out;
}

static std::vector<Document> read_all(const std::vector<CorpusFile>& files, const ReaderOptions& opt,
                                      InputPosition start = {}) {
  DocumentReader reader(files, opt, start);
  std::vector<Document> docs, batch;
  while (reader.next_batch(64, batch))
    for (Document& d : batch) docs.push_back(std::move(d));
  return docs;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const int compression = mode & 3;
  const bool jsonl = mode & 4, harness_compresses = mode & 32;
  std::string bytes = text;
  if (harness_compresses && compression) {
    bytes = compression == 1 ? gzip(text) : zstd(text);
    if ((mode & 64) && !bytes.empty()) bytes[size_t(text.size() * 2654435761u) % bytes.size()] ^= 0x5a;
  }
  std::string path = fuzz::scratch_dir() + (jsonl ? "/in.jsonl" : "/in.txt");
  path += compression == 0 ? "" : compression == 1 ? ".gz" : ".zst";
  fuzz::write_file(path, bytes);

  ReaderOptions opt;
  opt.split_docs = mode & 8;
  opt.piece_bytes = (mode & 16) ? 7 : 0;
  opt.max_line_bytes = 4096;
  std::vector<CorpusFile> files;
  std::vector<Document> docs;
  if (fuzz::refused([&] {
        files = list_corpus({path});
        docs = read_all(files, opt);
      }))
    return 0;
  const bool exact = !(mode & 64) && (compression == 0 || harness_compresses);
  if (!jsonl && !opt.split_docs && exact) {
    std::string joined;
    for (const Document& d : docs) joined += d.text;
    fuzz::expect(joined == text, "the pieces of a whole .txt do not add up to the file");
  }
  for (size_t k : {size_t(1), docs.size() / 2}) {
    if (k >= docs.size()) continue;
    std::vector<Document> again = read_all(files, opt, docs[k].at);
    fuzz::expect(again.size() == docs.size() - k, "a reader opened at a piece's position gives a different count");
    for (size_t i = 0; i < again.size(); ++i)
      fuzz::expect(again[i].text == docs[k + i].text && again[i].line == docs[k + i].line &&
                       again[i].last == docs[k + i].last,
                   "a reader opened at a piece's position gives different pieces");
  }
  return 0;
}
