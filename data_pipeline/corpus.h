// The raw-text side of preprocess: which files make up a corpus, and reading them as documents.
//
// A .txt file is one document, or with split_docs one per blank-line-separated block; each
// non-blank line of a .jsonl file is one document (a JSON object whose `text_key` field holds the
// text). Any of them may be gzip- (.gz) or zstd-compressed (.zst). Long documents are handed out
// in pieces, so a multi-gigabyte file never has to fit in memory, and every piece carries the
// position it starts at: a reader opened there hands out the same pieces again (how a killed
// preprocess resumes).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data_pipeline/input_stream.h"
#include "data_pipeline/tokenizer.h"

namespace moe {

struct CorpusFile {
  std::string path;
  bool jsonl = false;
  Compression compression = Compression::None;
  uint64_t bytes = 0;    // on disk
  int64_t mtime_ns = 0;  // with `bytes`, tells a resumed run whether the file changed
};

// Expands `inputs` to the corpus files, sorted by path (duplicates dropped): a file is taken as is
// (.jsonl by its name without .gz/.zst, anything else is text); a folder contributes its *.txt and
// *.jsonl files, compressed or not, recursively. Throws moe::Error for a missing path or when no
// file is found.
std::vector<CorpusFile> list_corpus(const std::vector<std::string>& inputs);

// Where a piece starts.
struct InputPosition {
  uint32_t file = 0;      // index into the corpus file list
  uint64_t offset = 0;    // decompressed bytes of the file before the piece (.txt) or its line (.jsonl)
  int64_t line = 0;       // line breaks before `offset` (counted for .jsonl and split_docs only)
  int64_t doc_line = 0;   // 1-based line where the piece's document starts (split_docs only)
  bool mid_doc = false;   // the piece continues a document that starts before `offset`
};

// A document, or one piece of it: the pieces of a document come in order, the last with last = true.
struct Document {
  uint32_t file = 0;
  int64_t line = 0;        // 1-based line of a .jsonl document or a split_docs document; 0 for a whole .txt
  bool last = true;
  bool json = false;       // text is the raw .jsonl line (ReaderOptions::raw_jsonl): see jsonl_field()
  bool oversized = false;  // a .jsonl line longer than max_line_bytes (raw_jsonl only): text is empty
  InputPosition at;
  std::string text;
};

struct ReaderOptions {
  std::string text_key = "text";
  // > 0: text documents longer than this come in pieces of about this size (.jsonl ones never do).
  size_t piece_bytes = 0;
  // Where pieces may be cut (tokenizer.h): with a rule other than Anywhere, so that encoding the
  // pieces gives the ids of the whole document, a cut is looked for in the first piece_bytes of the
  // rest of the document, then up to 16 x piece_bytes; only text without one (for BPE: no line
  // break after a letter or digit in 16 MiB) is cut at a character boundary there. Anywhere: any
  // character boundary will do.
  CutRule cuts = CutRule::Anywhere;
  bool split_docs = false;  // a .txt file holds documents separated by blank (or whitespace-only) lines
  bool raw_jsonl = false;   // hand out .jsonl lines unparsed, for parsing in parallel later
  size_t max_line_bytes = size_t(64) << 20;
};

class DocumentReader {
 public:
  // Reads `files` from `start` (a position some piece carried; default: the beginning).
  DocumentReader(const std::vector<CorpusFile>& files, ReaderOptions opt, InputPosition start = {});
  DocumentReader(const std::vector<CorpusFile>& files, std::string text_key, size_t piece_bytes);
  ~DocumentReader();
  DocumentReader(const DocumentReader&) = delete;
  DocumentReader& operator=(const DocumentReader&) = delete;

  // Replaces `out` with the next documents or pieces, at least one and about `max_bytes` of text
  // in all. Returns false (and leaves `out` empty) once the corpus is exhausted.
  bool next_batch(size_t max_bytes, std::vector<Document>& out);
  // Bytes of the corpus files (compressed, as on disk) consumed so far, skipped ones included.
  uint64_t bytes_read() const;
  // bytes_read() once the start position was reached (known after the first next_batch).
  uint64_t start_bytes() const { return start_bytes_; }
  // "path" or "path:line", for error messages.
  std::string where(const Document& d) const;

 private:
  bool next(Document& d);
  void open_current();
  void close_current();
  bool refill(size_t want);
  char at(uint64_t o) const { return buf_[size_t(o - buf_off_)]; }
  std::string_view view(uint64_t from, uint64_t to) const;
  void advance_head(uint64_t to);
  void emit(Document& d, uint64_t end, bool last);
  bool next_whole_txt(Document& d);
  bool next_split_txt(Document& d);
  bool next_jsonl(Document& d);

  const std::vector<CorpusFile>& files_;
  ReaderOptions opt_;
  InputPosition start_;
  size_t file_ = 0;
  uint64_t bytes_before_ = 0;  // on-disk bytes of the files before file_
  uint64_t start_bytes_ = 0;
  std::unique_ptr<InputStream> in_;
  bool eof_ = false;

  // The decompressed bytes [buf_off_, buf_off_ + buf_.size()) of the open file. All positions below
  // are offsets in the file.
  std::string buf_;
  uint64_t buf_off_ = 0;
  uint64_t head_ = 0;      // start of the next piece or line
  int64_t head_line_ = 0;  // line breaks before head_
  int64_t doc_line_ = 0;
  bool in_doc_ = false;    // split_docs: head_ is inside a document
  bool mid_doc_ = false;   // a piece of the current document has been handed out
  bool doc_done_ = false;  // whole-file .txt: the last piece is out
  bool skipping_ = false;  // .jsonl: discarding the rest of an oversized line
  // split_docs scanning state: bytes before scan_ are classified; pend_ is the start of a run "\n[ \t\r]*"
  // that ends the document if a line break follows (kNone when there is none).
  uint64_t scan_ = 0, pend_ = 0, doc_end_ = 0;
  bool ended_ = false;  // the document ends at doc_end_ (its remaining pieces are being handed out)
};

}  // namespace moe
