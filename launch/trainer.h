// The training loop of `moe train`: data-parallel over MPI ranks (each rank draws its slice of
// the global batch; one step is train_step of parallel/train_step.h, whose gradients are
// reduce-scattered into each rank's shard before the optimizer step), periodic evaluation, logging
// to stdout and <out_dir>/metrics.jsonl, checkpoints written in the background
// (docs/checkpoints.md) with resume, a clean stop on SIGTERM / SIGINT / SIGUSR1 (checkpoint at
// the next step boundary, then exit), and the numeric guard's skips and rollbacks
// (launch/numeric_guard.h).
#pragma once
#include <memory>

#include "framework/config.h"

namespace moe {

class Comm;

// Returns the process exit code (0 when the run finished or stopped cleanly on a signal).
int train(const Config& cfg, Comm& comm);

}  // namespace moe
