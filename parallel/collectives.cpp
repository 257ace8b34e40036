// The data-moving collectives of Comm. Sums never use MPI_SUM: each element's contributions are
// brought to one place and added in rank order (see comm.h). For large buffers that moves the same
// bytes as MPI's ring algorithms, and the result no longer depends on how MPI schedules the work.
#include <algorithm>
#include <climits>

#include "parallel/comm.h"
#include "parallel/comm_stats.h"
#include "parallel/mpi_util.h"

namespace moe {

namespace {

// Below this many bytes of contributions ([size][n]) an all-reduce all-gathers them (one round
// trip); above it, reduce-scatter + all-gather (2(p-1)/p of the data instead of p-1). Both add in
// rank order, so the switch does not change a bit.
constexpr int64_t kGatherAllBytes = 64 << 10;

// out[k] = ((rows[0][k] + rows[1][k]) + rows[2][k]) + ... for rows: [nrows][n].
// The first two rows are added in one pass (memory-bound: one pass fewer than copy-then-add).
template <class T>
void sum_rows_in_order(const T* rows, int nrows, int64_t n, T* out) {
  if (nrows == 1) {
    std::copy(rows, rows + n, out);
    return;
  }
  for (int64_t k = 0; k < n; ++k) out[k] = rows[k] + rows[n + k];
  for (int r = 2; r < nrows; ++r) {
    const T* row = rows + r * n;
    for (int64_t k = 0; k < n; ++k) out[k] += row[k];
  }
}

int mpi_int(int64_t v, const char* what) {
  MOE_CHECK(v >= 0 && v <= INT_MAX, what, " ", v, " is negative or does not fit MPI's int (split the exchange)");
  return int(v);
}

}  // namespace

void Comm::allreduce_sum(float* data, int64_t n) const { allreduce_sum_(data, n, MPI_FLOAT); }
void Comm::allreduce_sum(double* data, int64_t n) const { allreduce_sum_(data, n, MPI_DOUBLE); }

template <class T>
void Comm::allreduce_sum_(T* data, int64_t n, MPI_Datatype type) const {
  if (size_ == 1) return;
  count_collective(CollectiveKind::AllReduce, n * int64_t(sizeof(T)));
  // Pieces are reduced independently: element k's sum does not depend on where the cuts fall.
  const int64_t piece = detail::mpi_max_count();
  for (int64_t off = 0; off < n; off += piece) {
    const int len = int(std::min(piece, n - off));
    T* x = data + off;
    if (int64_t(len) * size_ * int64_t(sizeof(T)) <= kGatherAllBytes) {
      std::vector<T> rows(size_t(len) * size_);
      Request r = post("allreduce");
      MPI_CHECK(MPI_Iallgather(x, len, type, rows.data(), len, type, comm_, r.slot()));
      r.wait();
      sum_rows_in_order(rows.data(), size_, len, x);
      continue;
    }
    // Rank j owns block j = [start[j], start[j] + count[j]) of the piece: every rank sends it that
    // block, j adds the size() copies in rank order, and the sums are all-gathered in place.
    std::vector<int> count(size_), start(size_), mine_count(size_), mine_start(size_);
    for (int j = 0; j < size_; ++j) {
      start[j] = int(int64_t(len) * j / size_);
      count[j] = int(int64_t(len) * (j + 1) / size_) - start[j];
    }
    const int mine = count[rank_];
    for (int i = 0; i < size_; ++i) mine_count[i] = mine, mine_start[i] = i * mine;
    std::vector<T> rows(size_t(mine) * size_);
    Request scatter = post("allreduce");
    MPI_CHECK(MPI_Ialltoallv(x, count.data(), start.data(), type, rows.data(), mine_count.data(), mine_start.data(),
                             type, comm_, scatter.slot()));
    scatter.wait();
    sum_rows_in_order(rows.data(), size_, mine, x + start[rank_]);
    Request gather = post("allreduce");
    MPI_CHECK(MPI_Iallgatherv(MPI_IN_PLACE, 0, type, x, count.data(), start.data(), type, comm_,
                              gather.slot()));
    gather.wait();
  }
}

Request Comm::iallgather(const float* send, float* recv, int64_t n) const {
  return iallgather_(send, recv, n, MPI_FLOAT, "allgather");
}
Request Comm::iallgather_bytes(const void* send, void* recv, int64_t bytes) const {
  return iallgather_(send, recv, bytes, MPI_BYTE, "allgather");
}

Request Comm::iallgather_(const void* send, void* recv, int64_t n, MPI_Datatype type, const char* name) const {
  Request r = post(name);
  int esize = 0;
  MPI_CHECK(MPI_Type_size(type, &esize));
  if (size_ > 1) count_collective(CollectiveKind::AllGather, n * esize * size_);
  char* out = static_cast<char*>(recv);
  const bool in_place = send == out + int64_t(rank_) * n * esize;
  // A chunk over the MPI count limit goes as pieces; piece p of every rank's chunk lands at
  // out + p's offset + r * n elements (a strided block).
  const int64_t piece = detail::mpi_max_count();
  for (int64_t off = 0; off < n; off += piece) {
    const int64_t len = std::min(piece, n - off);
    const void* from = in_place ? MPI_IN_PLACE : static_cast<const char*>(send) + off * esize;
    if (len == n) {
      MPI_CHECK(MPI_Iallgather(from, int(n), type, out, int(n), type, comm_, r.slot()));
    } else {
      MPI_Datatype block = detail::strided_block(type, len, n);
      MPI_CHECK(MPI_Iallgather(from, int(len), type, out + off * esize, 1, block, comm_, r.slot()));
      MPI_CHECK(MPI_Type_free(&block));
    }
  }
  return r;
}

// An all-to-all brings every rank's row j to rank j ([size][n] staged), which then adds the rows
// in rank order. Same bytes on the wire as a ring reduce-scatter; staging costs size() * n floats.
Request Comm::ireduce_scatter_sum(const float* send, float* recv, int64_t n) const {
  Request r = post("reduce_scatter");
  if (size_ > 1) count_collective(CollectiveKind::ReduceScatter, n * size_ * int64_t(sizeof(float)));
  if (n == 0) return r;
  r.staging_.resize(size_t(n) * size_ * sizeof(float));
  float* rows = reinterpret_cast<float*>(r.staging_.data());
  const int64_t piece = detail::mpi_max_count();
  for (int64_t off = 0; off < n; off += piece) {
    const int64_t len = std::min(piece, n - off);
    if (len == n) {
      MPI_CHECK(MPI_Ialltoall(send, int(n), MPI_FLOAT, rows, int(n), MPI_FLOAT, comm_, r.slot()));
    } else {
      MPI_Datatype block = detail::strided_block(MPI_FLOAT, len, n);
      MPI_CHECK(MPI_Ialltoall(send + off, 1, block, rows + off, 1, block, comm_, r.slot()));
      MPI_CHECK(MPI_Type_free(&block));
    }
  }
  r.finish_ = [rows, recv, n, size = size_] { sum_rows_in_order(rows, size, n, recv); };
  return r;
}

std::vector<int64_t> Comm::exchange_counts(Counts send_counts) const {
  MOE_CHECK(send_counts.size() % size_ == 0, "exchange_counts: ", send_counts.size(), " counts for ", size_, " ranks");
  std::vector<int64_t> recv(send_counts.size());
  const int k = mpi_int(int64_t(send_counts.size()) / size_, "exchange_counts: counts per rank");
  if (k == 0) return recv;
  if (size_ > 1) count_collective(CollectiveKind::AllToAllV, int64_t(send_counts.size() * sizeof(int64_t)));
  Request r = post("exchange_counts");
  MPI_CHECK(MPI_Ialltoall(send_counts.data(), k, MPI_INT64_T, recv.data(), k, MPI_INT64_T, comm_,
                          r.slot()));
  r.wait();
  return recv;
}

Request Comm::ialltoallv(const float* send, Counts send_counts, Counts send_displs, float* recv, Counts recv_counts,
                         Counts recv_displs) const {
  return ialltoallv_(send, send_counts, send_displs, recv, recv_counts, recv_displs, MPI_FLOAT, "alltoallv");
}
Request Comm::ialltoallv_bytes(const void* send, Counts send_counts, Counts send_displs, void* recv,
                               Counts recv_counts, Counts recv_displs) const {
  return ialltoallv_(send, send_counts, send_displs, recv, recv_counts, recv_displs, MPI_BYTE, "alltoallv");
}

Request Comm::ialltoallv_(const void* send, Counts send_counts, Counts send_displs, void* recv, Counts recv_counts,
                          Counts recv_displs, MPI_Datatype type, const char* name) const {
  const size_t p = size_;
  MOE_CHECK(send_counts.size() == p && send_displs.size() == p && recv_counts.size() == p && recv_displs.size() == p,
            "alltoallv: counts and displacements need one entry per rank (", p, ")");
  Request r = post(name);
  if (size_ > 1) {
    int esize = 0;
    MPI_CHECK(MPI_Type_size(type, &esize));
    int64_t sent = 0;
    for (int64_t c : send_counts) sent += c;
    count_collective(CollectiveKind::AllToAllV, sent * esize);
  }
  // MPI reads these int arrays until completion, so the request owns them: [4][size].
  r.args_.resize(4 * p);
  int* a = r.args_.data();
  for (size_t i = 0; i < p; ++i) {
    a[i] = mpi_int(send_counts[i], "alltoallv: send count");
    a[p + i] = mpi_int(send_displs[i], "alltoallv: send displacement");
    a[2 * p + i] = mpi_int(recv_counts[i], "alltoallv: receive count");
    a[3 * p + i] = mpi_int(recv_displs[i], "alltoallv: receive displacement");
  }
  MPI_CHECK(MPI_Ialltoallv(send, a, a + p, type, recv, a + 2 * p, a + 3 * p, type, comm_, r.slot()));
  return r;
}

}  // namespace moe
