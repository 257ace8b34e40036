// Small building blocks bound to parameters in a ParamStore: Linear (no bias, W [out, in] as in
// Hugging Face), RMSNorm and the SwiGLU MLP (dense FFN, shared experts and each routed expert).
// Letters: N tokens, D hidden, I intermediate.
// The GEMMs of Linear (and so of every MLP, expert and attention projection) run at `prec`
// (framework/precision.h), set for the whole model by DeepSeekV3::set_precision; default fp32.
#pragma once
#include <string>

#include "framework/kernels/fp8_rows.h"
#include "framework/precision.h"
#include "model/params.h"

namespace moe {

using kern::Fp8Rows;

// An activation as the forward GEMMs that read it take it: its f32 rows and, at fp8, their E4M3
// rows when its producer wrote them (RMSNorm, SwiGLU, the MoE dispatch). An fp8 GEMM then reads
// the codes instead of quantising the f32 rows: the same result, one quantisation for every
// reader. A plain f32 pointer converts to an activation without rows.
struct Activation {
  const float* f32 = nullptr;
  const Fp8Rows* e4m3 = nullptr;
  const uint16_t* bf16 = nullptr;  // the same rounded to bf16 once, for bf16 layers (forward and wgrad)
  Activation(const float* x, const Fp8Rows* xq = nullptr, const uint16_t* xb = nullptr)  // implicit: plain f32
      : f32(x), e4m3(xq), bf16(xb) {}
};

// Activations kept for backward are stored as their backward readers take them: at bf16 an input
// that only bf16 GEMMs read (a norm's output before projections, q, k and v, the attention output)
// is kept as its bf16 rounding alone, half the bytes and the same bits those GEMMs read; so are the
// gate and up outputs (MLPActs); everything else stays f32. kept(t) is t as an Activation: its
// bf16 values (f32 null) when t is a bf16 tensor, else its f32 values.
Activation kept(const Tensor& t);
// The storage of such an activation, [N, cols]: bf16 when bf16_only, else f32.
void ensure_kept(Tensor& t, int64_t N, int64_t cols, bool bf16_only);

struct Linear {
  int w = -1;
  int64_t in = 0, out = 0;
  Precision prec = Precision::FP32;
  void init(ParamStore& ps, const std::string& name, int64_t in_features, int64_t out_features, float std);
  // y[N,out] = x[N,in] @ W^T  (y += ... when accumulate).
  void forward(const ParamStore& ps, float* y, Activation x, int64_t N, bool accumulate = false) const;
  // dx[N,in] = dy @ W (dx may be null; += when accumulate_dx); dW += dy^T @ x
  void backward(const ParamStore& ps, float* dx, const float* dy, Activation x, int64_t N,
                bool accumulate_dx = false) const;
};

struct RMSNorm {
  int w = -1;
  int64_t dim = 0;
  float eps = 1e-6f;
  void init(ParamStore& ps, const std::string& name, int64_t d, float eps_);
  // yq (when given): y's E4M3 rows are written too, for fp8 layers that read y; yb (when given):
  // y rounded to bf16 [N, dim], for bf16 layers. Returns y as they read it (with yq or yb).
  Activation forward(const ParamStore& ps, float* y, float* rstd, const float* x, int64_t N,
                     const Fp8Rows* yq = nullptr, uint16_t* yb = nullptr) const;
  // forward with y kept for backward in `y_kept` (ensure_kept): with bf16_only its bf16 rounding
  // alone, the f32 values going to `y_scratch` (scratch of the caller's scope, which must hold it
  // while the forward reads y); else y in f32, with its E4M3 rows in yq when given.
  Activation forward_kept(const ParamStore& ps, Tensor& y_kept, Tensor& y_scratch, float* rstd, const float* x,
                          int64_t N, bool bf16_only, const Fp8Rows* yq = nullptr) const;
  void backward(const ParamStore& ps, float* dx, const float* dy, const float* x, const float* rstd, int64_t N,
                bool accumulate_dx = false) const;
};

// What SwiGLU's backward needs: the two projections before the activation.
struct MLPActs {
  // The gate and up outputs: bf16 at bf16 (as autocast keeps every linear output; SwiGLU runs on
  // the rounded values), else f32. SwiGLU's output h is not kept: backward computes it again from
  // them (swiglu_of), one element-wise pass for I values per row kept fewer.
  Tensor gate_NI, up_NI;
  Tensor x_bf16;  // the routed experts at bf16 with odd D: their f32 input rows rounded once (MoELayer::run_experts)
  int64_t bytes() const { return Tensor::total_bytes(gate_NI, up_NI, x_bf16); }
};

// SwiGLU's backward from the gate and up outputs as a kept them (f32, or bf16 at bf16).
void swiglu_backward_kept(float* dg, float* du, const float* dh, const MLPActs& a, int64_t n);
// At bf16: the gate and up GEMMs' f32 outputs g, u [n] rounded into a's kept gate and up.
void keep_rounded(MLPActs& a, const float* g, const float* u, int64_t n);
// SwiGLU's output from a's kept gate and up outputs, into h (scratch of the caller's scope, held
// while the result is read): bf16 when they are. The forward and, computing it again because h is
// not kept, the backward both take it from here, so the two see the same bits.
Activation swiglu_of(const MLPActs& a, int64_t n, Tensor& h);

// down(silu(gate(x)) * up(x)); names <prefix>.{gate_proj, up_proj, down_proj}.weight
struct SwiGLUMLP {
  Linear gate_proj, up_proj, down_proj;
  void init(ParamStore& ps, const std::string& prefix, int64_t hidden, int64_t inter, float std);
  // y[N,D] (+)= mlp(x[N,D]); acts sized here.
  void forward(const ParamStore& ps, float* y, Activation x, int64_t N, MLPActs& a, bool accumulate = false) const;
  // dx[N,D] (+)= d mlp / dx; parameter gradients accumulate. Scratch reuses a's buffers' shapes.
  void backward(const ParamStore& ps, float* dx, const float* dy, Activation x, int64_t N, MLPActs& a,
                bool accumulate_dx = false) const;
  void set_precision(Precision p) { gate_proj.prec = up_proj.prec = down_proj.prec = p; }
};

}  // namespace moe
