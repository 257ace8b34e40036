// Asynchronous checkpoint saves. The state is copied into host memory owned by the saver (the
// snapshot, allocated once and reused); a background thread then writes and commits that copy
// while training goes on. At most one save is in flight, so there is one snapshot and the host
// memory cost is one copy of the state.
//
// The copy itself can also leave the training thread (defer_copy): the state does not change until
// the next optimizer step, so the background thread copies while the next forward and backward
// run, and the trainer calls wait_snapshot() just before it changes the state. The stall is then
// only what is left of the copy when the step reaches its optimizer (none when a step takes longer
// than the copy).
//
// HDF5 (this build: the parallel one, which is not thread-safe) must be used by one thread at a
// time: while a save is in flight, nothing else in the process may read or write checkpoints.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoints/checkpoint.h"

namespace moe {

// A committed background save.
struct SaveReport {
  int64_t step = 0;
  std::string dir;     // the committed folder
  int64_t bytes = 0;   // tensor bytes written
  double write_s = 0;  // write + fsync + checksums + commit + retention, in the background
  double copy_s = 0;   // a deferred snapshot copy, in the background (0 when copied by save())
};

// What save() cost the calling thread.
struct SaveStall {
  int64_t bytes = 0;  // size of the snapshot
  double copy_s = 0;  // copying into the snapshot (plus allocating it, the first time)
};

class AsyncSaver {
 public:
  AsyncSaver(std::string root, Retention retention, int world_size);
  // Waits for a save in flight. Its failure can reach nobody any more, so it is printed to stderr.
  ~AsyncSaver();
  AsyncSaver(const AsyncSaver&) = delete;
  AsyncSaver& operator=(const AsyncSaver&) = delete;

  // Copies `tensors` (CPU, contiguous) into the snapshot on the calling thread, using the thread
  // pool, and starts writing it in the background; the caller may change its tensors as soon as
  // this returns. Requires no save in flight: collect the previous one with wait() first.
  SaveStall save(int64_t step, const std::vector<NamedTensor>& tensors, std::string config_yaml,
                 nlohmann::json meta);
  // One rank's part of a sharded save (save_checkpoint_sharded): the snapshot holds only this
  // rank's pieces. Rank 0's report names the committed folder; other ranks' reports have dir "".
  // With defer_copy the copy runs on the background thread, single-threaded: the caller must not
  // change the pieces' data until wait_snapshot() has returned, and save() then stalls ~0 s.
  SaveStall save_sharded(int64_t step, const std::vector<TensorPiece>& pieces, std::vector<DatasetSpec> datasets,
                         std::string config_yaml, nlohmann::json meta, const ShardedSave& shard,
                         bool defer_copy = false);
  // Blocks until the snapshot of the save in flight is complete (at once if copied by save(), or
  // if none is in flight); returns the seconds waited.
  double wait_snapshot();
  bool in_flight() const { return worker_.joinable(); }
  // A finished save in flight: its report, or moe::Error naming the step and the reason if it
  // failed (nothing committed, earlier checkpoints untouched). nullopt while it runs, or if none.
  std::optional<SaveReport> poll();
  // Blocks until the save in flight finishes, then as poll(); nullopt if none was in flight.
  std::optional<SaveReport> wait();
  // As wait(), but for at most timeout_s seconds (0 = no limit). A write still running then has
  // stalled (a hung filesystem, a full quota on a network mount): throws moe::Error naming the step,
  // the folder and the wait, and abandons the save. Its thread, blocked in the filesystem, goes on
  // using this saver, so an abandoned saver must never be destroyed: the caller leaks it (the
  // process is ending: the error is fatal to the run) after checking abandoned().
  std::optional<SaveReport> wait_at_most(double timeout_s);
  bool abandoned() const { return abandoned_; }
  // For tests (MOE_FAULT_INJECT stall_save): the next save's background write first sleeps this long.
  void stall_next_write(double seconds) { stall_s_ = seconds; }

 private:
  void prepare_snapshot(const std::vector<TensorPiece>& pieces);  // layout; allocates on a change
  void copy_into_snapshot(const std::vector<TensorPiece>& pieces, bool threaded);
  SaveReport collect();  // joins the finished worker; throws its error

  // The snapshot: one mapping holding every tensor, on transparent huge pages where the kernel
  // offers them (page-faulting gigabytes in 4 KiB pages costs seconds on the first save).
  struct Arena {
    Arena() = default;
    explicit Arena(size_t bytes);
    ~Arena();
    Arena(Arena&& o) noexcept;
    Arena& operator=(Arena&& o) noexcept;
    char* data = nullptr;
    size_t bytes = 0;
  };

  std::string root_;
  Retention retention_;
  int world_size_;
  Arena arena_;
  std::vector<TensorPiece> snapshot_;  // data are views into arena_
  std::thread worker_;
  std::atomic<bool> done_{false};  // set (release) by the worker after report_ / error_
  std::mutex copy_mutex_;
  std::condition_variable copy_cv_;
  bool copied_ = true;  // the snapshot of the save in flight is complete (guarded by copy_mutex_)
  SaveReport report_;
  std::string error_;
  bool abandoned_ = false;
  double stall_s_ = 0;
};

}  // namespace moe
