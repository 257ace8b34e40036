#include "parallel/comm.h"

#include <mpi.h>

#include <algorithm>
#include <string>

#include "framework/error.h"

#define MPI_CHECK(call)                                                                   \
  do {                                                                                    \
    int rc_ = (call);                                                                     \
    MOE_CHECK(rc_ == MPI_SUCCESS, #call, " returned MPI error ", rc_);                    \
  } while (0)

namespace moe {

Comm::Comm(int* argc, char*** argv) {
  int initialized = 0;
  MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    owns_mpi_ = true;
  }
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
}

Comm::~Comm() {
  if (owns_mpi_) MPI_Finalize();
}

// MPI counts are int: large buffers go in chunks.
template <class T>
static void allreduce_chunked(T* data, int64_t n, MPI_Datatype type, int size) {
  if (size == 1) return;
  const int64_t chunk = int64_t(1) << 30;
  for (int64_t off = 0; off < n; off += chunk) {
    int count = int(std::min(chunk, n - off));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data + off, count, type, MPI_SUM, MPI_COMM_WORLD));
  }
}

void Comm::allreduce_sum(float* data, int64_t n) const { allreduce_chunked(data, n, MPI_FLOAT, size_); }
void Comm::allreduce_sum(double* data, int64_t n) const { allreduce_chunked(data, n, MPI_DOUBLE, size_); }

void Comm::broadcast(void* data, int64_t bytes, int root) const {
  if (size_ == 1) return;
  const int64_t chunk = int64_t(1) << 30;
  char* p = static_cast<char*>(data);
  for (int64_t off = 0; off < bytes; off += chunk)
    MPI_CHECK(MPI_Bcast(p + off, int(std::min(chunk, bytes - off)), MPI_BYTE, root, MPI_COMM_WORLD));
}

void Comm::barrier() const {
  if (size_ > 1) MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
}

}  // namespace moe
