#include "data_pipeline/corpus.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "data_pipeline/jsonl.h"
#include "framework/error.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

constexpr uint64_t kNone = UINT64_MAX;
constexpr size_t kNeedMore = SIZE_MAX;
constexpr size_t kReadBytes = size_t(1) << 20;

bool is_jsonl(const std::string& p) { return strip_compression(p).ends_with(".jsonl"); }
bool is_corpus_name(const std::string& p) {
  std::string s = strip_compression(p);
  return s.ends_with(".txt") || s.ends_with(".jsonl");
}

CorpusFile describe(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw error(path, ": cannot read (", std::strerror(errno), ")");
  return {path, is_jsonl(path), compression_of(path), uint64_t(st.st_size),
          int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

// Moves a cut back to the start of the UTF-8 character it falls in (at most 3 bytes), so that no
// piece ends inside a character and invalid-UTF-8 counts do not depend on where pieces fall.
size_t char_boundary(std::string_view r, size_t c) {
  for (int k = 0; k < 3 && c > 1 && (static_cast<unsigned char>(r[c]) & 0xC0) == 0x80; ++k) --c;
  return c;
}

// Length of the next piece of `r`, the rest of a document from the piece's start (`complete`: all
// of it), or kNeedMore when `r` is incomplete and too short to decide. A function of the text
// alone, so a resumed reader cuts exactly where the first one did. The last two bytes of an
// incomplete `r` are never cut off: they may be the "\r\n" that split_docs strips at the end.
size_t piece_length(std::string_view r, bool complete, const ReaderOptions& o) {
  if (o.piece_bytes == 0) return complete ? r.size() : kNeedMore;
  const bool anywhere = o.cuts == CutRule::Anywhere;
  const size_t P = o.piece_bytes, W = anywhere ? P : 16 * P;
  if (complete && r.size() <= P) return r.size();
  if (!complete && r.size() <= W + 2) return kNeedMore;
  if (anywhere) return char_boundary(r, P);
  if (size_t c = last_cut(o.cuts, r.substr(0, P))) return c;
  const size_t lim = std::min(r.size(), W);
  if (size_t c = next_cut(o.cuts, r.substr(0, lim), P); c < lim) return c;
  if (complete && r.size() <= W) return r.size();
  return char_boundary(r, W);
}

}  // namespace

std::vector<CorpusFile> list_corpus(const std::vector<std::string>& inputs) {
  std::vector<std::string> paths;
  for (const auto& in : inputs) {
    fs::path p(in);
    std::error_code ec;
    auto st = fs::status(p, ec);
    if (!fs::exists(st)) throw error(in, ": no such file or directory");
    if (fs::is_regular_file(st)) {
      paths.push_back(p.lexically_normal().string());
    } else if (fs::is_directory(st)) {
      fs::recursive_directory_iterator it(p, ec), end;
      if (ec) throw error(in, ": cannot list (", ec.message(), ")");
      for (; it != end; it.increment(ec)) {
        if (ec) throw error(in, ": cannot list (", ec.message(), ")");
        if (is_corpus_name(it->path().filename().string()) && it->is_regular_file())
          paths.push_back(it->path().lexically_normal().string());
      }
      if (ec) throw error(in, ": cannot list (", ec.message(), ")");
    } else {
      throw error(in, ": not a regular file or folder");
    }
  }
  // One order whatever the order of the flags or of the directory listing; a file named twice
  // (say, a folder and a file in it) counts once.
  std::sort(paths.begin(), paths.end());
  paths.erase(std::unique(paths.begin(), paths.end()), paths.end());
  std::vector<CorpusFile> files;
  for (auto& f : paths) files.push_back(describe(f));
  if (files.empty()) {
    std::string list;
    for (const auto& in : inputs) list += (list.empty() ? "" : " ") + in;
    throw error(list.empty() ? std::string("no --input given") : list,
                ": no .txt or .jsonl files found (expected text files or folders holding them, "
                "optionally compressed as .gz or .zst)");
  }
  return files;
}

DocumentReader::DocumentReader(const std::vector<CorpusFile>& files, ReaderOptions opt, InputPosition start)
    : files_(files), opt_(std::move(opt)), start_(start), file_(start.file) {
  for (size_t i = 0; i < file_ && i < files_.size(); ++i) bytes_before_ += files_[i].bytes;
}

DocumentReader::DocumentReader(const std::vector<CorpusFile>& files, std::string text_key, size_t piece_bytes)
    : DocumentReader(files, ReaderOptions{std::move(text_key), piece_bytes}) {}

DocumentReader::~DocumentReader() = default;

uint64_t DocumentReader::bytes_read() const { return bytes_before_ + (in_ ? in_->raw_offset() : 0); }

std::string DocumentReader::where(const Document& d) const {
  const std::string& path = files_[d.file].path;
  return d.line ? path + ":" + std::to_string(d.line) : path;
}

bool DocumentReader::next_batch(size_t max_bytes, std::vector<Document>& out) {
  out.clear();
  size_t bytes = 0;
  while (bytes < max_bytes) {
    Document d;
    if (!next(d)) break;
    bytes += d.text.size() + 64;  // + a little per piece, so empty documents still fill a batch
    out.push_back(std::move(d));
  }
  return !out.empty();
}

void DocumentReader::open_current() {
  const CorpusFile& f = files_[file_];
  in_ = std::make_unique<InputStream>(f.path, f.compression);
  InputPosition p;
  const bool at_start = file_ == start_.file;
  if (at_start) p = start_, start_.file = UINT32_MAX;  // the start applies once
  if (p.offset) in_->skip(p.offset);
  if (at_start) start_bytes_ = bytes_read();
  eof_ = false;
  buf_.clear();
  buf_off_ = head_ = scan_ = p.offset;
  head_line_ = p.line;
  doc_line_ = p.doc_line;
  in_doc_ = mid_doc_ = p.mid_doc;
  doc_done_ = ended_ = skipping_ = false;
  pend_ = kNone;
}

void DocumentReader::close_current() {
  bytes_before_ += files_[file_].bytes;
  in_.reset();
  buf_.clear();
  ++file_;
}

std::string_view DocumentReader::view(uint64_t from, uint64_t to) const {
  return std::string_view(buf_).substr(size_t(from - buf_off_), size_t(to - from));
}

// Appends up to `want` bytes to the buffer, first dropping what lies before head_ once that is
// most of it. Returns false at the end of the file.
bool DocumentReader::refill(size_t want) {
  if (eof_) return false;
  if (head_ - buf_off_ > buf_.size() / 2) {
    buf_.erase(0, size_t(head_ - buf_off_));
    buf_off_ = head_;
  }
  size_t n0 = buf_.size();
  buf_.resize(n0 + want);
  size_t got = in_->read(buf_.data() + n0, want);
  buf_.resize(n0 + got);
  eof_ = got < want;
  return got > 0;
}

void DocumentReader::advance_head(uint64_t to) {
  if (opt_.split_docs || files_[file_].jsonl) {
    std::string_view s = view(head_, to);
    head_line_ += int64_t(std::count(s.begin(), s.end(), '\n'));
  }
  head_ = to;
}

void DocumentReader::emit(Document& d, uint64_t end, bool last) {
  d.file = uint32_t(file_);
  d.line = opt_.split_docs ? doc_line_ : 0;
  d.last = last;
  d.json = d.oversized = false;
  d.at = {uint32_t(file_), head_, head_line_, doc_line_, mid_doc_};
  d.text.assign(view(head_, end));
  advance_head(end);
  mid_doc_ = !last;
}

// The next piece of a .txt file that is one document.
bool DocumentReader::next_whole_txt(Document& d) {
  if (doc_done_) return false;
  for (;;) {
    const uint64_t end = buf_off_ + buf_.size();
    size_t c = piece_length(view(head_, end), eof_, opt_);
    if (c == kNeedMore) {
      refill(kReadBytes);
      continue;
    }
    bool last = eof_ && head_ + c == end;
    emit(d, head_ + c, last);
    doc_done_ = last;
    return true;
  }
}

// The next piece of a .txt file of blank-line-separated documents. A document is its lines from
// the first non-blank one to the last, without the final line break; a line of spaces, tabs and
// '\r' is blank.
bool DocumentReader::next_split_txt(Document& d) {
  for (;;) {
    const uint64_t end = buf_off_ + buf_.size();
    if (ended_) {  // hand out the rest of a finished document
      size_t c = piece_length(view(head_, doc_end_), true, opt_);
      bool last = head_ + c == doc_end_;
      emit(d, head_ + c, last);
      if (last) {
        ended_ = in_doc_ = false;
        advance_head(scan_);  // past the blank line(s) seen so far
      }
      return true;
    }
    if (!in_doc_) {  // head_ is at a line start: skip blank lines up to the next document
      for (; scan_ < end; ++scan_) {
        char ch = at(scan_);
        if (ch == '\n') {
          advance_head(scan_ + 1);
        } else if (ch != ' ' && ch != '\t' && ch != '\r') {
          in_doc_ = true;
          doc_line_ = head_line_ + 1;
          pend_ = kNone;
          break;
        }
      }
      if (!in_doc_) {
        if (!refill(kReadBytes)) return false;
        continue;
      }
    }
    for (; scan_ < end && !ended_; ++scan_) {
      char ch = at(scan_);
      if (pend_ == kNone) {
        if (ch == '\n') pend_ = scan_;
      } else if (ch == '\n') {
        ended_ = true, doc_end_ = pend_;  // a blank line ends the document
      } else if (ch != ' ' && ch != '\t' && ch != '\r') {
        pend_ = kNone;
      }
    }
    if (!ended_ && eof_) ended_ = true, doc_end_ = pend_ == kNone ? scan_ : pend_;
    if (ended_) {
      if (doc_end_ > head_ && at(doc_end_ - 1) == '\r') --doc_end_;
      continue;
    }
    size_t c = piece_length(view(head_, pend_ == kNone ? scan_ : pend_), false, opt_);
    if (c != kNeedMore) {
      emit(d, head_ + c, false);
      return true;
    }
    refill(kReadBytes);
  }
}

// The next document of a .jsonl file: a non-blank line, parsed unless raw_jsonl.
bool DocumentReader::next_jsonl(Document& d) {
  const std::string& path = files_[file_].path;
  for (;;) {
    const uint64_t end = buf_off_ + buf_.size();
    const char* p = buf_.data() + (scan_ - buf_off_);
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', size_t(end - scan_)));
    if (skipping_) {  // the rest of an oversized line
      if (!nl) {
        head_ = scan_ = end;
        if (!refill(kReadBytes)) return false;
        continue;
      }
      head_ = scan_ = scan_ + uint64_t(nl - p) + 1;
      ++head_line_;
      skipping_ = false;
      continue;
    }
    if (!nl && !eof_) {
      scan_ = end;
      if (end - head_ > opt_.max_line_bytes) {
        if (!opt_.raw_jsonl)
          throw error(path, ":", head_line_ + 1, ": line longer than ", opt_.max_line_bytes >> 20,
                      " MiB (expected one document per line)");
        d = Document{};
        d.file = uint32_t(file_);
        d.line = head_line_ + 1;
        d.json = d.oversized = true;
        d.at = {uint32_t(file_), head_, head_line_, 0, false};
        skipping_ = true;
        return true;
      }
      refill(kReadBytes);
      continue;
    }
    const uint64_t line_end = nl ? scan_ + uint64_t(nl - p) : end;
    if (!nl && head_ == line_end) return false;  // end of file
    uint64_t e = line_end;
    if (e > head_ && at(e - 1) == '\r') --e;
    std::string_view line = view(head_, e);
    const InputPosition at_line{uint32_t(file_), head_, head_line_, 0, false};
    const int64_t lineno = head_line_ + 1;
    head_ = scan_ = nl ? line_end + 1 : line_end;
    head_line_ += nl ? 1 : 0;
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank lines separate nothing
    d.file = uint32_t(file_);
    d.line = lineno;
    d.last = true;
    d.oversized = false;
    d.at = at_line;
    if (opt_.raw_jsonl) {
      d.json = true;
      d.text.assign(line);
      return true;
    }
    d.json = false;
    std::string why;
    JsonlStatus s = jsonl_field(line, opt_.text_key, d.text, why);
    if (s != JsonlStatus::Ok) throw error(path, ":", lineno, ": ", jsonl_problem(s, why, opt_.text_key));
    return true;
  }
}

bool DocumentReader::next(Document& d) {
  while (file_ < files_.size()) {
    if (!in_) open_current();
    bool got = files_[file_].jsonl ? next_jsonl(d) : opt_.split_docs ? next_split_txt(d) : next_whole_txt(d);
    if (got) return true;
    close_current();
  }
  return false;
}

}  // namespace moe
