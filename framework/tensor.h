// Tensor: a shape, an element type, a device and storage that is either owned (shared by views) or
// borrowed (a view into memory someone else keeps alive, e.g. a parameter inside a flat buffer or an
// mmap'd shard). Contiguous row-major only: kernels take raw pointers plus dimensions.
// Device tensors get their memory from the backend registered for the device (framework/backend.h);
// zero_, fill_ and copy_from work on any device, copy_from also between host and device.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "framework/dtype.h"
#include "framework/error.h"

namespace moe {

enum class Device : uint8_t { CPU, CUDA };

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[2, 3]"

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  // Non-owning view: the caller keeps `data` alive for the tensor's lifetime.
  static Tensor borrow(void* data, const Shape& shape, DType dtype = DType::F32,
                       Device device = Device::CPU);

  bool defined() const { return data_ != nullptr || numel() == 0; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int ndim() const { return int(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  int64_t nbytes() const { return numel() * dtype_size(dtype_); }
  // Bytes several tensors hold together (what a struct of activations holds; an empty one, none).
  template <class... Ts>
  static int64_t total_bytes(const Ts&... t) {
    return (int64_t(0) + ... + (t.raw() ? t.nbytes() : 0));
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  void* raw() const { return data_; }
  template <class T>
  T* data() const { return static_cast<T*>(data_); }
  float* f32() const {
    MOE_CHECK(dtype_ == DType::F32, "tensor is ", dtype_name(dtype_));
    return static_cast<float*>(data_);
  }

  // Same storage, new shape (numel must match).
  Tensor reshape(const Shape& shape) const;
  // Rows [begin, end) of dimension 0, sharing storage.
  Tensor rows(int64_t begin, int64_t end) const;
  void zero_();
  void fill_(float v);
  void copy_from(const Tensor& src);  // same numel and dtype

  // A copy on `device` (this tensor itself when it is there already).
  Tensor to(Device device) const;

  // Reallocates only when the element count, dtype or device changes: activation buffers are
  // reused across steps, so steady-state training does no large allocations. The buffer lives on
  // the device of the compute backend (framework/backend.h).
  void ensure(const Shape& shape, DType dtype = DType::F32);

 private:
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
};

}  // namespace moe
