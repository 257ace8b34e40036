// An emulated device for tests: the CPU backend's ops over "device" memory that the host cannot
// touch outside an op. Its memory is one reserved address range kept PROT_NONE except while a
// backend op runs, and every op checks that its device pointers point into that range. So a model
// step run on it proves, on any machine, the two rules a GPU enforces only at run time:
//   - the host never reads or writes device memory (it would fault here: SIGSEGV);
//   - no host pointer reaches a device op (a moe::Error here; an illegal address on a GPU).
// Results are the CPU backend's, bit for bit: the compute ops are generated from the op table
// (framework/backend_ops.inc) as the CPU op plus the checks. Registers itself as the Device::CUDA
// backend while alive. Single-threaded use (ops come from the test's thread; the CPU ops fan out inside).
#pragma once
#include <sys/mman.h>

#include <cstring>
#include <map>
#include <type_traits>

#include "framework/backend.h"
#include "framework/error.h"

namespace moe::test {

class EmulatedDevice final : public Backend {
 public:
  static constexpr size_t kReserve = size_t(1) << 32;  // address space only (MAP_NORESERVE)

  EmulatedDevice() {
    void* p = mmap(nullptr, kReserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    MOE_CHECK(p != MAP_FAILED, "emulated device: cannot reserve address space");
    base_ = static_cast<char*>(p);
    register_device_backend(this);
  }
  ~EmulatedDevice() override {
    register_device_backend(nullptr);
    munmap(base_, kReserve);
  }
  EmulatedDevice(const EmulatedDevice&) = delete;
  EmulatedDevice& operator=(const EmulatedDevice&) = delete;

  Device device() const override { return Device::CUDA; }
  const char* name() const override { return "emulated-device"; }
  bool owns(const void* p) const { return p >= base_ && p < base_ + used_; }
  // Opens device memory to the host until the matching unhold(): for collectives on device
  // buffers, which MPI reads and writes (also during other MPI calls) from post to completion.
  void hold() {
    if (depth_++ == 0) protect(base_, used_, PROT_READ | PROT_WRITE);
  }
  void unhold() {
    if (--depth_ == 0) protect(base_, used_, PROT_NONE);
  }
  int64_t ops() const { return ops_; }

  // ---- memory: exact-size reuse of freed blocks, else the next free address ----
  void* allocate(size_t bytes) override {
    const size_t size = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
    auto it = free_.find(size);
    char* p;
    if (it != free_.end()) {
      p = it->second;
      free_.erase(it);
    } else {
      MOE_CHECK(used_ + size <= kReserve, "emulated device: out of memory");
      p = base_ + used_;
      used_ += size;
      if (depth_ > 0) protect(p, size, PROT_READ | PROT_WRITE);  // allocated inside an op
    }
    sizes_[p] = size;
    return p;
  }
  void deallocate(void* p) override {
    auto it = sizes_.find(static_cast<char*>(p));
    MOE_CHECK(it != sizes_.end(), "emulated device: free of a pointer it did not allocate");
    free_.emplace(it->second, it->first);
    sizes_.erase(it);
  }
  void zero(void* p, size_t bytes) override {
    Op op(this);
    op.check(p);
    cpu().zero(p, bytes);
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    Op op(this);
    op.check(dst, src);
    cpu().copy(dst, src, bytes);
  }
  void upload(void* dst, const void* host, size_t bytes) override {
    Op op(this);
    op.check(dst, Host(host));
    std::memcpy(dst, host, bytes);
  }
  void download(void* host, const void* src, size_t bytes) override {
    Op op(this);
    op.check(src, Host(host));
    std::memcpy(host, src, bytes);
  }
  void synchronize() override {}

  // Every op of backend_ops.inc: the CPU op, after checking that its device arguments (the
  // table's DEVICE list; every pointer of an element-wise op) point into device memory.
#define MOE_OP(ret, name, params, args, device) \
  ret name params override {                     \
    Op op(this);                                 \
    op.check device;                             \
    return cpu().name args;                      \
  }
#define MOE_ELEMENTWISE_OP(name, params, args, n, ...) MOE_OP(void, name, params, args, args)
#include "framework/backend_ops.inc"
#undef MOE_OP
#undef MOE_ELEMENTWISE_OP

 private:
  // The table's wrappers of arguments that are not device pointers themselves.
  template <class P>
  struct DeviceArrayArg {
    const P* ptrs;  // host array of n device pointers
    int64_t n;
  };
  template <class P>
  static DeviceArrayArg<P> DeviceArray(const P* ptrs, int64_t n) { return {ptrs, n}; }
  struct HostArg {
    const void* p;
  };
  static HostArg Host(const void* p) { return {p}; }

  // One backend op: checks its device arguments, opens the memory to the host while it runs.
  class Op {
   public:
    explicit Op(EmulatedDevice* d) : d_(d) {
      if (d_->depth_++ == 0) d_->protect(d_->base_, d_->used_, PROT_READ | PROT_WRITE);
      ++d_->ops_;
    }
    ~Op() {
      if (--d_->depth_ == 0) d_->protect(d_->base_, d_->used_, PROT_NONE);
    }
    template <class... A>
    void check(const A&... args) const {
      (check_one(args), ...);
    }

   private:
    // A pointer is device memory (or null); an Fp8Rows is its codes and scales; plain values
    // (sizes, flags, specs) are not checked.
    template <class T>
    void check_one(const T& a) const {
      if constexpr (std::is_pointer_v<T>) {
        MOE_CHECK(!a || d_->owns(a), "emulated device: a device op got a pointer outside device memory (",
                  static_cast<const void*>(a), ")");
      } else if constexpr (std::is_same_v<T, kern::Fp8Rows>) {
        check_one(a.codes), check_one(a.scales);
      } else if constexpr (std::is_same_v<T, HostArg>) {
        d_->host_only(a.p);
      } else if constexpr (std::is_arithmetic_v<T> || std::is_enum_v<T>) {
      } else {
        d_->host_only(a.ptrs);  // a DeviceArrayArg
        for (int64_t i = 0; i < a.n; ++i) check_one(a.ptrs[i]);
      }
    }

    EmulatedDevice* d_;
  };

  void host_only(const void* p) const {
    MOE_CHECK(!owns(p), "emulated device: a host argument points into device memory");
  }
  // Whole pages covering [p, p + bytes) (base_ is page-aligned, blocks only 256-byte aligned).
  void protect(char* p, size_t bytes, int prot) const {
    if (!bytes) return;
    char* first = base_ + size_t(p - base_) / 4096 * 4096;
    const size_t span = (size_t(p + bytes - first) + 4095) / 4096 * 4096;
    MOE_CHECK(mprotect(first, span, prot) == 0, "emulated device: mprotect failed");
  }
  static Backend& cpu() { return cpu_backend(); }

  char* base_ = nullptr;
  size_t used_ = 0;
  int depth_ = 0;
  int64_t ops_ = 0;
  std::multimap<size_t, char*> free_;
  std::map<char*, size_t> sizes_;
};

}  // namespace moe::test
