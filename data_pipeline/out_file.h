// Durable output files for preprocess. Every write goes through write(2) from a 1 MiB buffer, so
// each failure — a full disk above all — surfaces as a moe::Error naming the file, at the write,
// the fsync or the close, instead of being lost in a stdio buffer.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moe {

class OutFile {
 public:
  OutFile() = default;
  // Creates `path`, or empties it.
  static OutFile create(const std::string& path);
  // Opens `path` (creating it if missing), cuts it to `size` bytes and appends after them: how a
  // resumed run drops whatever a killed run wrote after its last checkpoint.
  static OutFile resume(const std::string& path, uint64_t size);
  ~OutFile();  // closes without syncing, ignoring errors: only an error path gets here open
  OutFile(OutFile&& o) noexcept;
  OutFile& operator=(OutFile&& o) noexcept;
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;

  void write(const void* p, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void sync();   // flushes the buffer and fdatasync()s: the bytes so far survive a crash
  void close();  // flushes and closes (no sync)
  bool is_open() const { return fd_ >= 0; }
  uint64_t size() const { return size_; }  // bytes written, buffered ones included
  const std::string& path() const { return path_; }

 private:
  OutFile(std::string path, int fd, uint64_t size);
  void flush();
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  std::vector<char> buf_;
};

// fsync() of a folder, so that renames and new names in it survive a crash.
void sync_dir(const std::string& dir);
// rename(2) with the error naming both paths.
void rename_path(const std::string& from, const std::string& to);
// Writes `content` to path.tmp, syncs it and renames it over `path` (then syncs the folder): a
// reader sees the old file or the new one, never a torn one.
void write_file_atomic(const std::string& path, std::string_view content);

}  // namespace moe
