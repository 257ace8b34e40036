#include "checkpoints/layout.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "framework/error.h"

namespace moe::ckpt {

std::string step_dir_name(int64_t step) {
  char buf[32];
  snprintf(buf, sizeof buf, "step-%08" PRId64, step);
  return buf;
}

std::optional<int64_t> parse_step_dir(std::string_view name) {
  constexpr std::string_view prefix = "step-";
  if (name.substr(0, prefix.size()) != prefix || name.size() == prefix.size() || name.size() > prefix.size() + 18)
    return std::nullopt;
  int64_t step = 0;
  for (char c : name.substr(prefix.size())) {
    if (c < '0' || c > '9') return std::nullopt;
    step = step * 10 + (c - '0');
  }
  return step;
}

bool is_tmp_dir(std::string_view name) {
  return name.substr(0, 5) == "step-" && name.size() > 4 && name.substr(name.size() - 4) == ".tmp";
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, ": cannot open for reading (", strerror(errno), ")");
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) throw error(path, ": read error");
  return os.str();
}

void write_file_synced(const std::string& path, const std::string& text) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw error(path, ": cannot create (", strerror(errno), ")");
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      throw error(path, ": write failed (", strerror(e), ")");
    }
    p += n;
    left -= size_t(n);
  }
  if (fsync(fd) != 0) {
    int e = errno;
    close(fd);
    throw error(path, ": fsync failed (", strerror(e), ")");
  }
  if (close(fd) != 0) throw error(path, ": close failed (", strerror(errno), ")");
}

void fsync_path(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw error(path, ": cannot open to fsync (", strerror(errno), ")");
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  // Some filesystems refuse fsync on a folder (EINVAL); the data files were synced already.
  if (rc != 0 && e != EINVAL) throw error(path, ": fsync failed (", strerror(e), ")");
}

}  // namespace moe::ckpt
