// Writer and reader of Hugging Face safetensors files:
//   [8 bytes: N, little-endian u64] [N bytes: JSON header, padded with spaces to a multiple of 8]
//   [data: every tensor's bytes back to back, row-major, little-endian]
// The header maps each name to {"dtype": "F32"|"BF16"|..., "shape": [...], "data_offsets": [b, e]}
// (offsets relative to the start of the data) plus "__metadata__": {string: string}.
// Tensors are streamed one at a time, so exporting needs memory for one tensor, not the model.
// Dtypes are the file's strings ("F32", "BF16", "I8", ...): I8 (int8 weights of a quantised
// export) is a file type only, the framework computes in f32.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/tensor.h"

namespace moe {

class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    Shape shape;
    std::string dtype;  // "F32", "BF16", "I8", ... (safetensors_dtype_size knows it)
  };
  // Creates `path`.tmp and writes the header; the data follows in the order of `entries`.
  // `metadata` is a JSON object of strings (or null). Throws moe::Error naming the file.
  SafetensorsWriter(std::string path, std::vector<Entry> entries, const nlohmann::json& metadata);
  ~SafetensorsWriter();  // an unfinished file is removed
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Appends the next entry's data; its shape and dtype must be the entry's.
  void write(const Tensor& t);
  // Appends the next entry's data as raw bytes (I8 has no Tensor dtype); `bytes` must be its size.
  void write(const void* data, int64_t bytes);
  // After every entry: fsync, then rename `path`.tmp to `path`. Returns the file's size in bytes.
  int64_t finish();

 private:
  void write_bytes(const void* p, size_t n);

  std::string path_, tmp_;
  std::vector<Entry> entries_;
  size_t next_ = 0;
  int fd_ = -1;
  int64_t size_ = 0;
};

// The safetensors dtype string of a DType ("F32", "BF16", "F8_E4M3", ...).
const char* safetensors_dtype(DType t);
// Bytes per element of a safetensors dtype string; 0 for one this code does not know.
int64_t safetensors_dtype_size(const std::string& dtype);

// Reader of a safetensors file. The constructor checks the whole header against the file before
// anything is read: the 8-byte length within the file, a JSON object, every entry a known dtype,
// a shape whose element count times the dtype size is its offsets' span, offsets inside the data,
// no two tensors overlapping. Every failure is a moe::Error naming the file (and the tensor).
class SafetensorsReader {
 public:
  struct Info {
    std::string dtype;  // the file's string, e.g. "I8"
    Shape shape;
    int64_t begin = 0, end = 0;  // byte offsets in the data section
  };
  explicit SafetensorsReader(std::string path);

  const std::string& path() const { return path_; }
  const std::map<std::string, Info>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  // The entry of `name`; throws "<file>: no tensor '<name>'" when absent.
  const Info& info(const std::string& name) const;
  // The raw bytes of `name` (checked again against the file's size at read time).
  std::vector<char> read_bytes(const std::string& name) const;
  // `name` as f32: F32 as stored, BF16 widened exactly; other dtypes are an error naming them.
  Tensor read_f32(const std::string& name) const;

 private:
  std::string path_;
  int64_t data_start_ = 0, file_size_ = 0;
  std::map<std::string, Info> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace moe
