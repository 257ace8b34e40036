// Comm's life cycle, failure handling and the polling wait behind every collective.
// The collectives themselves are in collectives.cpp.
#include "parallel/comm.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "parallel/comm_stats.h"
#include "parallel/mpi_util.h"
#include "parallel/roll_call.h"

namespace moe {
namespace detail {

namespace {

int world_rank_or_zero() {
  int init = 0, fin = 0, rank = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

[[noreturn]] void abort_job(int world_rank, const std::string& message, int exit_code) {
  fflush(stdout);
  fprintf(stderr, "error: rank %d: %s\n", world_rank, message.c_str());
  fflush(stderr);
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; without MPI this process is the whole job
}

// MOE_COMM_TIMEOUT_S: seconds a collective may wait, 0 = forever.
double timeout_from_env() {
  const char* s = getenv("MOE_COMM_TIMEOUT_S");
  if (!s || !*s) return 600;
  char* end = nullptr;
  double v = strtod(s, &end);
  if (*end || !std::isfinite(v) || v < 0)
    throw error("MOE_COMM_TIMEOUT_S='", s, "' (expected seconds >= 0; 0 turns the collective watchdog off)");
  return v;
}

// "collective X timed out after N s ...", naming the ranks a roll call found silent.
std::string timeout_message(const char* collective, double timeout_s) {
  const double window = roll_call_window(timeout_s);
  const std::vector<int> silent = roll_call_silent(window);
  std::string ranks;
  for (int r : silent) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  char what[512];
  if (silent.empty())
    snprintf(what, sizeof what,
             "collective %s timed out after %g s (MOE_COMM_TIMEOUT_S); every other rank answered a roll call "
             "within %g s, so they are all waiting, in collectives that do not match",
             collective, timeout_s, window);
  else
    snprintf(what, sizeof what,
             "collective %s timed out after %g s (MOE_COMM_TIMEOUT_S); no answer within %g s from rank%s %s "
             "(stopped, hung, dead, or busy outside every collective)",
             collective, timeout_s, window, silent.size() > 1 ? "s" : "", ranks.c_str());
  return what;
}

}  // namespace

void throw_mpi_error(const char* call, int rc) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "MPI error %d", rc);
  throw error("rank ", world_rank_or_zero(), ": ", call, " failed: ", text);
}

int64_t mpi_max_count() {
  static const int64_t limit = [] {
    const char* s = getenv("MOE_COMM_MAX_COUNT");
    if (!s || !*s) return int64_t(INT_MAX);
    char* end = nullptr;
    long long v = strtoll(s, &end, 10);
    if (*end || v < 1 || v > INT_MAX)
      throw error("MOE_COMM_MAX_COUNT='", s, "' (expected an integer from 1 to ", INT_MAX, ")");
    return int64_t(v);
  }();
  return limit;
}

MPI_Datatype strided_block(MPI_Datatype type, int64_t len, int64_t stride) {
  MOE_CHECK(len >= 0 && len <= INT_MAX && stride >= len, "len ", len, " stride ", stride);
  int esize = 0;
  MPI_CHECK(MPI_Type_size(type, &esize));
  MPI_Datatype block, strided;
  MPI_CHECK(MPI_Type_contiguous(int(len), type, &block));
  MPI_CHECK(MPI_Type_create_resized(block, 0, MPI_Aint(stride) * esize, &strided));
  MPI_CHECK(MPI_Type_free(&block));
  MPI_CHECK(MPI_Type_commit(&strided));
  return strided;
}

}  // namespace detail

std::vector<int64_t> packed_displacements(Counts counts) {
  std::vector<int64_t> displs(counts.size());
  int64_t at = 0;
  for (size_t i = 0; i < counts.size(); ++i) displs[i] = std::exchange(at, at + counts[i]);
  return displs;
}

// ---- Request ----

Request::Request(Request&& o) noexcept { *this = std::move(o); }

Request& Request::operator=(Request&& o) noexcept {
  if (this != &o) {
    settle();
    reqs_ = std::exchange(o.reqs_, {});
    args_ = std::exchange(o.args_, {});
    staging_ = std::exchange(o.staging_, {});
    finish_ = std::exchange(o.finish_, nullptr);
    name_ = o.name_;
    timeout_s_ = o.timeout_s_;
    world_rank_ = o.world_rank_;
  }
  return *this;
}

Request::~Request() { settle(); }

void Request::settle() noexcept {
  if (reqs_.empty() && !finish_) return;
  try {
    wait();
  } catch (const std::exception& e) {
    detail::abort_job(world_rank_, e.what(), 1);
  }
}

void Request::finish() {
  reqs_.clear();
  if (finish_) std::exchange(finish_, nullptr)();
  staging_ = {};
  args_ = {};
}

bool Request::test() {
  if (reqs_.empty() && !finish_) return true;
  int done = 1;
  if (!reqs_.empty()) MPI_CHECK(MPI_Testall(int(reqs_.size()), reqs_.data(), &done, MPI_STATUSES_IGNORE));
  if (done) finish();
  return done != 0;
}

// Polls instead of MPI_Waitall so that a hang (a rank that never joins) becomes an error. Open MPI's
// own wait spins the same way; yielding keeps oversubscribed ranks (np > cores) moving.
void Request::wait() {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  while (!test()) {
    if (timeout_s_ > 0 && std::chrono::duration<double>(clock::now() - start).count() > timeout_s_)
      detail::abort_job(world_rank_, detail::timeout_message(name_, timeout_s_), 1);
    detail::roll_call_answer();  // a timed-out rank may be asking who is still here
    sched_yield();
  }
}

// ---- Comm ----

Comm::Comm(int* argc, char*** argv) {
  int initialized = 0;
  MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    owns_mpi_ = true;
  }
  try {
    timeout_s_ = detail::timeout_from_env();
    detail::mpi_max_count();  // a bad MOE_COMM_MAX_COUNT fails here, not inside a collective
    detail::roll_call_open();
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    MPI_CHECK(MPI_Comm_size(comm_, &size_));
    world_rank_ = rank_;
  } catch (...) {
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
    if (owns_mpi_) MPI_Finalize();
    throw;
  }
}

Comm::Comm(MPI_Comm comm, double timeout_s) : comm_(comm), timeout_s_(timeout_s) {
  MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  MPI_CHECK(MPI_Comm_size(comm_, &size_));
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_));
}

Comm::~Comm() { release(); }

void Comm::release() noexcept {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
  if (owns_mpi_ && !finalized) {
    detail::roll_call_close();
    MPI_Finalize();
  }
  comm_ = MPI_COMM_NULL;
  owns_mpi_ = false;
}

Comm::Comm(Comm&& o) noexcept { *this = std::move(o); }

Comm& Comm::operator=(Comm&& o) noexcept {
  if (this != &o) {
    release();
    comm_ = std::exchange(o.comm_, MPI_COMM_NULL);
    rank_ = o.rank_;
    size_ = o.size_;
    world_rank_ = o.world_rank_;
    timeout_s_ = o.timeout_s_;
    owns_mpi_ = std::exchange(o.owns_mpi_, false);
  }
  return *this;
}

Comm Comm::split(int color, int key) const {
  MPI_Comm sub = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(comm_, color, key, &sub));
  return Comm(sub, timeout_s_);
}

void Comm::abort(const std::string& message, int exit_code) const { detail::abort_job(world_rank_, message, exit_code); }

Request Comm::post(const char* name) const {
  Request r;
  r.name_ = name;
  r.timeout_s_ = timeout_s_;
  r.world_rank_ = world_rank_;
  return r;
}

void Comm::broadcast(void* data, int64_t bytes, int root) const {
  if (size_ == 1) return;
  count_collective(CollectiveKind::Broadcast, bytes);
  Request r = post("broadcast");
  const int64_t piece = detail::mpi_max_count();
  for (int64_t off = 0; off < bytes; off += piece)
    MPI_CHECK(MPI_Ibcast(static_cast<char*>(data) + off, int(std::min(piece, bytes - off)), MPI_BYTE, root, comm_,
                         r.slot()));
  r.wait();
}

void Comm::barrier() const {
  if (size_ == 1) return;
  Request r = post("barrier");
  MPI_CHECK(MPI_Ibarrier(comm_, r.slot()));
  r.wait();
}

}  // namespace moe
