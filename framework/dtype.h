// Element types. f32 is the master/compute type on the CPU; bf16 and fp8 are storage types rounded
// exactly as on the GPU (round-to-nearest-even), so every precision can be emulated on the CPU.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "framework/kernels/cast.h"

namespace moe {

enum class DType : uint8_t { F32, BF16, F8E4M3, F8E5M2, U16, U32, I32, I64 };

inline int64_t dtype_size(DType t) {
  switch (t) {
    case DType::I64: return 8;
    case DType::F32: case DType::U32: case DType::I32: return 4;
    case DType::BF16: case DType::U16: return 2;
    case DType::F8E4M3: case DType::F8E5M2: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F8E4M3: return "fp8_e4m3";
    case DType::F8E5M2: return "fp8_e5m2";
    case DType::U16: return "u16";
    case DType::U32: return "u32";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
  }
  return "?";
}

// bf16 rounding is single-source kernel math (framework/kernels/cast.h); these names predate it.
using kern::bf16_bits_to_f32;
using kern::f32_to_bf16_bits;
using kern::round_bf16;

}  // namespace moe
