// The raw-text side of preprocess: which files make up a corpus, and reading them as documents.
// A .txt file is one document; each non-blank line of a .jsonl file is one document (a JSON object
// whose `text_key` field holds the text). A long .txt document may be handed out in pieces, so a
// multi-gigabyte file never has to fit in memory.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace moe {

struct CorpusFile {
  std::string path;
  bool jsonl = false;
  uint64_t bytes = 0;
};

// Expands `inputs` to the corpus files, sorted by path (duplicates dropped): a file is taken as is
// (.jsonl by extension, anything else is text); a folder contributes its *.txt and *.jsonl files,
// recursively. Throws moe::Error for a missing path or when no file is found.
std::vector<CorpusFile> list_corpus(const std::vector<std::string>& inputs);

// A document, or one piece of it: the pieces of a document come in order, the last with last = true.
struct Document {
  uint32_t file = 0;  // index into the corpus file list
  int64_t line = 0;   // 1-based line of a .jsonl document; 0 for a .txt file
  bool last = true;
  std::string text;
};

class DocumentReader {
 public:
  // `piece_bytes` > 0 cuts .txt documents into pieces of that many bytes; 0 reads them whole.
  DocumentReader(const std::vector<CorpusFile>& files, std::string text_key, size_t piece_bytes);
  ~DocumentReader();
  DocumentReader(const DocumentReader&) = delete;
  DocumentReader& operator=(const DocumentReader&) = delete;

  // Replaces `out` with the next documents or pieces, at least one and about `max_bytes` of text
  // in all. Returns false (and leaves `out` empty) once the corpus is exhausted.
  bool next_batch(size_t max_bytes, std::vector<Document>& out);
  uint64_t bytes_read() const { return bytes_read_; }
  // "path" or "path:line", for error messages.
  std::string where(const Document& d) const;

 private:
  bool next(Document& d);
  void open_current();
  void close_current();
  void read_text(Document& d);
  bool read_line(std::string& line);
  bool next_jsonl(Document& d);

  const std::vector<CorpusFile>& files_;
  std::string text_key_;
  size_t piece_bytes_;
  size_t file_ = 0;
  FILE* f_ = nullptr;  // files_[file_] while it is being read
  int64_t line_ = 0;
  char* line_buf_ = nullptr;  // getline's buffer, reused across lines
  size_t line_cap_ = 0;
  uint64_t bytes_read_ = 0;
};

}  // namespace moe
