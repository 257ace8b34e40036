#include "checkpoints/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "framework/error.h"

namespace moe {

const char* safetensors_dtype(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F8E4M3: return "F8_E4M3";
    case DType::F8E5M2: return "F8_E5M2";
    case DType::U16: return "U16";
    case DType::U32: return "U32";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  MOE_CHECK(false, "unknown dtype ", int(t));
  return "";
}

SafetensorsWriter::SafetensorsWriter(std::string path, std::vector<Entry> entries, const nlohmann::json& metadata)
    : path_(std::move(path)), tmp_(path_ + ".tmp"), entries_(std::move(entries)) {
  MOE_CHECK(metadata.is_null() || metadata.is_object(), "safetensors metadata must be a JSON object");
  // ordered_json keeps the header in the data's order, so the file reads top to bottom.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.is_null() && !metadata.empty())
    for (const auto& [k, v] : metadata.items()) {
      MOE_CHECK(v.is_string(), "safetensors metadata values are strings ('", k, "' is not)");
      header["__metadata__"][k] = v.get<std::string>();
    }
  std::set<std::string> seen;
  int64_t offset = 0;
  for (const Entry& e : entries_) {
    MOE_CHECK(!e.name.empty() && e.name != "__metadata__" && seen.insert(e.name).second, "bad or repeated tensor name '",
              e.name, "'");
    int64_t bytes = shape_numel(e.shape) * dtype_size(e.dtype);
    header[e.name] = {{"dtype", safetensors_dtype(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned, as the reference writer does
  uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = (unsigned char)(n >> (8 * i));

  fd_ = open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw error(tmp_, ": cannot create (", strerror(errno), ")");
  write_bytes(len, 8);
  write_bytes(text.data(), text.size());
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ < 0) return;
  close(fd_);
  unlink(tmp_.c_str());
}

void SafetensorsWriter::write_bytes(const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd_, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw error(tmp_, ": write failed (", strerror(errno), ")");
    c += w;
    n -= size_t(w);
    size_ += w;
  }
}

void SafetensorsWriter::write(const Tensor& t) {
  MOE_CHECK(next_ < entries_.size(), "more tensors written than declared");
  const Entry& e = entries_[next_];
  MOE_CHECK(t.shape() == e.shape && t.dtype() == e.dtype && t.device() == Device::CPU, "tensor '", e.name,
            "' does not match its header entry");
  if (t.nbytes() > 0) write_bytes(t.raw(), size_t(t.nbytes()));
  ++next_;
}

int64_t SafetensorsWriter::finish() {
  MOE_CHECK(next_ == entries_.size(), "only ", next_, " of ", entries_.size(), " tensors written");
  if (fsync(fd_) != 0) throw error(tmp_, ": fsync failed (", strerror(errno), ")");
  int rc = close(fd_);
  fd_ = -1;
  if (rc != 0) {
    unlink(tmp_.c_str());
    throw error(tmp_, ": close failed (", strerror(errno), ")");
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int e = errno;
    unlink(tmp_.c_str());
    throw error(tmp_, ": cannot rename to ", path_, " (", strerror(e), ")");
  }
  return size_;
}

}  // namespace moe
