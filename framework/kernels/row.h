// How a row function sees the threads that run it.
//
// A row function (RMSNorm of one token, the softmax of one row, the rows of one expert, ...) is
// written once, as a template over a row policy R, and every loop over the row's elements is
//   for (int64_t i = r.lane(); i < n; i += r.width()) ...
// Reductions go through the policy and return the whole row's result to every lane:
//   r.sum(v), r.max(v)            over the lanes' partial values
//   r.max_bits(v)                 the integer max of uint32 values (fp8.h's amax_bits)
//   r.exclusive_scan(v, &total)   this lane's exclusive prefix of v over lanes, and the total
//   r.sync()                      all lanes' writes to shared scratch are visible
//   r.leader()                    the one lane that writes a row's scalar results
// Two policies exist:
//   SerialRow (here)              one lane: the CPU backend runs each row on one thread, and the
//                                 loops above become the plain serial loops (same order of
//                                 operations as a hand-written CPU loop)
//   cuda::BlockRow (launch.cuh)   one CUDA thread block per row, reductions through warp shuffles
//                                 and shared memory in a fixed order (deterministic for a given
//                                 block size)
// Rules for row functions, so that they are correct under both: every lane calls every reduction
// and sync (no lane-dependent early return before one); a lane writes only elements of its own
// stride, or scalars when it is the leader; data another lane wrote is read only after a reduction
// or sync.
#pragma once
#include <stdint.h>

#include "framework/kernels/hd.h"

namespace moe::kern {

struct SerialRow {
  MOE_HD int lane() const { return 0; }
  MOE_HD int width() const { return 1; }
  MOE_HD bool leader() const { return true; }
  template <class T>
  MOE_HD T sum(T v) { return v; }
  MOE_HD float max(float v) { return v; }
  MOE_HD uint32_t max_bits(uint32_t v) { return v; }
  template <class T>
  MOE_HD T exclusive_scan(T v, T* total) {
    *total = v;
    return T(0);
  }
  MOE_HD void sync() {}
};

}  // namespace moe::kern
