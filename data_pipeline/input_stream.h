// The bytes of one corpus file, decompressed on the fly: plain, gzip (.gz, several members allowed)
// or zstd (.zst, several frames allowed). Read front to back; skip() moves forward to a position a
// killed run recorded (a seek for plain files, decompress-and-discard for compressed ones).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace moe {

enum class Compression { None, Gzip, Zstd };

// By the file name: ".gz" -> Gzip, ".zst" -> Zstd, anything else -> None.
Compression compression_of(const std::string& path);
// The name without a ".gz"/".zst" ending, so "a.jsonl.gz" is recognised as .jsonl.
std::string strip_compression(const std::string& path);

class InputStream {
 public:
  InputStream(const std::string& path, Compression c);  // throws moe::Error naming the file
  ~InputStream();
  InputStream(const InputStream&) = delete;
  InputStream& operator=(const InputStream&) = delete;

  // Up to n decompressed bytes; fewer only at the end of the file (0 there). A corrupt or
  // truncated compressed file is a moe::Error naming it.
  size_t read(char* out, size_t n);
  void skip(uint64_t n);
  uint64_t offset() const { return offset_; }  // decompressed bytes read or skipped so far
  uint64_t raw_offset() const;                 // bytes of the file itself consumed so far

 private:
  struct Codec;
  size_t fill_raw();
  std::string path_;
  Compression c_;
  int fd_ = -1;
  uint64_t offset_ = 0, raw_read_ = 0;
  std::unique_ptr<Codec> codec_;
};

}  // namespace moe
