#include "framework/tensor.h"

#include "framework/backend.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

namespace moe {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) MOE_CHECK(d >= 0, "negative dimension in ", shape_str(shape));
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  size_t bytes = size_t(t.nbytes());
  if (device != Device::CPU) {
    Backend* b = &device_backend(device);
    void* p = bytes ? b->allocate(bytes) : nullptr;
    t.storage_ = std::shared_ptr<void>(p, [b](void* q) { if (q) b->deallocate(q); });
    t.data_ = p;
    return t;
  }
  // 64-byte alignment for vector loads; round up as aligned_alloc requires.
  size_t alloc = (bytes + 63) / 64 * 64;
  void* p = alloc ? std::aligned_alloc(64, alloc) : nullptr;
  if (alloc && !p) throw std::bad_alloc();
  t.storage_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data_ = p;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::borrow(void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.data_ = data;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  MOE_CHECK(shape_numel(shape) == numel(), "reshape ", shape_str(shape_), " -> ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  MOE_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "rows ", begin, ":", end,
            " of ", shape_str(shape_));
  Tensor t = *this;
  int64_t row_bytes = shape_[0] ? nbytes() / shape_[0] : 0;
  t.data_ = static_cast<char*>(data_) + begin * row_bytes;
  t.shape_[0] = end - begin;
  return t;
}

void Tensor::zero_() {
  if (!numel()) return;
  if (device_ == Device::CPU)
    std::memset(data_, 0, size_t(nbytes()));
  else
    device_backend(device_).zero(data_, size_t(nbytes()));
}

void Tensor::fill_(float v) {
  if (device_ != Device::CPU) {
    Tensor host = empty(shape_, dtype_);
    host.fill_(v);
    copy_from(host);
    return;
  }
  float* p = f32();
  for (int64_t i = 0, n = numel(); i < n; ++i) p[i] = v;
}

void Tensor::copy_from(const Tensor& src) {
  MOE_CHECK(src.numel() == numel() && src.dtype() == dtype(), "copy ", shape_str(src.shape()), " -> ",
            shape_str(shape_));
  if (!numel()) return;
  const size_t bytes = size_t(nbytes());
  if (device_ == Device::CPU && src.device() == Device::CPU)
    std::memcpy(data_, src.raw(), bytes);
  else if (device_ == Device::CPU)
    device_backend(src.device()).download(data_, src.raw(), bytes);
  else if (src.device() == Device::CPU)
    device_backend(device_).upload(data_, src.raw(), bytes);
  else {
    MOE_CHECK(src.device() == device_, "copy between two different devices");
    device_backend(device_).copy(data_, src.raw(), bytes);
  }
}

Tensor Tensor::to(Device device) const {
  if (device == device_) return *this;
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

void Tensor::ensure(const Shape& shape, DType dtype) {
  const Device device = compute().device();
  if (data_ && storage_ && shape_numel(shape) == numel() && dtype == dtype_ && device == device_) {
    shape_ = shape;
    return;
  }
  *this = empty(shape, dtype, device);
}

}  // namespace moe
