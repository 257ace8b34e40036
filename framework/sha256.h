// SHA-256 (FIPS 180-4) for manifest and checkpoint checksums. Streaming: update() any number of
// times, then hex().
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moe {

class Sha256 {
 public:
  // use_cpu_extensions: the x86 SHA instructions when the build targets them (same result).
  explicit Sha256(bool use_cpu_extensions = true);
  void update(const void* data, size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  std::string hex();  // finalises; the object must not be updated afterwards

 private:
  void block(const uint8_t* p);
  bool hw_;
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(std::string_view data);
// Hash of a whole file; throws moe::Error naming the file if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace moe
