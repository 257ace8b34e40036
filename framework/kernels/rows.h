// All single-source kernels, one header per family (framework/kernels/row.h explains the scheme):
//   activation.h  fast_expf, sigmoid, SwiGLU           norm.h     RMSNorm
//   rope.h        rotary embedding                      softmax.h  softmax, log-sum-exp, cross-entropy
//   router.h      scores, top-k, bias, weights          permute.h  MoE dispatch plan, gather, combine
//   adamw.h       AdamW update                          cast.h     f32 <-> bf16
#pragma once
#include "framework/kernels/activation.h"
#include "framework/kernels/adamw.h"
#include "framework/kernels/cast.h"
#include "framework/kernels/norm.h"
#include "framework/kernels/permute.h"
#include "framework/kernels/rope.h"
#include "framework/kernels/router.h"
#include "framework/kernels/row.h"
#include "framework/kernels/softmax.h"
