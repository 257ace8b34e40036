// Writer of Hugging Face safetensors files:
//   [8 bytes: N, little-endian u64] [N bytes: JSON header, padded with spaces to a multiple of 8]
//   [data: every tensor's bytes back to back, row-major, little-endian]
// The header maps each name to {"dtype": "F32"|"BF16"|..., "shape": [...], "data_offsets": [b, e]}
// (offsets relative to the start of the data) plus "__metadata__": {string: string}.
// Tensors are streamed one at a time, so exporting needs memory for one tensor, not the model.
#pragma once
#include <cstdint>
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
    DType dtype;
  };
  // Creates `path`.tmp and writes the header; the data follows in the order of `entries`.
  // `metadata` is a JSON object of strings (or null). Throws moe::Error naming the file.
  SafetensorsWriter(std::string path, std::vector<Entry> entries, const nlohmann::json& metadata);
  ~SafetensorsWriter();  // an unfinished file is removed
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Appends the next entry's data; its shape and dtype must be the entry's.
  void write(const Tensor& t);
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

}  // namespace moe
