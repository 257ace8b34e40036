// bf16 copies of weight matrices, made once and reused while the weights cannot change.
//
// A bf16 linear layer reads its weight matrix as bf16 operands in the forward GEMM and again in the
// dgrad GEMM, on every micro-batch, and a decoder reads it on every token. Rounding W each time
// costs a pass over it per GEMM (at decode, more than the GEMM itself). Inside a Bf16WeightScope the
// bf16 GEMMs (framework/precision.cpp) round each W once, keyed by its address and size, and read
// the copy afterwards.
//
// The contract of an open scope: the weights it sees do not change. The train step holds one
// around its forwards and backwards (the optimizer runs after it closes), evaluation around its
// batches, a Generator for its lifetime. Storage that is rebound to other weights while a scope is
// open (FSDP's pooled gather buffers) must be forgotten (bf16_weights_forget, which
// ParamStore::bind calls). The last scope to close frees every copy.
//
// The copies live where W lives: bf16_weights keeps host copies of host weights, and a device
// backend keeps device copies of device weights through weights_kept with its own maker
// (framework/cuda/linear.cpp), in the same cache, under the same scope and forgetting rules.
// fp8 GEMMs keep their forms of W the same way (WeightForm below: the 128x128-block quantised
// values on the host, fp8_weights in precision.h; the E4M3 codes and scales on the device).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

namespace moe {

class Bf16WeightScope {
 public:
  Bf16WeightScope();
  ~Bf16WeightScope();
  Bf16WeightScope(const Bf16WeightScope&) = delete;
  Bf16WeightScope& operator=(const Bf16WeightScope&) = delete;
};

// W[n] as bf16 bits, rounded on the first call for (W, n) inside an open scope and kept until the
// last scope closes; null when no scope is open (the caller rounds into scratch itself).
const uint16_t* bf16_weights(const float* W, int64_t n);
// fp8 GEMMs read W in DeepSeek-V3's 128x128 blocks, quantised the same way every time: the same
// cache keeps those forms too, one copy per (W, n, form), under the same scope and forgetting rules.
enum class WeightForm : uint8_t {
  Bf16,        // bf16 bits (bf16_weights; the device's copies)
  Fp8Blocks,   // host: W fake-quantised in 128x128 blocks, as f32 (fp8_weights, precision.h)
  Fp8Forward,  // device: W's E4M3 codes and block scales as the forward GEMM reads them
  Fp8Dgrad,    // device: the same for W^T, as the dgrad GEMM reads them
};
using KeptCopy = std::shared_ptr<const void>;
// The kept copy of W[n] in `form` (bytes: its size, for bf16_weights_bytes), made by make() on the
// first call inside an open scope; null when no scope is open (make is not called).
const void* weights_kept(const float* W, int64_t n, WeightForm form, int64_t bytes,
                         const std::function<KeptCopy()>& make);
// Drops the copies of every matrix that starts in [begin, begin + n).
void bf16_weights_forget(const float* begin, int64_t n);
// Bytes held by the copies of every form (for tests and memory reports).
int64_t bf16_weights_bytes();

}  // namespace moe
