#include "checkpoints/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <tuple>

#include "framework/dtype.h"
#include "framework/error.h"
#include "framework/json_depth.h"

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

int64_t safetensors_dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
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
    MOE_CHECK(safetensors_dtype_size(e.dtype) > 0, "unknown safetensors dtype '", e.dtype, "'");
    int64_t bytes = shape_numel(e.shape) * safetensors_dtype_size(e.dtype);
    header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {offset, offset + bytes}}};
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
  MOE_CHECK(t.shape() == e.shape && safetensors_dtype(t.dtype()) == e.dtype && t.device() == Device::CPU, "tensor '",
            e.name, "' does not match its header entry");
  write(t.raw(), t.nbytes());
}

void SafetensorsWriter::write(const void* data, int64_t bytes) {
  MOE_CHECK(next_ < entries_.size(), "more tensors written than declared");
  const Entry& e = entries_[next_];
  MOE_CHECK(bytes == shape_numel(e.shape) * safetensors_dtype_size(e.dtype), "tensor '", e.name, "': ", bytes,
            " bytes do not match its header entry");
  if (bytes > 0) write_bytes(data, size_t(bytes));
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

namespace {

// A JSON integer that fits int64 and is >= 0, else -1.
int64_t non_negative(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= uint64_t(INT64_MAX) ? int64_t(v.get<uint64_t>()) : -1;
  if (v.is_number_integer()) return v.get<int64_t>() >= 0 ? v.get<int64_t>() : -1;
  return -1;
}

// pread until `n` bytes are in, or a clear error (a file truncated since the header was checked).
void read_at(int fd, const std::string& path, char* dst, int64_t n, int64_t offset) {
  while (n > 0) {
    ssize_t r = pread(fd, dst, size_t(n), off_t(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw error(path, ": read failed (", strerror(errno), ")");
    if (r == 0) throw error(path, ": truncated (ends at byte ", offset, ")");
    dst += r, n -= r, offset += r;
  }
}

// The reference implementation's limit: a header is metadata, not data.
constexpr int64_t kMaxHeaderBytes = int64_t(100) << 20;

}  // namespace

SafetensorsReader::SafetensorsReader(std::string path) : path_(std::move(path)) {
  const std::string& p = path_;
  int fd = open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw error(p, ": cannot open (", strerror(errno), ")");
  struct FdCloser {
    int fd;
    ~FdCloser() { close(fd); }
  } closer{fd};
  struct stat st {};
  if (fstat(fd, &st) != 0) throw error(p, ": cannot stat (", strerror(errno), ")");
  if (!S_ISREG(st.st_mode)) throw error(p, ": not a regular file (expected a safetensors file)");
  file_size_ = int64_t(st.st_size);
  if (file_size_ < 8) throw error(p, ": ", file_size_, " bytes (expected at least the 8-byte header length)");
  unsigned char len_bytes[8];
  read_at(fd, p, reinterpret_cast<char*>(len_bytes), 8, 0);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len_bytes[i]) << (8 * i);
  // The length is checked before anything is allocated for it.
  if (n > uint64_t(file_size_ - 8))
    throw error(p, ": header length ", n, " runs past the end of the file (", file_size_,
                " bytes; truncated or not a safetensors file)");
  if (int64_t(n) > kMaxHeaderBytes) throw error(p, ": header length ", n, " (expected at most ", kMaxHeaderBytes, ")");
  std::string text(size_t(n), '\0');
  read_at(fd, p, text.data(), int64_t(n), 8);
  data_start_ = 8 + int64_t(n);
  const int64_t data_size = file_size_ - data_start_;

  check_json_depth(text, p, "a safetensors header: {name: {dtype, shape, data_offsets}}");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw error(p, ": header is not JSON (", e.what(), ")");
  }
  if (!header.is_object()) throw error(p, ": header is a JSON ", header.type_name(), " (expected an object)");
  std::vector<std::tuple<int64_t, int64_t, std::string>> spans;  // (begin, end, name) of non-empty tensors
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") {
      if (!e.is_object()) throw error(p, ": __metadata__ is not an object of strings");
      for (const auto& [k, v] : e.items()) {
        if (!v.is_string()) throw error(p, ": __metadata__ '", k, "' is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = p + ": tensor '" + name + "'";
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      throw error(where, ": expected an object with dtype, shape and data_offsets");
    Info info;
    if (!e["dtype"].is_string() || safetensors_dtype_size(e["dtype"].get<std::string>()) == 0)
      throw error(where, ": unknown dtype ", e["dtype"].dump(), " (expected F32, BF16, I8, ...)");
    info.dtype = e["dtype"].get<std::string>();
    const int64_t elem = safetensors_dtype_size(info.dtype);
    if (!e["shape"].is_array()) throw error(where, ": shape is not an array of sizes");
    // The element count is bounded by the data size as it grows, so no product can overflow.
    int64_t numel = 1;
    for (const auto& d : e["shape"]) {
      const int64_t v = non_negative(d);
      if (v < 0) throw error(where, ": shape ", e["shape"].dump(), " (expected non-negative integers)");
      info.shape.push_back(v);
      if (numel != 0 && v > data_size / elem / numel)
        throw error(where, ": shape ", e["shape"].dump(), " needs more bytes than the file's ", data_size,
                    " bytes of data");
      numel *= v;
    }
    const auto& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || non_negative(off[0]) < 0 || non_negative(off[1]) < 0)
      throw error(where, ": data_offsets ", off.dump(), " (expected [begin, end], non-negative integers)");
    info.begin = non_negative(off[0]);
    info.end = non_negative(off[1]);
    if (info.begin > info.end || info.end > data_size)
      throw error(where, ": data_offsets [", info.begin, ", ", info.end, "] outside the data (", data_size,
                  " bytes; truncated file?)");
    if (numel * elem != info.end - info.begin)
      throw error(where, ": shape ", e["shape"].dump(), " of ", info.dtype, " is ", numel * elem,
                  " bytes but data_offsets span ", info.end - info.begin);
    if (info.end > info.begin) spans.emplace_back(info.begin, info.end, name);
    tensors_[name] = std::move(info);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (std::get<0>(spans[i]) < std::get<1>(spans[i - 1]))
      throw error(p, ": tensors '", std::get<2>(spans[i - 1]), "' and '", std::get<2>(spans[i]), "' overlap in the data");
}

const SafetensorsReader::Info& SafetensorsReader::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw error(path_, ": no tensor '", name, "'");
  return it->second;
}

std::vector<char> SafetensorsReader::read_bytes(const std::string& name) const {
  const Info& i = info(name);
  std::vector<char> out(size_t(i.end - i.begin));
  if (out.empty()) return out;
  int fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw error(path_, ": cannot open (", strerror(errno), ")");
  try {
    read_at(fd, path_ + " (tensor '" + name + "')", out.data(), int64_t(out.size()), data_start_ + i.begin);
  } catch (...) {
    close(fd);
    throw;
  }
  close(fd);
  return out;
}

Tensor SafetensorsReader::read_f32(const std::string& name) const {
  const Info& i = info(name);
  if (i.dtype != "F32" && i.dtype != "BF16")
    throw error(path_, ": tensor '", name, "' is ", i.dtype, " (expected F32 or BF16)");
  std::vector<char> bytes = read_bytes(name);
  Tensor t = Tensor::empty(i.shape);
  float* dst = t.f32();
  const int64_t n = t.numel();
  if (i.dtype == "F32") {
    if (n) std::memcpy(dst, bytes.data(), size_t(n) * 4);
  } else {
    for (int64_t k = 0; k < n; ++k) {
      uint16_t b;
      std::memcpy(&b, bytes.data() + 2 * k, 2);
      dst[k] = bf16_bits_to_f32(b);
    }
  }
  return t;
}

}  // namespace moe
