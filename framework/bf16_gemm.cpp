#include "framework/bf16_gemm.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "framework/error.h"
#include "framework/gemm.h"
#include "framework/gemm_kernels.h"
#include "framework/profiler.h"
#include "framework/scratch.h"

#ifdef MOE_HAVE_DNNL
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace moe {
namespace {

struct Backend {
  bool native = false;
  std::string name;
};

// The emulated GEMM on the same operands: widen both to f32 and run the f32 GEMM (the products of
// bf16 values are exact in f32, so this is today's emulation bit for bit).
void emulated_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                     const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  ScratchScope scope;
  const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
  float* a = scratch_floats(a_rows * a_cols);
  float* b = scratch_floats(b_rows * b_cols);
  for (int64_t r = 0; r < a_rows; ++r)
    for (int64_t c = 0; c < a_cols; ++c) a[r * a_cols + c] = kern::bf16_bits_to_f32(A[r * lda + c]);
  for (int64_t r = 0; r < b_rows; ++r)
    for (int64_t c = 0; c < b_cols; ++c) b[r * b_cols + c] = kern::bf16_bits_to_f32(B[r * ldb + c]);
  gemm_serial(ta, tb, M, N, K, alpha, a, a_cols, b, b_cols, beta, C, ldc);
}

#ifdef MOE_HAVE_DNNL
using dnnl::memory;
using Dims = memory::dims;
using DT = memory::data_type;
constexpr auto kRuntime = DNNL_RUNTIME_DIM_VAL;

const dnnl::engine& cpu_engine() {
  static const dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// Matmul descriptors for op(A)[M,K] @ op(B)[K,N] with the given strides; `m`/`k` may be kRuntime.
// A transposed operand is the same memory read with swapped strides.
memory::desc a_desc(int64_t m, int64_t k, bool ta, int64_t lda) {
  return memory::desc(Dims{m, k}, DT::bf16, ta ? Dims{1, lda} : Dims{lda, 1});
}
memory::desc b_desc(int64_t k, int64_t n, bool tb, int64_t ldb) {
  return memory::desc(Dims{k, n}, DT::bf16, tb ? Dims{1, ldb} : Dims{ldb, 1});
}
memory::desc c_desc(int64_t m, int64_t n, int64_t ldc) { return memory::desc(Dims{m, n}, DT::f32, Dims{ldc, 1}); }

// One matmul primitive per shape. Which dimension is left to run time is a fixed rule, never the
// history of calls, so a resumed run picks the same kernels and gets the same bits: the rows M
// (tokens: an expert's rows change every step) when A is not transposed, else the reduction K
// (the tokens of a weight gradient dW = dy^T x). Creating a primitive costs 0.1-1 ms; a training
// step reuses a few dozen.
struct Key {
  bool ta, tb;
  int64_t fixed_m_or_k, n, lda, ldb, ldc;
  uint32_t alpha_bits, beta_bits;
  bool operator==(const Key& o) const { return std::memcmp(this, &o, sizeof(Key)) == 0; }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    const auto* p = reinterpret_cast<const unsigned char*>(&k);
    size_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(Key); ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
  }
};
struct Entry {
  bool declined = false;  // oneDNN offered only its reference kernel: use the emulation instead
  dnnl::matmul prim;
  size_t scratch_bytes = 0;
  // The memory objects of the last call, re-pointed when the run-time dimension repeats (attention
  // calls the same shapes thousands of times a step; making them costs more than a small GEMM).
  memory a, b, c, scratch;
  int64_t m = -1, k = -1;
};

// Per thread: primitives, stream and scratchpad are used only by the thread that made them, so
// no locks; oneDNN runs single-threaded inside (the pool decides the split, as for OpenBLAS).
struct ThreadState {
  std::unordered_map<Key, Entry, KeyHash> cache;
  dnnl::stream stream{cpu_engine()};
  std::vector<unsigned char> scratchpad;
  ThreadState() { omp_set_num_threads(1); }
};

ThreadState& thread_state() {
  thread_local ThreadState s;
  return s;
}

void note_declined_once(const Key& k, const std::string& impl) {
  static std::once_flag once;
  std::call_once(once, [&] {
    std::fprintf(stderr,
                 "note: oneDNN declined a bf16 GEMM shape (ta=%d tb=%d n=%lld; it offered '%s'); such shapes run "
                 "the emulated bf16 GEMM\n",
                 int(k.ta), int(k.tb), (long long)k.n, impl.c_str());
  });
}

// Each thread builds its own primitives, but oneDNN shares them underneath through its global
// primitive cache: a second thread asking for the same shape gets the first thread's primitive, handed
// over inside the library by a future whose atomics ThreadSanitizer cannot see (libdnnl is not
// instrumented), so `make tsan` flagged our inlined dnnl.hpp reading the other thread's descriptor.
// Creating primitives under one lock makes that hand-over an ordering TSan sees; it costs nothing
// measurable, since a thread creates each shape's primitive once.
std::mutex& primitive_creation_lock() {
  static std::mutex m;
  return m;
}

Entry make_entry(const Key& k, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  std::lock_guard<std::mutex> lock(primitive_creation_lock());
  Entry e;
  const int64_t m = ta ? M : kRuntime, kk = ta ? kRuntime : K;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (alpha != 1.f) attr.set_output_scales(0, {alpha});
  if (beta != 0.f) {
    dnnl::post_ops po;
    po.append_sum(beta);
    attr.set_post_ops(po);
  }
  try {
    dnnl::matmul::primitive_desc pd(
        dnnl::matmul::desc(a_desc(m, kk, ta, k.lda), b_desc(kk, N, tb, k.ldb), c_desc(m, N, k.ldc)), attr,
        cpu_engine());
    const std::string impl = pd.impl_info_str();
    if (impl.rfind("ref", 0) == 0) {
      e.declined = true;
      note_declined_once(k, impl);
      return e;
    }
    e.prim = dnnl::matmul(pd);
    e.scratch_bytes = pd.scratchpad_desc().get_size();
  } catch (const dnnl::error& err) {
    e.declined = true;
    note_declined_once(k, err.what());
  }
  return e;
}

Backend detect() {
  Backend b;
  const char* env = std::getenv("MOE_BF16_GEMM");
  if (env && std::string(env) == "emulated") {
    b.name = "emulated (MOE_BF16_GEMM=emulated)";
    return b;
  }
  const unsigned isa = unsigned(dnnl::get_effective_cpu_isa());
  const unsigned bf16 = unsigned(dnnl::cpu_isa::avx512_core_bf16);
  if ((isa & bf16) != bf16) {
    b.name = "emulated (this CPU has no AVX512-BF16)";
    return b;
  }
  const dnnl_version_t* v = dnnl::version();
  b.native = true;
  b.name = "onednn " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
           " avx512_core_bf16";
  return b;
}
#else
Backend detect() { return Backend{false, "emulated (built without oneDNN)"}; }
#endif

const Backend& backend() {
  static const Backend b = detect();
  return b;
}

}  // namespace

bool bf16_gemm_native() { return backend().native; }
const char* bf16_gemm_backend() { return backend().name.c_str(); }

void gemm_bf16_serial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                      int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) return gemm_detail::scale_only(M, N, beta, C, ldc);
  if (gemm_detail::skinny_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
#ifdef MOE_HAVE_DNNL
  if (bf16_gemm_native()) {
    ThreadState& ts = thread_state();
    uint32_t ab, bb;
    std::memcpy(&ab, &alpha, 4);
    std::memcpy(&bb, &beta, 4);
    const Key key{ta, tb, ta ? M : K, N, lda, ldb, ldc, ab, bb};
    auto it = ts.cache.find(key);
    if (it == ts.cache.end()) it = ts.cache.emplace(key, make_entry(key, ta, tb, M, N, K, alpha, beta)).first;
    Entry& e = it->second;
    if (!e.declined) {
      if (ts.scratchpad.size() < e.scratch_bytes) ts.scratchpad.resize(e.scratch_bytes);
      if (e.m != M || e.k != K) {
        e.a = memory(a_desc(M, K, ta, lda), cpu_engine(), DNNL_MEMORY_NONE);
        e.b = memory(b_desc(K, N, tb, ldb), cpu_engine(), DNNL_MEMORY_NONE);
        e.c = memory(c_desc(M, N, ldc), cpu_engine(), DNNL_MEMORY_NONE);
        e.scratch = memory(memory::desc(Dims{int64_t(e.scratch_bytes)}, DT::u8, Dims{1}), cpu_engine(),
                           DNNL_MEMORY_NONE);
        e.m = M;
        e.k = K;
      }
      // oneDNN takes non-const handles; it only reads A and B.
      e.a.set_data_handle(const_cast<uint16_t*>(A));
      e.b.set_data_handle(const_cast<uint16_t*>(B));
      e.c.set_data_handle(C);
      e.scratch.set_data_handle(ts.scratchpad.data());
      // The C API takes the arguments as an array (the C++ one builds a hash map per call).
      const dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, e.a.get()},
                                      {DNNL_ARG_WEIGHTS, e.b.get()},
                                      {DNNL_ARG_DST, e.c.get()},
                                      {DNNL_ARG_SCRATCHPAD, e.scratch.get()}};
      dnnl::error::wrap_c_api(dnnl_primitive_execute(e.prim.get(), ts.stream.get(), 4, args),
                              "bf16 GEMM: oneDNN matmul failed");
      return;
    }
  }
#endif
  emulated_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  MOE_LEAF_PHASE("gemm");
  gemm_detail::split_gemm(gemm_bf16_serial, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void to_bf16(uint16_t* y, const float* x, int64_t n) {
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = kern::f32_to_bf16_bits(x[i]);
  }, 1 << 14);
}

}  // namespace moe
