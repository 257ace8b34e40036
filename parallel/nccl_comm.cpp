#include "parallel/nccl_comm.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "framework/cuda/check.h"
#include "framework/cuda/device.h"
#include "parallel/comm_stats.h"
#include "parallel/mpi_util.h"

namespace moe {

namespace nccl {

namespace {

const char* result_name(ncclResult_t s) {
  switch (s) {
    case ncclSuccess: return "ncclSuccess";
    case ncclUnhandledCudaError: return "ncclUnhandledCudaError";
    case ncclSystemError: return "ncclSystemError";
    case ncclInternalError: return "ncclInternalError";
    case ncclInvalidArgument: return "ncclInvalidArgument";
    case ncclInvalidUsage: return "ncclInvalidUsage";
    case ncclRemoteError: return "ncclRemoteError";
    case ncclInProgress: return "ncclInProgress";
    default: return "ncclResult?";
  }
}

}  // namespace

std::string error_message(ncclResult_t status, const char* call, const char* file, int line) {
  std::string msg = detail::concat(file, ":", line, ": ", call, " failed: ", result_name(status), " (",
                                   ncclGetErrorString(status), ")");
  const char* last = ncclGetLastError(nullptr);  // this thread's last NCCL error, often more specific
  if (last && *last) msg += detail::concat(": ", last);
  return msg;
}

void throw_error(ncclResult_t status, const char* call, const char* file, int line) {
  throw NcclError(error_message(status, call, file, line));
}

int select_device(const Comm& comm) {
  std::string why;
  const int n = cuda::device_count(&why);
  if (n == 0) throw NcclError(detail::concat("rank ", comm.world_rank(), ": no CUDA device for NCCL (", why, ")"));
  const int device = local_rank(comm) % n;
  MOE_CUDA_CHECK(cudaSetDevice(device));
  return device;
}

}  // namespace nccl

// ---- NcclRequest ----

NcclRequest::NcclRequest(NcclRequest&& o) noexcept { *this = std::move(o); }

NcclRequest& NcclRequest::operator=(NcclRequest&& o) noexcept {
  if (this != &o) {
    settle();
    release();
    std::swap(event_, o.event_);
    std::swap(comm_, o.comm_);
    std::swap(name_, o.name_);
    std::swap(waited_, o.waited_);
  }
  return *this;
}

NcclRequest::~NcclRequest() {
  settle();
  release();
}

void NcclRequest::release() noexcept {
  if (event_) cudaEventDestroy(event_);
  event_ = nullptr;
  comm_ = nullptr;
  waited_ = true;
}

void NcclRequest::settle() noexcept {
  if (waited_ || !comm_) return;
  try {
    wait();
  } catch (const std::exception& e) {
    comm_->fail(e.what());
  }
}

void NcclRequest::wait(cudaStream_t stream) {
  if (!event_) return;
  MOE_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0));
  waited_ = true;
}

bool NcclRequest::test() {
  if (!event_) return true;
  const cudaError_t s = cudaEventQuery(event_);
  if (s == cudaErrorNotReady) return false;
  MOE_CUDA_CHECK(s);
  waited_ = true;
  return true;
}

void NcclRequest::wait() {
  if (!event_ || waited_) return;
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const double timeout_s = comm_->mpi().timeout_s();
  for (int spins = 0; !test(); ++spins) {
    ncclResult_t async = ncclSuccess;
    MOE_NCCL_CHECK(ncclCommGetAsyncError(comm_->native(), &async));
    if (async != ncclSuccess && async != ncclInProgress)
      comm_->fail(detail::concat("collective ", name_, " failed: ", ncclGetErrorString(async)));
    if (timeout_s > 0 && std::chrono::duration<double>(clock::now() - start).count() > timeout_s)
      comm_->fail(detail::concat("collective ", name_, " timed out after ", timeout_s, " s (MOE_COMM_TIMEOUT_S)"));
    if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// ---- NcclComm ----

NcclComm::NcclComm(const Comm& comm, int device) : mpi_(&comm), rank_(comm.rank()), size_(comm.size()) {
  // A rank that fails here would leave the others waiting in the broadcast or in NCCL's
  // bootstrap: end the job (a world of one just throws).
  try {
    device_ = device >= 0 ? device : nccl::select_device(comm);
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    ncclUniqueId id{};
    if (rank_ == 0) MOE_NCCL_CHECK(ncclGetUniqueId(&id));
    comm.broadcast(&id, int64_t(sizeof id), 0);
    MOE_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    MOE_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  } catch (const std::exception& e) {
    if (size_ > 1) comm.abort(e.what());
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
    throw;
  }
}

NcclComm::~NcclComm() {
  // Errors are ignored: a destructor cannot throw, and a failed collective was reported already.
  cudaStreamSynchronize(stream_);
  if (ncclCommFinalize(comm_) == ncclSuccess)
    ncclCommDestroy(comm_);
  else
    ncclCommAbort(comm_);
  cudaEventDestroy(ready_);
  cudaStreamDestroy(stream_);
}

void NcclComm::fail(const std::string& message) const {
  ncclCommAbort(comm_);  // unblocks NCCL kernels that wait for a peer
  mpi_->abort(message);
}

void NcclComm::begin(cudaStream_t after) const {
  MOE_CUDA_CHECK(cudaEventRecord(ready_, after));
  MOE_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
}

NcclRequest NcclComm::end(const char* name) const {
  NcclRequest r;
  MOE_CUDA_CHECK(cudaEventCreateWithFlags(&r.event_, cudaEventDisableTiming));
  r.comm_ = this;
  r.name_ = name;
  MOE_CUDA_CHECK(cudaEventRecord(r.event_, stream_));
  r.waited_ = false;
  return r;
}

NcclRequest NcclComm::iallreduce_sum(float* data, int64_t n, cudaStream_t after) const {
  if (size_ > 1) count_collective(CollectiveKind::AllReduce, n * int64_t(sizeof(float)));
  begin(after);
  MOE_NCCL_CHECK(ncclAllReduce(data, data, size_t(n), ncclFloat32, ncclSum, comm_, stream_));
  return end("allreduce_sum");
}

NcclRequest NcclComm::iallgather(const float* send, float* recv, int64_t n, cudaStream_t after) const {
  if (size_ > 1) count_collective(CollectiveKind::AllGather, n * size_ * int64_t(sizeof(float)));
  begin(after);
  MOE_NCCL_CHECK(ncclAllGather(send, recv, size_t(n), ncclFloat32, comm_, stream_));
  return end("allgather");
}

NcclRequest NcclComm::ireduce_scatter_sum(const float* send, float* recv, int64_t n, cudaStream_t after) const {
  if (size_ > 1) count_collective(CollectiveKind::ReduceScatter, n * size_ * int64_t(sizeof(float)));
  begin(after);
  MOE_NCCL_CHECK(ncclReduceScatter(send, recv, size_t(n), ncclFloat32, ncclSum, comm_, stream_));
  return end("reduce_scatter_sum");
}

NcclRequest NcclComm::ialltoallv(const float* send, Counts send_counts, Counts send_displs, float* recv,
                                 Counts recv_counts, Counts recv_displs, cudaStream_t after) const {
  MOE_CHECK(int(send_counts.size()) == size_ && int(send_displs.size()) == size_ && int(recv_counts.size()) == size_ &&
                int(recv_displs.size()) == size_,
            "alltoallv needs one count and displacement per rank");
  if (size_ > 1) {
    int64_t sent = 0;
    for (int64_t c : send_counts) sent += c;
    count_collective(CollectiveKind::AllToAllV, sent * int64_t(sizeof(float)));
  }
  begin(after);
  MOE_NCCL_CHECK(ncclGroupStart());
  for (int j = 0; j < size_; ++j) {
    if (send_counts[j] > 0)
      MOE_NCCL_CHECK(ncclSend(send + send_displs[j], size_t(send_counts[j]), ncclFloat32, j, comm_, stream_));
    if (recv_counts[j] > 0)
      MOE_NCCL_CHECK(ncclRecv(recv + recv_displs[j], size_t(recv_counts[j]), ncclFloat32, j, comm_, stream_));
  }
  MOE_NCCL_CHECK(ncclGroupEnd());
  return end("alltoallv");
}

NcclRequest NcclComm::ibroadcast(void* data, int64_t bytes, int root, cudaStream_t after) const {
  if (size_ > 1) count_collective(CollectiveKind::Broadcast, bytes);
  begin(after);
  MOE_NCCL_CHECK(ncclBroadcast(data, data, size_t(bytes), ncclUint8, root, comm_, stream_));
  return end("broadcast");
}

}  // namespace moe
