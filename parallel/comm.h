// Comm: a process group. This is the MPI implementation (CPU buffers, any number of ranks per
// machine); the NCCL one joins it behind the same calls. Without mpirun it is a world of one.
//
// Determinism: sums are formed in rank order, out = ((x_0 + x_1) + x_2) + ..., for every element,
// whatever the timing, the MPI algorithm, the message size or how the buffer is cut into MPI calls
// (MPI_SUM's order is left to the implementation). So reduce-scatter and all-reduce give the same
// bits on every rank and on every call. See docs/parallelism.md.
//
// Failures: MPI errors become moe::Error (our communicators use MPI_ERRORS_RETURN). Every
// collective waits by polling, and a wait longer than MOE_COMM_TIMEOUT_S seconds (default 600,
// 0 = no limit) ends the whole job with "error: rank R: collective <name> timed out after N s".
//
// Sizes are int64 element counts. Broadcast, all-reduce, all-gather and reduce-scatter cut large
// buffers into several MPI calls; all-to-all-v needs every count and displacement below 2^31
// elements (checked), which MoE dispatch is far from.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace moe {

// Per-rank counts or displacements of an all-to-all-v, in elements of its type, indexed by rank.
using Counts = std::span<const int64_t>;

// Displacements of counts packed back to back in rank order (the exclusive prefix sum).
std::vector<int64_t> packed_displacements(Counts counts);

// A posted non-blocking collective. Its buffers must stay alive and untouched until wait()
// returns, and it must complete before its Comm is destroyed. Only the thread that called MPI_Init
// may use it (MPI_THREAD_FUNNELED).
class Request {
 public:
  Request() = default;  // nothing pending
  Request(Request&&) noexcept;
  Request& operator=(Request&&) noexcept;
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  ~Request();  // waits if still pending; an error here ends the job (a destructor cannot throw)

  // Blocks until complete (the watchdog's timeout counts from here), then finishes local work
  // such as reduce-scatter's sum. Waiting again is a no-op.
  void wait();
  // Drives MPI progress without blocking: MPI on CPU moves non-blocking data only inside MPI
  // calls, so code that overlaps long compute should call this now and then. True once complete.
  bool test();

 private:
  friend class Comm;
  MPI_Request* slot() { return &reqs_.emplace_back(MPI_REQUEST_NULL); }  // for the next MPI_I* call
  void finish();
  void settle() noexcept;  // wait() for the destructor and move-assignment, which cannot throw

  std::vector<MPI_Request> reqs_;
  std::vector<int> args_;          // count/displacement arrays MPI may read until completion
  std::vector<std::byte> staging_;  // reduce-scatter's received contributions, [size][n]
  std::function<void()> finish_;   // local work once the transfer is done
  const char* name_ = "";
  double timeout_s_ = 0;
  int world_rank_ = 0;
};

class Comm {
 public:
  // The world (its own duplicate of MPI_COMM_WORLD). Initialises MPI if needed; the instance that
  // did finalises it, so it must outlive every other Comm and Request.
  Comm(int* argc, char*** argv);
  ~Comm();
  Comm(Comm&&) noexcept;
  Comm& operator=(Comm&&) noexcept;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  int world_rank() const { return world_rank_; }
  MPI_Comm native() const { return comm_; }  // for MPI-aware libraries (parallel HDF5, NCCL bootstrap)
  double timeout_s() const { return timeout_s_; }

  // Ranks passing the same color (>= 0) form a new Comm, ranked by key (ties by rank here).
  // Collective over this Comm; the new one inherits the timeout.
  Comm split(int color, int key) const;

  // Prints "error: rank R: <message>" (R = world rank) and ends every rank of the job with
  // exit_code via MPI_Abort. For a rank that cannot continue when others may be waiting on it.
  [[noreturn]] void abort(const std::string& message, int exit_code = 1) const;

  // In place, bitwise the same on every rank. n = elements.
  void allreduce_sum(float* data, int64_t n) const;
  void allreduce_sum(double* data, int64_t n) const;

  // recv[r*n .. r*n+n) = rank r's send[0 .. n). send may be recv + rank()*n (in place).
  void allgather(const float* send, float* recv, int64_t n) const { iallgather(send, recv, n).wait(); }
  Request iallgather(const float* send, float* recv, int64_t n) const;
  void allgather_bytes(const void* send, void* recv, int64_t bytes) const { iallgather_bytes(send, recv, bytes).wait(); }
  Request iallgather_bytes(const void* send, void* recv, int64_t bytes) const;

  // send: [size()][n], row j destined for rank j; recv[0 .. n) = sum over ranks of their row rank().
  void reduce_scatter_sum(const float* send, float* recv, int64_t n) const { ireduce_scatter_sum(send, recv, n).wait(); }
  Request ireduce_scatter_sum(const float* send, float* recv, int64_t n) const;

  // The counts of an all-to-all-v: send_counts holds k counts per destination rank ([size()][k]);
  // returns the k counts each rank sent us ([size()][k]). Collective.
  std::vector<int64_t> exchange_counts(Counts send_counts) const;
  // Rank j gets send[send_displs[j] ..+ send_counts[j]) into its recv[recv_displs[i] ..+
  // recv_counts[i]) for us = i. Counts and displacements in elements; zeros allowed.
  void alltoallv(const float* send, Counts send_counts, Counts send_displs, float* recv, Counts recv_counts,
                 Counts recv_displs) const {
    ialltoallv(send, send_counts, send_displs, recv, recv_counts, recv_displs).wait();
  }
  Request ialltoallv(const float* send, Counts send_counts, Counts send_displs, float* recv, Counts recv_counts,
                     Counts recv_displs) const;
  void alltoallv_bytes(const void* send, Counts send_counts, Counts send_displs, void* recv, Counts recv_counts,
                       Counts recv_displs) const {
    ialltoallv_bytes(send, send_counts, send_displs, recv, recv_counts, recv_displs).wait();
  }
  Request ialltoallv_bytes(const void* send, Counts send_counts, Counts send_displs, void* recv, Counts recv_counts,
                           Counts recv_displs) const;

  void broadcast(void* data, int64_t bytes, int root = 0) const;
  void barrier() const;

 private:
  Comm(MPI_Comm comm, double timeout_s);
  void release() noexcept;
  Request post(const char* name) const;  // an empty Request that waits under this Comm's watchdog
  template <class T>
  void allreduce_sum_(T* data, int64_t n, MPI_Datatype type) const;
  Request iallgather_(const void* send, void* recv, int64_t n, MPI_Datatype type, const char* name) const;
  Request ialltoallv_(const void* send, Counts send_counts, Counts send_displs, void* recv, Counts recv_counts,
                      Counts recv_displs, MPI_Datatype type, const char* name) const;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
  double timeout_s_ = 600;
  bool owns_mpi_ = false;
};

}  // namespace moe
