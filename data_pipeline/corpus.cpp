#include "data_pipeline/corpus.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <stdio.h>  // POSIX getline

#include <nlohmann/json.hpp>

#include "framework/error.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

bool is_jsonl(const fs::path& p) { return p.extension() == ".jsonl"; }

uint64_t size_of(const fs::path& p) {
  std::error_code ec;
  auto n = fs::file_size(p, ec);
  if (ec) throw error(p.string(), ": cannot read (", ec.message(), ")");
  return n;
}

// nlohmann's messages start with "[json.exception.parse_error.101] "; the rest is what users need.
std::string short_what(const std::exception& e) {
  std::string w = e.what();
  if (w.rfind("[json.exception", 0) == 0)
    if (auto p = w.find("] "); p != std::string::npos) w = w.substr(p + 2);
  return w;
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
        auto ext = it->path().extension();
        if ((ext == ".txt" || ext == ".jsonl") && it->is_regular_file()) paths.push_back(it->path().lexically_normal().string());
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
  for (auto& f : paths) files.push_back({f, is_jsonl(f), size_of(f)});
  if (files.empty()) {
    std::string list;
    for (const auto& in : inputs) list += (list.empty() ? "" : " ") + in;
    throw error(list.empty() ? std::string("no --input given") : list,
                ": no .txt or .jsonl files found (expected text files or folders holding them)");
  }
  return files;
}

DocumentReader::DocumentReader(const std::vector<CorpusFile>& files, std::string text_key, size_t piece_bytes)
    : files_(files), text_key_(std::move(text_key)), piece_bytes_(piece_bytes) {}

DocumentReader::~DocumentReader() {
  if (f_) std::fclose(f_);
  std::free(line_buf_);
}

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
    bytes += d.text.size();
    out.push_back(std::move(d));
  }
  return !out.empty();
}

void DocumentReader::open_current() {
  const std::string& path = files_[file_].path;
  f_ = std::fopen(path.c_str(), "rb");
  if (!f_) throw error(path, ": cannot open (", std::strerror(errno), ")");
  line_ = 0;
}

void DocumentReader::close_current() {
  std::fclose(f_);
  f_ = nullptr;
  ++file_;
}

// The next piece of the open .txt file: piece_bytes_ bytes, or all of it when that is 0.
void DocumentReader::read_text(Document& d) {
  const std::string& path = files_[file_].path;
  d.text.clear();
  size_t want = piece_bytes_ ? piece_bytes_ : size_t(-1);
  char buf[1 << 16];
  while (d.text.size() < want) {
    size_t n = std::fread(buf, 1, std::min(sizeof buf, want - d.text.size()), f_);
    if (n == 0) break;
    d.text.append(buf, n);
  }
  if (std::ferror(f_)) throw error(path, ": read error (", std::strerror(errno), ")");
  bytes_read_ += d.text.size();
  int c = std::getc(f_);  // is there more? (a file ending exactly at a piece boundary is done)
  d.last = c == EOF;
  if (!d.last) std::ungetc(c, f_);
}

// Reads one line without its '\n' (and a trailing '\r'); false at end of file. POSIX getline keeps
// embedded NUL bytes, which fgets would silently cut at.
bool DocumentReader::read_line(std::string& line) {
  ssize_t n = ::getline(&line_buf_, &line_cap_, f_);
  if (n < 0) {
    if (std::ferror(f_)) throw error(files_[file_].path, ":", line_ + 1, ": read error");
    return false;
  }
  bytes_read_ += uint64_t(n);
  if (n > 0 && line_buf_[n - 1] == '\n') --n;
  if (n > 0 && line_buf_[n - 1] == '\r') --n;
  line.assign(line_buf_, size_t(n));
  return true;
}

// The next document of the open .jsonl file; false at its end.
bool DocumentReader::next_jsonl(Document& d) {
  const std::string& path = files_[file_].path;
  std::string line;
  while (read_line(line)) {
    ++line_;
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines separate nothing
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw error(path, ":", line_, ": not valid JSON: ", short_what(e), " (expected one JSON object per line)");
    }
    auto it = j.is_object() ? j.find(text_key_) : j.end();
    if (it == j.end() || !it->is_string())
      throw error(path, ":", line_, ": no string field \"", text_key_, "\" (expected {\"", text_key_,
                  "\": \"...\"} per line; --text-key picks the field)");
    d.line = line_;
    d.last = true;
    d.text = it->get<std::string>();
    return true;
  }
  return false;
}

bool DocumentReader::next(Document& d) {
  while (file_ < files_.size()) {
    if (!f_) open_current();
    d.file = uint32_t(file_);
    if (!files_[file_].jsonl) {
      d.line = 0;
      read_text(d);
      if (d.last) close_current();
      return true;
    }
    if (next_jsonl(d)) return true;
    close_current();
  }
  return false;
}

}  // namespace moe
