// Internal to parallel/: checking MPI calls and describing big or strided buffers to MPI.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <string>

#include "framework/error.h"

namespace moe::detail {

// "rank 3: MPI_Iallgather(...) failed: MPI_ERR_ROOT: invalid root". Our communicators use
// MPI_ERRORS_RETURN, so every MPI error comes back here and becomes a moe::Error.
[[noreturn]] void throw_mpi_error(const char* call, int rc);

// The largest element count one MPI call may carry: INT_MAX, or MOE_COMM_MAX_COUNT when set (tests
// lower it to run the chunked paths on small buffers). Read once.
int64_t mpi_max_count();

// `len` elements of `type` whose extent is `stride` elements. As a receive type with count 1 per
// rank it puts rank r's block at r * stride: one piece of every rank's chunk when a chunk is larger
// than one MPI call can carry. Freed by the caller right after posting (MPI keeps it alive).
MPI_Datatype strided_block(MPI_Datatype type, int64_t len, int64_t stride);

}  // namespace moe::detail

#define MPI_CHECK(call)                                               \
  do {                                                                \
    int rc_ = (call);                                                 \
    if (rc_ != MPI_SUCCESS) ::moe::detail::throw_mpi_error(#call, rc_); \
  } while (0)
