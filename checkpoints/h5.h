// Internal to checkpoints/: a thin RAII layer over the HDF5 C API. Every hid_t lives in an H5
// handle so nothing leaks when a check throws halfway; every failing call becomes a moe::Error
// naming the file and carrying HDF5's own innermost message (automatic printing is turned off).
#pragma once
#include <hdf5.h>

#include <optional>
#include <string>
#include <utility>

#include "framework/tensor.h"

namespace moe::h5 {

// Turns off HDF5's automatic error printing (once per process). Call before any other H5 call.
void init();

// The innermost message on HDF5's error stack ("file signature not found"), or "" if none.
std::string last_error();

template <herr_t (*Close)(hid_t)>
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  Handle& operator=(Handle&& o) noexcept {
    std::swap(id_, o.id_);
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (id_ >= 0) Close(id_);
  }
  hid_t get() const { return id_; }
  hid_t release() { return std::exchange(id_, H5I_INVALID_HID); }  // the caller closes it now
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

using File = Handle<H5Fclose>;
using Dataset = Handle<H5Dclose>;
using Space = Handle<H5Sclose>;
using Attr = Handle<H5Aclose>;
using Type = Handle<H5Tclose>;
using Plist = Handle<H5Pclose>;

// File-access properties for every open/create: file locking where the filesystem supports it,
// silently none where it does not (NFS and Lustre mounts often refuse flock, which would
// otherwise fail every save with "unable to lock file").
Plist file_access(const std::string& path);

// Throws moe::Error "<path>: <what> (HDF5: <last_error>)" when id/status < 0; returns it otherwise.
hid_t check(hid_t id, const std::string& path, const std::string& what);

// Checkpoint tensor names are flat dataset names at the file root: dots are fine, '/' would
// create groups and is rejected (MOE_CHECK: names come from our own parameter list).
void check_name(const std::string& name);

// Creates dataset `name` with the tensor's full logical shape and dtype. Its place in the file is
// allocated now and never filled, so writing the data later (write_dataset) changes no HDF5
// metadata. A later distributed save creates the same dataset and each rank writes its rows as a
// hyperslab. No modification times are recorded: the same tensors always give the same file bytes.
Dataset create_dataset(hid_t file, const std::string& path, const std::string& name, const Tensor& t);
// The same from a shape and dtype (a sharded save creates every dataset before any data exists).
Dataset create_dataset(hid_t file, const std::string& path, const std::string& name, const Shape& shape, DType dtype);
// Writes all of `t` (the tensor create_dataset was given) into the dataset.
void write_dataset(hid_t dataset, const std::string& path, const std::string& name, const Tensor& t);
// Writes `data` as elements [begin, begin + data.numel()) of the dataset's row-major flattening:
// the hyperslab of one rank's shard. Datasets of up to two dimensions (rows cut anywhere).
void write_piece(hid_t dataset, const std::string& path, const std::string& name, const Shape& shape, int64_t begin,
                 const Tensor& data);

Shape dataset_shape(hid_t dataset, const std::string& path);
// f32, i32, u16, u32 from the HDF5 type; bf16 and fp8 (stored as u16 / u8) from a "dtype" attribute.
DType dataset_dtype(hid_t dataset, const std::string& path, const std::string& name);
// Reads the whole dataset into `out` (CPU, shape and dtype already checked by the caller).
void read_tensor(hid_t dataset, const std::string& path, const std::string& name, Tensor& out);

// Scalar int64 attributes on an object (the file root's "format_version", "step", "world_size").
void write_i64_attr(hid_t obj, const std::string& path, const char* attr, int64_t value);
// The attribute's value, or nullopt if the object has no such attribute.
std::optional<int64_t> read_i64_attr(hid_t obj, const std::string& path, const char* attr);

}  // namespace moe::h5
