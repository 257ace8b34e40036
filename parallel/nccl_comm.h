// NcclComm: the NCCL process group, for buffers in GPU memory (docs/parallelism.md, "NCCL").
//
// Built only with the CUDA backend when NCCL is found (library moe_nccl); the CPU build, the `moe`
// binary and model/ never see it. It lives in parallel/ because it is made from, and bootstrapped
// over, an MPI Comm (parallel/comm.h): rank 0 calls ncclGetUniqueId, the id is broadcast over the
// Comm, every rank calls ncclCommInitRank. One NcclComm per Comm (world, mesh.dp_comm(), ...),
// created collectively by all of its ranks, each on its own GPU.
//
// Streams: every collective runs on the NcclComm's own non-blocking stream, so communication
// overlaps compute on other streams. A call first makes that stream wait for the work already
// queued on `after` (the stream that produced the input; default: the legacy default stream,
// where the CUDA ops run today). The blocking calls return once the result is in memory; the i*
// calls return an NcclRequest whose wait(stream) makes a compute stream wait for the result
// without blocking the host, and whose wait() blocks the host.
//
// Determinism: NCCL adds contributions in the order of its ring or tree algorithm (chosen by
// message size, topology and NCCL version), not in the fixed rank order of the MPI Comm, so sums
// differ from Comm's in the last bits, and the bitwise equality across layouts that Comm gives
// (docs/parallelism.md, "Determinism") holds only on the MPI path. What NCCL gives instead: every
// rank ends an all-reduce with the same bits, and the same call on the same communicator,
// topology, sizes and NCCL version reproduces its result run to run (NCCL_ALGO/NCCL_PROTO pin the
// algorithm); reduce-scatter and all-reduce on the same data need not agree bitwise.
//
// Errors: every NCCL call is checked (MOE_NCCL_CHECK: file:line, the call, ncclGetErrorString and
// NCCL's last error message) and throws moe::Error. A host wait polls, and one longer than the
// Comm's MOE_COMM_TIMEOUT_S (or an asynchronous NCCL error, e.g. a peer that died) aborts the
// NCCL communicator and ends the job through Comm::abort, like the MPI watchdog. A stream wait
// (wait(stream)) is not watched: the GPU waits, the host goes on.
#pragma once
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdint>
#include <string>

#include "framework/error.h"
#include "parallel/comm.h"
#include "parallel/node.h"

namespace moe {

struct NcclError : Error {
  using Error::Error;
};

namespace nccl {
// The message of a failed call (exposed for tests): "<file>:<line>: <call> failed: <result name>
// (<ncclGetErrorString>)[: <ncclGetLastError>]".
std::string error_message(ncclResult_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_error(ncclResult_t status, const char* call, const char* file, int line);

// Picks and makes current this rank's GPU: local_rank(comm) (parallel/node.h) modulo the visible
// devices. Throws
// when there is no device. Returns the device id.
int select_device(const Comm& comm);
}  // namespace nccl

class NcclComm;

// A posted NCCL collective: an event recorded on the NcclComm's stream after the operation. Its
// buffers must stay alive and untouched until it has been waited for (by the host or by a stream
// whose later work uses them), and it must be settled before its NcclComm is destroyed. One host
// thread per NcclComm, as for Comm. Move-only; the destructor waits on the host if nothing waited.
class NcclRequest {
 public:
  NcclRequest() = default;
  NcclRequest(NcclRequest&&) noexcept;
  NcclRequest& operator=(NcclRequest&&) noexcept;
  NcclRequest(const NcclRequest&) = delete;
  NcclRequest& operator=(const NcclRequest&) = delete;
  ~NcclRequest();

  // Work queued on `stream` after this call runs once the collective is done; the host does not
  // block. Counts as waited.
  void wait(cudaStream_t stream);
  // Blocks the host until the collective is done (watchdog as above). Waiting again is a no-op.
  void wait();
  // True once the collective is done; never blocks.
  bool test();

 private:
  friend class NcclComm;
  void settle() noexcept;
  void release() noexcept;

  cudaEvent_t event_ = nullptr;
  const NcclComm* comm_ = nullptr;
  const char* name_ = "";
  bool waited_ = true;
};

class NcclComm {
 public:
  // Collective over `comm`: selects this rank's GPU (nccl::select_device) unless `device` >= 0,
  // creates the NCCL communicator with comm's ranks and size, and a non-blocking stream. `comm`
  // must outlive this NcclComm (its abort and timeout are used).
  explicit NcclComm(const Comm& comm, int device = -1);
  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  ncclComm_t native() const { return comm_; }
  const Comm& mpi() const { return *mpi_; }

  // The same operations as Comm, on device pointers (f32 element counts unless said otherwise).
  // Blocking: the result is in memory on return. i*: see NcclRequest.
  void allreduce_sum(float* data, int64_t n, cudaStream_t after = nullptr) const {
    iallreduce_sum(data, n, after).wait();
  }
  NcclRequest iallreduce_sum(float* data, int64_t n, cudaStream_t after = nullptr) const;
  // recv[r*n ..+ n) = rank r's send[0 ..+ n); send may be recv + rank()*n.
  void allgather(const float* send, float* recv, int64_t n, cudaStream_t after = nullptr) const {
    iallgather(send, recv, n, after).wait();
  }
  NcclRequest iallgather(const float* send, float* recv, int64_t n, cudaStream_t after = nullptr) const;
  // send: [size()][n]; recv[0 ..+ n) = sum over ranks of their row rank().
  void reduce_scatter_sum(const float* send, float* recv, int64_t n, cudaStream_t after = nullptr) const {
    ireduce_scatter_sum(send, recv, n, after).wait();
  }
  NcclRequest ireduce_scatter_sum(const float* send, float* recv, int64_t n, cudaStream_t after = nullptr) const;
  // As Comm::alltoallv: counts and displacements (host arrays, indexed by rank) in elements.
  // One ncclSend/ncclRecv pair per peer with a non-zero count, in one NCCL group.
  void alltoallv(const float* send, Counts send_counts, Counts send_displs, float* recv, Counts recv_counts,
                 Counts recv_displs, cudaStream_t after = nullptr) const {
    ialltoallv(send, send_counts, send_displs, recv, recv_counts, recv_displs, after).wait();
  }
  NcclRequest ialltoallv(const float* send, Counts send_counts, Counts send_displs, float* recv, Counts recv_counts,
                         Counts recv_displs, cudaStream_t after = nullptr) const;
  // In place, `bytes` bytes from rank `root`.
  void broadcast(void* data, int64_t bytes, int root = 0, cudaStream_t after = nullptr) const {
    ibroadcast(data, bytes, root, after).wait();
  }
  NcclRequest ibroadcast(void* data, int64_t bytes, int root = 0, cudaStream_t after = nullptr) const;

 private:
  friend class NcclRequest;
  void begin(cudaStream_t after) const;          // the comm stream waits for `after`
  NcclRequest end(const char* name) const;       // records the request's event
  [[noreturn]] void fail(const std::string& message) const;  // aborts NCCL, then the job

  const Comm* mpi_ = nullptr;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;  // recorded on `after` by begin()
  int rank_ = 0, size_ = 1, device_ = 0;
};

}  // namespace moe

#define MOE_NCCL_CHECK(call)                                                                   \
  do {                                                                                         \
    const ncclResult_t moe_status_ = (call);                                                   \
    if (moe_status_ != ncclSuccess) ::moe::nccl::throw_error(moe_status_, #call, __FILE__, __LINE__); \
  } while (0)
