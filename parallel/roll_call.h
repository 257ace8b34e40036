// The roll call: which ranks stopped answering, when a collective times out.
//
// A wait that outlives MOE_COMM_TIMEOUT_S knows only that some rank of its group did not join. To
// name it, the timed-out rank pings every other rank of the job on a communicator of its own and
// listens for a short window. Every rank that is waiting in a collective answers (Request::wait
// polls for pings), and so do the other timed-out ranks, which run their own roll calls at the same
// time. A rank that does not answer is stopped (SIGSTOP, a debugger), hung outside MPI, dead, or
// busy outside every collective for longer than the window: the message says so, naming it.
//
// All of this is MPI on the main thread (MPI_THREAD_FUNNELED), costs one MPI_Iprobe per poll of a
// waiting collective, and sends nothing until a timeout, after which the job ends anyway.
#pragma once
#include <mpi.h>

#include <vector>

namespace moe::detail {

// Collective over MPI_COMM_WORLD (called by the world Comm's constructor; later calls do nothing).
void roll_call_open();
// Frees the roll call's communicator before MPI_Finalize.
void roll_call_close() noexcept;
// Answers the pings that have arrived. Cheap; never blocks.
void roll_call_answer() noexcept;
// Pings every other world rank and returns, in rank order, those that did not answer within
// window_s seconds (answering others' pings meanwhile). Empty without MPI or in a world of one.
std::vector<int> roll_call_silent(double window_s) noexcept;
// The window for a collective timeout of timeout_s: long enough for a rank that is computing
// between two collectives to reach its next wait, short beside the timeout.
double roll_call_window(double timeout_s);

}  // namespace moe::detail
