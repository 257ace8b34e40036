// cuDNN's backend API over the graphs of framework/sdpa_graph.h. Every tensor and node becomes
// one backend descriptor; the engine heuristics (mode A, then the fallback list) propose engine
// configurations and the first whose execution plan finalises is kept for the shape. Building
// never throws: any status other than success declines the shape (noted once) and the caller runs
// its own path. Executing a built plan is checked like every other CUDA call (MOE_CUDNN_CHECK).
#include "framework/cuda/cudnn_attention.h"

#include <atomic>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "framework/cuda/allocator.h"
#include "framework/cuda/check.h"
#include "framework/sdpa_graph.h"

namespace moe::cuda {

namespace {
std::atomic<bool>& switched_on() {
  static std::atomic<bool> on{[] {
    const char* v = std::getenv("MOE_CUDNN_ATTENTION");
    return !(v && std::strcmp(v, "0") == 0);
  }()};
  return on;
}
}  // namespace

bool cudnn_attention_enabled() {
#if defined(MOE_HAVE_CUDNN)
  return switched_on().load();
#else
  return false;
#endif
}

void set_cudnn_attention(bool on) { switched_on().store(on); }

namespace {
std::atomic<int64_t> runs{0};
}  // namespace
int64_t cudnn_attention_runs() { return runs.load(); }

std::string cudnn_attention_shape(const AttentionLayout& l) {
  // The scale to the bit: a plan carries its scale as a by-value scalar, so two scales are two plans.
  char bits[16];
  std::snprintf(bits, sizeof bits, "%08x", std::bit_cast<uint32_t>(l.scale));
  return detail::concat(l.B, "x", l.T, " heads ", l.H, " dqk ", l.dqk, " dv ", l.dv, " ld ", l.q_ld, "/", l.k_ld,
                        "/", l.v_ld, "/", l.o_ld, " scale ", l.scale, " (0x", bits, ")",
                        l.doc_start ? " documents" : "");
}

#if !defined(MOE_HAVE_CUDNN)

bool cudnn_attention_forward(uint16_t*, float*, const uint16_t*, const uint16_t*, const uint16_t*,
                             const AttentionLayout&, cudaStream_t) {
  return false;
}
GraphCheck cudnn_check_graph(const sdpa::Graph&) { return {false, "built without cuDNN"}; }
bool cudnn_attention_backward(uint16_t*, uint16_t*, uint16_t*, const uint16_t*, const uint16_t*, const uint16_t*,
                              const uint16_t*, const uint16_t*, const float*, const AttentionLayout&, cudaStream_t) {
  return false;
}

#else

namespace {

// A backend descriptor, destroyed with its owner.
class Descriptor {
 public:
  Descriptor() = default;
  explicit Descriptor(cudnnBackendDescriptorType_t type) { status_ = cudnnBackendCreateDescriptor(type, &d_); }
  Descriptor(Descriptor&& o) noexcept : d_(o.d_), status_(o.status_) { o.d_ = nullptr; }
  Descriptor& operator=(Descriptor&& o) noexcept {
    std::swap(d_, o.d_);
    status_ = o.status_;
    return *this;
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  ~Descriptor() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  cudnnBackendDescriptor_t get() const { return d_; }
  cudnnStatus_t created() const { return status_; }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
  cudnnStatus_t status_ = CUDNN_STATUS_NOT_INITIALIZED;
};

// The first failure of a build, with the call and cuDNN's own message.
struct BuildError {
  std::string what;
};

void check(cudnnStatus_t status, const char* call) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  char message[512] = {0};
  cudnnGetLastErrorString(message, sizeof message);
  throw BuildError{detail::concat(call, ": ", cudnnGetErrorString(status), message[0] ? " (" : "", message,
                                  message[0] ? ")" : "")};
}
#define MOE_CUDNN_BUILD(call) check((call), #call)

template <class T>
void set(const Descriptor& d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, const T* values,
         int64_t count = 1) {
  MOE_CUDNN_BUILD(cudnnBackendSetAttribute(d.get(), name, type, count, values));
}
void set_descriptor(const Descriptor& d, cudnnBackendAttributeName_t name, const Descriptor& value) {
  cudnnBackendDescriptor_t v = value.get();
  set(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, &v);
}
Descriptor create(cudnnBackendDescriptorType_t type) {
  Descriptor d(type);
  MOE_CUDNN_BUILD(d.created());
  return d;
}
void finalize(const Descriptor& d) { MOE_CUDNN_BUILD(cudnnBackendFinalize(d.get())); }

cudnnDataType_t data_type(sdpa::Type t) {
  switch (t) {
    case sdpa::Type::F32: return CUDNN_DATA_FLOAT;
    case sdpa::Type::BF16: return CUDNN_DATA_BFLOAT16;
    case sdpa::Type::I32: return CUDNN_DATA_INT32;
    case sdpa::Type::Bool: return CUDNN_DATA_BOOLEAN;
  }
  return CUDNN_DATA_FLOAT;
}

cudnnPointwiseMode_t pointwise_mode(sdpa::Mode m) {
  switch (m) {
    case sdpa::Mode::Mul: return CUDNN_POINTWISE_MUL;
    case sdpa::Mode::Sub: return CUDNN_POINTWISE_SUB;
    case sdpa::Mode::Add: return CUDNN_POINTWISE_ADD;
    case sdpa::Mode::Div: return CUDNN_POINTWISE_DIV;
    case sdpa::Mode::Exp: return CUDNN_POINTWISE_EXP;
    case sdpa::Mode::Log: return CUDNN_POINTWISE_LOG;
    case sdpa::Mode::GenIndex: return CUDNN_POINTWISE_GEN_INDEX;
    case sdpa::Mode::CmpGe: return CUDNN_POINTWISE_CMP_GE;
    case sdpa::Mode::LogicalAnd: return CUDNN_POINTWISE_LOGICAL_AND;
    case sdpa::Mode::BinarySelect: return CUDNN_POINTWISE_BINARY_SELECT;
    case sdpa::Mode::Identity: return CUDNN_POINTWISE_IDENTITY;
    default: throw BuildError{"not a pointwise mode"};
  }
}

Descriptor tensor(const sdpa::Tensor& t) {
  Descriptor d = create(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const cudnnDataType_t type = data_type(t.type);
  const int64_t alignment = 16;
  const bool is_virtual = t.is_virtual, by_value = t.by_value;
  set(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, &type);
  set(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, t.dim.data(), 4);
  set(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, t.stride.data(), 4);
  set(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, &t.uid);
  set(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, &alignment);
  // Only the flags that are set, as cudnn-frontend does.
  if (is_virtual) set(d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, &is_virtual);
  if (by_value) set(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, &by_value);
  finalize(d);
  return d;
}

// One operation node; `inner` keeps its pointwise / reduction / matmul descriptor alive.
Descriptor operation(const sdpa::Node& n, const std::vector<Descriptor>& tensors, std::vector<Descriptor>& inner) {
  const auto T = [&](int i) -> const Descriptor& { return tensors[size_t(i)]; };
  const cudnnDataType_t compute = data_type(n.compute);
  switch (n.kind) {
    case sdpa::Kind::Matmul: {
      Descriptor mm = create(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
      set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, &compute);
      finalize(mm);
      Descriptor op = create(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
      set_descriptor(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, T(n.a));
      set_descriptor(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, T(n.b));
      set_descriptor(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, T(n.y));
      set_descriptor(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, mm);
      finalize(op);
      inner.push_back(std::move(mm));
      return op;
    }
    case sdpa::Kind::Reduction: {
      Descriptor red = create(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
      const cudnnReduceTensorOp_t how = n.mode == sdpa::Mode::Max ? CUDNN_REDUCE_TENSOR_MAX : CUDNN_REDUCE_TENSOR_ADD;
      set(red, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, &compute);
      set(red, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, &how);
      finalize(red);
      Descriptor op = create(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
      set_descriptor(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, red);
      set_descriptor(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, T(n.a));
      set_descriptor(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, T(n.y));
      finalize(op);
      inner.push_back(std::move(red));
      return op;
    }
    case sdpa::Kind::Reshape: {
      Descriptor op = create(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
      set_descriptor(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, T(n.a));
      set_descriptor(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, T(n.y));
      finalize(op);
      return op;
    }
    case sdpa::Kind::Pointwise: {
      Descriptor pw = create(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
      const cudnnPointwiseMode_t mode = pointwise_mode(n.mode);
      set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, &mode);
      set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, &compute);
      if (n.mode == sdpa::Mode::GenIndex) set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, &n.axis);
      finalize(pw);
      Descriptor op = create(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
      set_descriptor(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw);
      set_descriptor(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, T(n.a));
      if (n.b >= 0) set_descriptor(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, T(n.b));
      if (n.t >= 0) set_descriptor(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, T(n.t));
      set_descriptor(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, T(n.y));
      finalize(op);
      inner.push_back(std::move(pw));
      return op;
    }
  }
  throw BuildError{"unknown node kind"};
}

// A finalised execution plan and everything it was built from.
struct Plan {
  sdpa::Graph graph;
  std::vector<Descriptor> tensors, inner, ops;
  Descriptor op_graph, config, plan;  // the plan's engine configuration lives as long as the plan
  int64_t workspace_bytes = 0;
};

// The first engine configuration of heuristics `mode` whose plan finalises, if any.
bool plan_from_heuristics(Plan& p, cudnnHandle_t handle, cudnnBackendHeurMode_t mode, std::string& why) {
  Descriptor heur = create(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  set_descriptor(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, p.op_graph);
  set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, &mode);
  finalize(heur);
  int64_t count = 0;
  MOE_CUDNN_BUILD(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                           0, &count, nullptr));
  std::vector<Descriptor> configs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    configs.push_back(create(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    raw.push_back(configs.back().get());
  }
  if (count > 0)
    MOE_CUDNN_BUILD(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &count, raw.data()));
  for (int64_t i = 0; i < count; ++i) {
    try {
      Descriptor plan = create(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      set(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, &handle);
      set_descriptor(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, configs[size_t(i)]);
      finalize(plan);
      MOE_CUDNN_BUILD(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                               CUDNN_TYPE_INT64, 1, nullptr, &p.workspace_bytes));
      p.plan = std::move(plan);
      p.config = std::move(configs[size_t(i)]);
      return true;
    } catch (const BuildError& e) {
      why = e.what;  // the last engine's reason
    }
  }
  if (count == 0) why = "the heuristics proposed no engine";
  return false;
}

// Every tensor, node and the operation graph of p->graph as finalised descriptors. This needs no
// GPU (cuDNN validates each descriptor on the host); the handle, when there is one, tells the
// graph its device.
void describe(Plan& p, cudnnHandle_t handle) {
  for (const sdpa::Tensor& t : p.graph.tensors) p.tensors.push_back(tensor(t));
  std::vector<cudnnBackendDescriptor_t> raw;
  for (const sdpa::Node& n : p.graph.nodes) {
    p.ops.push_back(operation(n, p.tensors, p.inner));
    raw.push_back(p.ops.back().get());
  }
  p.op_graph = create(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  if (handle) set(p.op_graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, &handle);
  set(p.op_graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, raw.data(), int64_t(raw.size()));
  finalize(p.op_graph);
}

std::unique_ptr<Plan> build(sdpa::Graph graph, cudnnHandle_t handle, std::string& why) {
  auto p = std::make_unique<Plan>();
  p->graph = std::move(graph);
  try {
    describe(*p, handle);
    if (plan_from_heuristics(*p, handle, CUDNN_HEUR_MODE_A, why) ||
        plan_from_heuristics(*p, handle, CUDNN_HEUR_MODE_FALLBACK, why))
      return p;
  } catch (const BuildError& e) {
    why = e.what;
  }
  return nullptr;
}

// The process's cuDNN handle and its plans by shape (null: declined). One GPU per process.
struct Cache {
  std::mutex mutex;
  cudnnHandle_t handle = nullptr;
  bool unavailable = false;  // cudnnCreate failed (noted once): every shape takes the GEMM path
  std::map<std::tuple<bool, std::string>, std::unique_ptr<Plan>> plans;
};
Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: plans may be used from static destructors' tensors
  return *c;
}

// The plan of this pass and layout, built on first use; null when declined.
Plan* plan_for(bool backward, const AttentionLayout& l, cudaStream_t stream) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  if (c.unavailable) return nullptr;
  if (!c.handle) {
    const cudnnStatus_t status = cudnnCreate(&c.handle);
    if (status != CUDNN_STATUS_SUCCESS) {
      c.unavailable = true, c.handle = nullptr;
      std::fprintf(stderr, "moe: cuDNN is not usable (cudnnCreate: %s); attention takes the GEMM path\n",
                   cudnnGetErrorString(status));
      return nullptr;
    }
  }
  MOE_CUDNN_CHECK(cudnnSetStream(c.handle, stream));
  const auto key = std::make_tuple(backward, cudnn_attention_shape(l));
  auto it = c.plans.find(key);
  if (it != c.plans.end()) return it->second.get();
  std::string why;
  auto plan = build(backward ? sdpa::backward_graph(l) : sdpa::forward_graph(l), c.handle, why);
  if (!plan)
    std::fprintf(stderr, "moe: cuDNN declined fused attention %s for %s: %s; using the GEMM path\n",
                 backward ? "backward" : "forward", std::get<1>(key).c_str(), why.c_str());
  return c.plans.emplace(key, std::move(plan)).first->second.get();
}

// Runs the plan with the bound tensors' pointers (by uid) and the by-value scalars.
void execute(Plan& p, const std::map<int64_t, const void*>& bound) {
  std::vector<int64_t> uids;
  std::vector<void*> pointers;
  for (const sdpa::Tensor& t : p.graph.tensors) {
    if (t.is_virtual) continue;
    uids.push_back(t.uid);
    if (t.by_value) {
      pointers.push_back(const_cast<float*>(&t.value));
    } else {
      auto it = bound.find(t.uid);
      MOE_CHECK(it != bound.end(), "cuDNN attention: tensor ", t.uid, " is not bound");
      pointers.push_back(const_cast<void*>(it->second));
    }
  }
  DeviceBuffer<char> workspace(p.workspace_bytes > 0 ? p.workspace_bytes : 1);
  void* ws = workspace.get();
  Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  MOE_CUDNN_CHECK(pack.created());
  const int64_t n = int64_t(uids.size());
  MOE_CUDNN_CHECK(cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n,
                                           uids.data()));
  MOE_CUDNN_CHECK(cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n,
                                           pointers.data()));
  MOE_CUDNN_CHECK(cudnnBackendSetAttribute(pack.get(), CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1,
                                           &ws));
  MOE_CUDNN_CHECK(cudnnBackendFinalize(pack.get()));
  MOE_CUDNN_CHECK(cudnnBackendExecute(cache().handle, p.plan.get(), pack.get()));
  runs.fetch_add(1);
}

}  // namespace

GraphCheck cudnn_check_graph(const sdpa::Graph& graph) {
  GraphCheck r;
  Plan p;
  p.graph = graph;
  try {
    describe(p, nullptr);
    r.described = true;
  } catch (const BuildError& e) {
    r.error = e.what;
  }
  return r;
}

bool cudnn_attention_forward(uint16_t* o, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                             const AttentionLayout& l, cudaStream_t stream) {
  if (!cudnn_attention_enabled() || !sdpa::supported(l)) return false;
  Plan* p = plan_for(false, l, stream);
  if (!p) return false;
  execute(*p, {{sdpa::kQ, q}, {sdpa::kK, k}, {sdpa::kV, v}, {sdpa::kO, o}, {sdpa::kStats, lse},
               {sdpa::kDocStart, l.doc_start}});
  return true;
}

bool cudnn_attention_backward(uint16_t* dq, uint16_t* dk, uint16_t* dv, const uint16_t* dout, const uint16_t* o,
                              const uint16_t* q, const uint16_t* k, const uint16_t* v, const float* lse,
                              const AttentionLayout& l, cudaStream_t stream) {
  if (!cudnn_attention_enabled() || !sdpa::supported(l)) return false;
  Plan* p = plan_for(true, l, stream);
  if (!p) return false;
  // rowsum(dO * O) and dQ's f32 accumulator: the engine's scratch, bound as tensors; the
  // accumulator starts at zero.
  DeviceBuffer<float> softmax_sum(l.B * l.H * l.T), dq_accum(l.B * l.H * l.T * l.dqk);
  MOE_CUDA_CHECK(cudaMemsetAsync(dq_accum.get(), 0, size_t(dq_accum.size()) * sizeof(float), stream));
  execute(*p, {{sdpa::kQ, q},
               {sdpa::kK, k},
               {sdpa::kV, v},
               {sdpa::kO, o},
               {sdpa::kDO, dout},
               {sdpa::kStats, lse},
               {sdpa::kSoftmaxSum, softmax_sum.get()},
               {sdpa::kDQAccum, dq_accum.get()},
               {sdpa::kDQ, dq},
               {sdpa::kDK, dk},
               {sdpa::kDV, dv},
               {sdpa::kDocStart, l.doc_start}});
  return true;
}

#endif

}  // namespace moe::cuda
