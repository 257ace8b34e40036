#include "parallel/roll_call.h"

#include <sched.h>

#include <algorithm>
#include <chrono>

namespace moe::detail {
namespace {

constexpr int kPing = 1, kPong = 2;
MPI_Comm roll_comm = MPI_COMM_NULL;
std::vector<MPI_Request> pending_pongs;  // answers in flight (buffers: pong_payload, never changed)
const int pong_payload = 0;

bool mpi_usable() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin && roll_comm != MPI_COMM_NULL;
}

}  // namespace

void roll_call_open() {
  int init = 0;
  MPI_Initialized(&init);
  if (!init || roll_comm != MPI_COMM_NULL) return;
  MPI_Comm_dup(MPI_COMM_WORLD, &roll_comm);
  // A dead peer makes sends to it fail: the roll call then counts it silent, never aborts.
  MPI_Comm_set_errhandler(roll_comm, MPI_ERRORS_RETURN);
}

void roll_call_close() noexcept {
  if (!mpi_usable()) return;
  for (MPI_Request& r : pending_pongs) MPI_Request_free(&r);
  pending_pongs.clear();
  MPI_Comm_free(&roll_comm);
  roll_comm = MPI_COMM_NULL;
}

void roll_call_answer() noexcept {
  if (!mpi_usable()) return;
  for (;;) {
    int arrived = 0;
    MPI_Status st;
    if (MPI_Iprobe(MPI_ANY_SOURCE, kPing, roll_comm, &arrived, &st) != MPI_SUCCESS || !arrived) break;
    int ping = 0;
    MPI_Recv(&ping, 1, MPI_INT, st.MPI_SOURCE, kPing, roll_comm, MPI_STATUS_IGNORE);
    MPI_Request& r = pending_pongs.emplace_back(MPI_REQUEST_NULL);
    MPI_Isend(&pong_payload, 1, MPI_INT, st.MPI_SOURCE, kPong, roll_comm, &r);
  }
  // Drop the answers already delivered (a roll call is rare; the list stays short).
  std::erase_if(pending_pongs, [](MPI_Request& r) {
    int done = 0;
    return MPI_Test(&r, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || done;
  });
}

std::vector<int> roll_call_silent(double window_s) noexcept {
  std::vector<int> silent;
  if (!mpi_usable()) return silent;
  int me = 0, n = 1;
  MPI_Comm_rank(roll_comm, &me);
  MPI_Comm_size(roll_comm, &n);
  const int ping = 0;
  std::vector<int> answers(size_t(n), 0);
  std::vector<MPI_Request> sends, recvs;
  std::vector<int> recv_rank;
  for (int r = 0; r < n; ++r) {
    if (r == me) continue;
    MPI_Request s = MPI_REQUEST_NULL, q = MPI_REQUEST_NULL;
    if (MPI_Isend(&ping, 1, MPI_INT, r, kPing, roll_comm, &s) == MPI_SUCCESS) sends.push_back(s);
    if (MPI_Irecv(&answers[size_t(r)], 1, MPI_INT, r, kPong, roll_comm, &q) == MPI_SUCCESS) {
      recvs.push_back(q);
      recv_rank.push_back(r);
    } else {
      silent.push_back(r);
    }
  }
  std::vector<bool> answered(recvs.size(), false);
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  size_t left = recvs.size();
  while (left > 0 && std::chrono::duration<double>(clock::now() - start).count() < window_s) {
    for (size_t i = 0; i < recvs.size(); ++i) {
      if (answered[i]) continue;
      int done = 0;
      if (MPI_Test(&recvs[i], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) {
        answered[i] = true;
        --left;
      }
    }
    roll_call_answer();  // the others' roll calls run now too
    sched_yield();
  }
  for (size_t i = 0; i < recvs.size(); ++i)
    if (!answered[i]) silent.push_back(recv_rank[i]);
  std::sort(silent.begin(), silent.end());
  // The requests are left pending: the job is about to end, and a stopped peer never completes them.
  return silent;
}

double roll_call_window(double timeout_s) { return std::clamp(timeout_s / 2, 1.0, 10.0); }

}  // namespace moe::detail
