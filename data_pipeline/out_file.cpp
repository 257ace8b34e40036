#include "data_pipeline/out_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "framework/error.h"

namespace moe {
namespace {

constexpr size_t kBufferBytes = size_t(1) << 20;

[[noreturn]] void fail(const std::string& path, const char* what, int err) {
  throw error(path, ": ", what, " failed (", std::strerror(err), ")");
}

int open_for_writing(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0644);
  if (fd < 0) throw error(path, ": cannot open for writing (", std::strerror(errno), ")");
  return fd;
}

}  // namespace

OutFile::OutFile(std::string path, int fd, uint64_t size) : path_(std::move(path)), fd_(fd), size_(size) {
  buf_.reserve(kBufferBytes);
}

OutFile OutFile::create(const std::string& path) { return OutFile(path, open_for_writing(path, O_TRUNC), 0); }

OutFile OutFile::resume(const std::string& path, uint64_t size) {
  int fd = open_for_writing(path, 0);
  if (::ftruncate(fd, off_t(size)) != 0 || ::lseek(fd, off_t(size), SEEK_SET) < 0) {
    int e = errno;
    ::close(fd);
    fail(path, "truncate", e);
  }
  return OutFile(path, fd, size);
}

OutFile::~OutFile() {
  if (fd_ >= 0) ::close(fd_);
}

OutFile::OutFile(OutFile&& o) noexcept
    : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)), size_(o.size_), buf_(std::move(o.buf_)) {}

OutFile& OutFile::operator=(OutFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
    size_ = o.size_;
    buf_ = std::move(o.buf_);
  }
  return *this;
}

void OutFile::write(const void* p, size_t n) {
  MOE_CHECK(fd_ >= 0, path_, " is not open");
  const char* c = static_cast<const char*>(p);
  size_ += n;
  if (buf_.size() + n <= kBufferBytes) {
    buf_.insert(buf_.end(), c, c + n);
    return;
  }
  flush();
  if (n < kBufferBytes) {
    buf_.insert(buf_.end(), c, c + n);
    return;
  }
  while (n > 0) {  // large writes skip the buffer
    ssize_t w = ::write(fd_, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(path_, "write", w < 0 ? errno : EIO);
    c += w, n -= size_t(w);
  }
}

void OutFile::flush() {
  const char* c = buf_.data();
  size_t n = buf_.size();
  while (n > 0) {
    ssize_t w = ::write(fd_, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(path_, "write", w < 0 ? errno : EIO);
    c += w, n -= size_t(w);
  }
  buf_.clear();
}

void OutFile::sync() {
  flush();
  if (::fdatasync(fd_) != 0) fail(path_, "fsync", errno);
}

void OutFile::close() {
  if (fd_ < 0) return;
  flush();
  int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) fail(path_, "close", errno);
}

void sync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw error(dir, ": cannot open folder (", std::strerror(errno), ")");
  int rc = ::fsync(fd), e = errno;
  ::close(fd);
  if (rc != 0 && e != EINVAL) fail(dir, "fsync", e);  // EINVAL: the file system cannot sync folders
}

void rename_path(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0)
    throw error(from, ": cannot rename to ", to, " (", std::strerror(errno), ")");
}

void write_file_atomic(const std::string& path, std::string_view content) {
  OutFile f = OutFile::create(path + ".tmp");
  f.write(content);
  f.sync();
  f.close();
  rename_path(path + ".tmp", path);
  std::string dir = std::filesystem::path(path).parent_path().string();
  sync_dir(dir.empty() ? "." : dir);
}

}  // namespace moe
