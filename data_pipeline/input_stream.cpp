#include "data_pipeline/input_stream.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "framework/error.h"

namespace moe {

Compression compression_of(const std::string& path) {
  if (path.ends_with(".gz")) return Compression::Gzip;
  if (path.ends_with(".zst")) return Compression::Zstd;
  return Compression::None;
}

std::string strip_compression(const std::string& path) {
  switch (compression_of(path)) {
    case Compression::Gzip: return path.substr(0, path.size() - 3);
    case Compression::Zstd: return path.substr(0, path.size() - 4);
    default: return path;
  }
}

// Decoder state plus the compressed bytes read from the file but not yet decoded ([pos, end) of raw).
struct InputStream::Codec {
  std::vector<unsigned char> raw = std::vector<unsigned char>(size_t(1) << 20);
  size_t pos = 0, end = 0;
  z_stream z{};
  bool z_init = false;
  ZSTD_DCtx* zstd = nullptr;
  bool in_frame = false;  // inside a gzip member or zstd frame: the file must not end here
  bool eof = false;       // the file has no more bytes
  ~Codec() {
    if (z_init) inflateEnd(&z);
    if (zstd) ZSTD_freeDCtx(zstd);
  }
};

InputStream::InputStream(const std::string& path, Compression c) : path_(path), c_(c) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw error(path, ": cannot open (", std::strerror(errno), ")");
  if (c == Compression::None) return;
  codec_ = std::make_unique<Codec>();
  if (c == Compression::Gzip) {
    if (inflateInit2(&codec_->z, 15 + 32) != Z_OK) throw error(path, ": cannot start the gzip decoder");
    codec_->z_init = true;
  } else {
    codec_->zstd = ZSTD_createDCtx();
    if (!codec_->zstd) throw error(path, ": cannot start the zstd decoder");
  }
}

InputStream::~InputStream() {
  if (fd_ >= 0) ::close(fd_);
}

uint64_t InputStream::raw_offset() const { return codec_ ? raw_read_ - (codec_->end - codec_->pos) : raw_read_; }

// Reads more compressed bytes into codec_->raw (which must be used up); returns how many.
size_t InputStream::fill_raw() {
  Codec& k = *codec_;
  for (;;) {
    ssize_t n = ::read(fd_, k.raw.data(), k.raw.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw error(path_, ": read error (", std::strerror(errno), ")");
    k.pos = 0, k.end = size_t(n);
    raw_read_ += uint64_t(n);
    return size_t(n);
  }
}

size_t InputStream::read(char* out, size_t n) {
  size_t got = 0;
  if (c_ == Compression::None) {
    while (got < n) {
      ssize_t r = ::read(fd_, out + got, n - got);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw error(path_, ": read error (", std::strerror(errno), ")");
      if (r == 0) break;
      got += size_t(r);
    }
    raw_read_ += got;
    offset_ += got;
    return got;
  }
  Codec& k = *codec_;
  while (got < n) {
    if (k.pos == k.end && !k.eof) k.eof = fill_raw() == 0;
    if (k.eof && k.pos == k.end && !k.in_frame) break;
    const size_t pos_before = k.pos, got_before = got;
    if (c_ == Compression::Gzip) {
      z_stream& z = k.z;
      z.next_in = k.raw.data() + k.pos;
      z.avail_in = uInt(k.end - k.pos);
      z.next_out = reinterpret_cast<Bytef*>(out + got);
      z.avail_out = uInt(std::min<size_t>(n - got, 1u << 30));
      uInt before = z.avail_out;
      int rc = inflate(&z, Z_NO_FLUSH);
      k.pos = k.end - z.avail_in;
      got += before - z.avail_out;
      if (rc == Z_STREAM_END) {
        inflateReset(&z);  // another member may follow
        k.in_frame = false;
      } else if (rc == Z_OK || rc == Z_BUF_ERROR) {
        k.in_frame = true;
      } else {
        throw error(path_, ": corrupt gzip data near byte ", raw_offset(), " (", z.msg ? z.msg : "inflate failed",
                    "; expected a valid .gz file)");
      }
    } else {
      ZSTD_inBuffer in{k.raw.data(), k.end, k.pos};
      ZSTD_outBuffer o{out + got, n - got, 0};
      size_t rc = ZSTD_decompressStream(k.zstd, &o, &in);
      if (ZSTD_isError(rc))
        throw error(path_, ": corrupt zstd data near byte ", raw_offset(), " (", ZSTD_getErrorName(rc),
                    "; expected a valid .zst file)");
      k.pos = in.pos;
      got += o.pos;
      k.in_frame = rc != 0;
    }
    // At the end of the file a decoder that still wants input can make no progress: truncated.
    if (k.eof && k.pos == pos_before && got == got_before && k.in_frame)
      throw error(path_, ": truncated ", c_ == Compression::Gzip ? "gzip" : "zstd",
                  " file (it ends inside a compressed block; expected a complete file)");
  }
  offset_ += got;
  return got;
}

void InputStream::skip(uint64_t n) {
  if (c_ == Compression::None) {
    if (::lseek(fd_, off_t(offset_ + n), SEEK_SET) < 0) throw error(path_, ": cannot seek (", std::strerror(errno), ")");
    offset_ += n, raw_read_ += n;
    return;
  }
  std::vector<char> buf(size_t(1) << 20);
  while (n > 0) {
    size_t got = read(buf.data(), size_t(std::min<uint64_t>(n, buf.size())));
    if (got == 0) throw error(path_, ": shorter than when it was first read (expected the same file)");
    n -= got;
  }
}

}  // namespace moe
