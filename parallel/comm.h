// Comm: the process group. This is the MPI implementation (any buffer, any number of ranks per
// device); the NCCL one joins it behind the same calls. Without mpirun it is a world of one.
// Reductions use MPI's fixed-order algorithms, so results do not depend on timing.
#pragma once
#include <cstdint>

namespace moe {

class Comm {
 public:
  // Initialises MPI if needed (finalised by the destructor of the instance that initialised it).
  Comm(int* argc, char*** argv);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }

  void allreduce_sum(float* data, int64_t n) const;    // in place
  void allreduce_sum(double* data, int64_t n) const;   // in place
  void broadcast(void* data, int64_t bytes, int root = 0) const;
  void barrier() const;

 private:
  int rank_ = 0, size_ = 1;
  bool owns_mpi_ = false;
};

}  // namespace moe
