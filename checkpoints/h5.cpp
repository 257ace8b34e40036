#include "checkpoints/h5.h"

#include <mutex>
#include <vector>

namespace moe::h5 {
namespace {

// File and memory types of one element. bf16 and fp8 have no HDF5 type: they are stored as
// unsigned integers of their width and named by a "dtype" attribute on the dataset.
struct Types {
  hid_t file, mem;
};

Types types_of(DType t) {
  switch (t) {
    case DType::F32: return {H5T_IEEE_F32LE, H5T_NATIVE_FLOAT};
    case DType::I32: return {H5T_STD_I32LE, H5T_NATIVE_INT32};
    case DType::I64: return {H5T_STD_I64LE, H5T_NATIVE_INT64};
    case DType::U32: return {H5T_STD_U32LE, H5T_NATIVE_UINT32};
    case DType::BF16:
    case DType::U16: return {H5T_STD_U16LE, H5T_NATIVE_UINT16};
    case DType::F8E4M3:
    case DType::F8E5M2: return {H5T_STD_U8LE, H5T_NATIVE_UINT8};
  }
  MOE_CHECK(false, "unknown dtype ", int(t));
  return {};
}

bool needs_dtype_attr(DType t) { return t == DType::BF16 || t == DType::F8E4M3 || t == DType::F8E5M2; }

herr_t innermost(unsigned n, const H5E_error2_t* e, void* out) {
  // Walking upward, entry 0 is the most specific error.
  if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
  return 0;
}

void write_string_attr(hid_t obj, const std::string& path, const char* attr, const std::string& value) {
  Type type(check(H5Tcopy(H5T_C_S1), path, "H5Tcopy"));
  check(H5Tset_size(type.get(), value.size() + 1), path, "H5Tset_size");
  check(H5Tset_strpad(type.get(), H5T_STR_NULLTERM), path, "H5Tset_strpad");
  Space space(check(H5Screate(H5S_SCALAR), path, "H5Screate"));
  Attr a(check(H5Acreate2(obj, attr, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), path,
               std::string("cannot create attribute '") + attr + "'"));
  check(H5Awrite(a.get(), type.get(), value.c_str()), path, std::string("cannot write attribute '") + attr + "'");
}

// Fixed-length (what we write) or variable-length (what h5py writes) string attribute.
std::string read_string_attr(hid_t obj, const std::string& path, const char* attr) {
  Attr a(check(H5Aopen(obj, attr, H5P_DEFAULT), path, std::string("cannot open attribute '") + attr + "'"));
  Type ftype(check(H5Aget_type(a.get()), path, "H5Aget_type"));
  if (H5Tget_class(ftype.get()) != H5T_STRING)
    throw error(path, ": attribute '", attr, "' is not a string");
  if (H5Tis_variable_str(ftype.get()) > 0) {
    Type mtype(check(H5Tcopy(H5T_C_S1), path, "H5Tcopy"));
    check(H5Tset_size(mtype.get(), H5T_VARIABLE), path, "H5Tset_size");
    char* p = nullptr;
    check(H5Aread(a.get(), mtype.get(), &p), path, std::string("cannot read attribute '") + attr + "'");
    std::string s = p ? p : "";
    H5free_memory(p);
    return s;
  }
  std::vector<char> buf(H5Tget_size(ftype.get()) + 1, '\0');
  check(H5Aread(a.get(), ftype.get(), buf.data()), path, std::string("cannot read attribute '") + attr + "'");
  return std::string(buf.data());
}

}  // namespace

void init() {
  static std::once_flag once;
  std::call_once(once, [] {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  });
}

std::string last_error() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, &msg);
  // The file driver's messages run over lines with times, addresses and offsets ("file write
  // failed: time = ...\n, ..., errno = 28, error message = 'No space left on device', ..."): keep
  // what failed and the system's reason.
  const std::string tag = "error message = '";
  size_t at = msg.find(tag), end = at == std::string::npos ? at : msg.find('\'', at + tag.size());
  if (end != std::string::npos) msg = msg.substr(0, msg.find(':')) + ": " + msg.substr(at + tag.size(), end - at - tag.size());
  for (char& c : msg)
    if (c == '\n') c = ' ';
  return msg;
}

hid_t check(hid_t id, const std::string& path, const std::string& what) {
  if (id >= 0) return id;
  std::string why = last_error();
  H5Eclear2(H5E_DEFAULT);
  if (why.empty()) throw error(path, ": ", what);
  throw error(path, ": ", what, " (HDF5: ", why, ")");
}

Plist file_access(const std::string& path) {
  Plist fapl(check(H5Pcreate(H5P_FILE_ACCESS), path, "H5Pcreate"));
  check(H5Pset_file_locking(fapl.get(), true, true), path, "H5Pset_file_locking");
  return fapl;
}

void check_name(const std::string& name) {
  MOE_CHECK(!name.empty() && name != "." && name.find('/') == std::string::npos,
            "checkpoint tensor name '", name, "' must be non-empty and contain no '/'");
}

Dataset create_dataset(hid_t file, const std::string& path, const std::string& name, const Tensor& t) {
  MOE_CHECK(t.device() == Device::CPU && (t.defined() || t.numel() == 0), "tensor '", name, "' must be a CPU tensor");
  return create_dataset(file, path, name, t.shape(), t.dtype());
}

Dataset create_dataset(hid_t file, const std::string& path, const std::string& name, const Shape& shape, DType dtype) {
  check_name(name);
  Types ty = types_of(dtype);
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  const int ndim = int(shape.size());
  Space space(check(ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, dims.data(), nullptr),
                    path, "cannot create dataspace for '" + name + "'"));
  Plist dcpl(check(H5Pcreate(H5P_DATASET_CREATE), path, "H5Pcreate"));
  check(H5Pset_obj_track_times(dcpl.get(), false), path, "H5Pset_obj_track_times");
  check(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY), path, "H5Pset_alloc_time");
  check(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), path, "H5Pset_fill_time");
  Dataset ds(check(H5Dcreate2(file, name.c_str(), ty.file, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                   path, "cannot create dataset '" + name + "'"));
  if (needs_dtype_attr(dtype)) write_string_attr(ds.get(), path, "dtype", dtype_name(dtype));
  return ds;
}

void write_dataset(hid_t dataset, const std::string& path, const std::string& name, const Tensor& t) {
  if (t.numel() == 0) return;
  check(H5Dwrite(dataset, types_of(t.dtype()).mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()), path,
        "cannot write dataset '" + name + "'");
}

void write_piece(hid_t dataset, const std::string& path, const std::string& name, const Shape& shape, int64_t begin,
                 const Tensor& data) {
  const int64_t n = data.numel(), total = shape_numel(shape);
  MOE_CHECK(begin >= 0 && begin + n <= total, "piece [", begin, ", ", begin + n, ") of '", name, "' outside its ",
            total, " elements");
  if (n == 0) return;
  if (begin == 0 && n == total) return write_dataset(dataset, path, name, data);
  MOE_CHECK(shape.size() <= 2, "'", name, "': pieces of datasets with more than two dimensions");
  Space file_space(check(H5Dget_space(dataset), path, "H5Dget_space"));
  // Rows of C elements (a 1-D dataset is one row): a partial first row, whole rows, a partial last row.
  const int64_t C = shape.size() == 2 ? shape[1] : total, end = begin + n;
  const int64_t r0 = begin / C, c0 = begin % C, r1 = end / C, c1 = end % C;
  bool first = true;
  auto select = [&](int64_t row, int64_t col, int64_t rows, int64_t cols) {
    hsize_t start[2] = {hsize_t(row), hsize_t(col)}, count[2] = {hsize_t(rows), hsize_t(cols)};
    hsize_t* st = shape.size() == 2 ? start : start + 1;  // 1-D: just the column range
    hsize_t* ct = shape.size() == 2 ? count : count + 1;
    check(H5Sselect_hyperslab(file_space.get(), first ? H5S_SELECT_SET : H5S_SELECT_OR, st, nullptr, ct, nullptr),
          path, "cannot select a piece of '" + name + "'");
    first = false;
  };
  if (r0 == r1) {
    select(r0, c0, 1, c1 - c0);
  } else {
    int64_t whole_from = r0;
    if (c0 > 0) select(r0, c0, 1, C - c0), whole_from = r0 + 1;
    if (r1 > whole_from) select(whole_from, 0, r1 - whole_from, C);
    if (c1 > 0) select(r1, 0, 1, c1);
  }
  hsize_t mem_n = hsize_t(n);
  Space mem_space(check(H5Screate_simple(1, &mem_n, nullptr), path, "H5Screate_simple"));
  check(H5Dwrite(dataset, types_of(data.dtype()).mem, mem_space.get(), file_space.get(), H5P_DEFAULT, data.raw()), path,
        "cannot write a piece of dataset '" + name + "'");
}

Shape dataset_shape(hid_t dataset, const std::string& path) {
  Space space(check(H5Dget_space(dataset), path, "H5Dget_space"));
  int nd = int(check(H5Sget_simple_extent_ndims(space.get()), path, "H5Sget_simple_extent_ndims"));
  std::vector<hsize_t> dims(nd);
  if (nd > 0) check(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), path, "H5Sget_simple_extent_dims");
  return Shape(dims.begin(), dims.end());
}

DType dataset_dtype(hid_t dataset, const std::string& path, const std::string& name) {
  Type type(check(H5Dget_type(dataset), path, "H5Dget_type"));
  H5T_class_t cls = H5Tget_class(type.get());
  size_t size = H5Tget_size(type.get());
  if (H5Aexists(dataset, "dtype") > 0) {
    std::string s = read_string_attr(dataset, path, "dtype");
    for (DType t : {DType::BF16, DType::F8E4M3, DType::F8E5M2})
      if (s == dtype_name(t) && cls == H5T_INTEGER && size == size_t(dtype_size(t))) return t;
    throw error(path, ": dataset '", name, "' has dtype attribute '", s,
                "' that does not match its storage (expected bf16 as u16, fp8_e4m3 or fp8_e5m2 as u8)");
  }
  if (cls == H5T_FLOAT && size == 4) return DType::F32;
  if (cls == H5T_INTEGER) {
    bool is_signed = H5Tget_sign(type.get()) == H5T_SGN_2;
    if (is_signed && size == 4) return DType::I32;
    if (!is_signed && size == 2) return DType::U16;
    if (!is_signed && size == 4) return DType::U32;
  }
  throw error(path, ": dataset '", name, "' has an unsupported element type (expected f32, i32, u16, u32, or bf16/fp8 with a dtype attribute)");
}

void read_tensor(hid_t dataset, const std::string& path, const std::string& name, Tensor& out) {
  if (out.numel() == 0) return;
  check(H5Dread(dataset, types_of(out.dtype()).mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.raw()), path,
        "cannot read dataset '" + name + "'");
}

void write_i64_attr(hid_t obj, const std::string& path, const char* attr, int64_t value) {
  Space space(check(H5Screate(H5S_SCALAR), path, "H5Screate"));
  Attr a(check(H5Acreate2(obj, attr, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), path,
               std::string("cannot create attribute '") + attr + "'"));
  check(H5Awrite(a.get(), H5T_NATIVE_INT64, &value), path, std::string("cannot write attribute '") + attr + "'");
}

std::optional<int64_t> read_i64_attr(hid_t obj, const std::string& path, const char* attr) {
  htri_t exists = check(H5Aexists(obj, attr), path, std::string("cannot look for attribute '") + attr + "'");
  if (exists == 0) return std::nullopt;
  Attr a(check(H5Aopen(obj, attr, H5P_DEFAULT), path, std::string("cannot open attribute '") + attr + "'"));
  Type type(check(H5Aget_type(a.get()), path, "H5Aget_type"));
  if (H5Tget_class(type.get()) != H5T_INTEGER) throw error(path, ": attribute '", attr, "' is not an integer");
  int64_t value = 0;
  check(H5Aread(a.get(), H5T_NATIVE_INT64, &value), path, std::string("cannot read attribute '") + attr + "'");
  return value;
}

}  // namespace moe::h5
