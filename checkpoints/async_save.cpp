#include "checkpoints/async_save.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <utility>

#include "framework/error.h"
#include "framework/threads.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool same_layout(const std::vector<TensorPiece>& a, const std::vector<TensorPiece>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].shape != b[i].shape || a[i].begin != b[i].begin ||
        a[i].data.shape() != b[i].data.shape() || a[i].data.dtype() != b[i].data.dtype())
      return false;
  return true;
}

}  // namespace

AsyncSaver::AsyncSaver(std::string root, Retention retention, int world_size)
    : root_(std::move(root)), retention_(retention), world_size_(world_size) {}

AsyncSaver::~AsyncSaver() {
  if (!in_flight()) return;
  try {
    wait();
  } catch (const Error& e) {
    fprintf(stderr, "error: %s\n", e.what());
  }
}

AsyncSaver::Arena::Arena(size_t n) : bytes(n) {
  if (n == 0) return;
  void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  madvise(p, n, MADV_HUGEPAGE);  // a hint: refused (no THP) is fine
  data = static_cast<char*>(p);
}

AsyncSaver::Arena::~Arena() {
  if (data) munmap(data, bytes);
}

AsyncSaver::Arena::Arena(Arena&& o) noexcept : data(std::exchange(o.data, nullptr)), bytes(std::exchange(o.bytes, 0)) {}

AsyncSaver::Arena& AsyncSaver::Arena::operator=(Arena&& o) noexcept {
  std::swap(data, o.data);
  std::swap(bytes, o.bytes);
  return *this;
}

void AsyncSaver::prepare_snapshot(const std::vector<TensorPiece>& pieces) {
  if (!same_layout(snapshot_, pieces)) {
    snapshot_.clear();
    arena_ = Arena();
    auto aligned = [](int64_t n) { return (n + 63) / 64 * 64; };
    int64_t total = 0;
    for (const TensorPiece& p : pieces) total += aligned(p.data.nbytes());
    arena_ = Arena(size_t(total));
    int64_t off = 0;
    for (const TensorPiece& p : pieces) {
      snapshot_.push_back({p.name, p.shape, p.begin, Tensor::borrow(arena_.data + off, p.data.shape(), p.data.dtype())});
      off += aligned(p.data.nbytes());
    }
  }
}

void AsyncSaver::copy_into_snapshot(const std::vector<TensorPiece>& tensors, bool threaded) {
  // The tensors as one stream of bytes; each thread copies one contiguous, equal share of it, with
  // one memcpy per tensor it overlaps. Calls that large let memcpy use non-temporal stores, which
  // copy gigabytes about 1.5x faster here than 4 MiB pieces do.
  const size_t n = tensors.size();
  std::vector<int64_t> start(n + 1, 0);
  for (size_t i = 0; i < n; ++i) {
    const Tensor& src = tensors[i].data;
    MOE_CHECK(src.device() == Device::CPU && (src.defined() || src.nbytes() == 0), "snapshot of '", tensors[i].name,
              "' needs a CPU tensor");
    start[i + 1] = start[i] + src.nbytes();
  }
  constexpr int64_t kUnit = 1 << 20;  // the shares are whole MiB of the stream
  const int64_t units = (start[n] + kUnit - 1) / kUnit;
  auto copy_units = [&](int64_t u0, int64_t u1) {
    const int64_t b = u0 * kUnit, e = std::min(start[n], u1 * kUnit);
    size_t i = size_t(std::upper_bound(start.begin(), start.end(), b) - start.begin()) - 1;
    for (; i < n && start[i] < e; ++i) {
      const int64_t lo = std::max(b, start[i]), hi = std::min(e, start[i + 1]);
      if (hi <= lo) continue;
      std::memcpy(static_cast<char*>(snapshot_[i].data.raw()) + (lo - start[i]),
                  static_cast<const char*>(tensors[i].data.raw()) + (lo - start[i]), size_t(hi - lo));
    }
  };
  if (threaded)
    parallel_for(units, copy_units);
  else
    copy_units(0, units);  // a background thread: the pool belongs to training
}

SaveStall AsyncSaver::save(int64_t step, const std::vector<NamedTensor>& tensors, std::string config_yaml,
                           nlohmann::json meta) {
  WholeTensors whole = whole_tensors(tensors);
  ShardedSave one;
  one.recorded_world_size = world_size_;
  return save_sharded(step, whole.pieces, std::move(whole.datasets), std::move(config_yaml), std::move(meta), one);
}

SaveStall AsyncSaver::save_sharded(int64_t step, const std::vector<TensorPiece>& pieces,
                                   std::vector<DatasetSpec> datasets, std::string config_yaml, nlohmann::json meta,
                                   const ShardedSave& shard, bool defer_copy) {
  MOE_CHECK(!in_flight(), "AsyncSaver::save while the save of step ", report_.step, " is in flight (wait() first)");
  auto t0 = Clock::now();
  prepare_snapshot(pieces);
  if (!defer_copy) copy_into_snapshot(pieces, /*threaded=*/true);
  SaveStall stall;
  for (const TensorPiece& p : snapshot_) stall.bytes += p.data.nbytes();
  stall.copy_s = seconds_since(t0);

  report_ = SaveReport{step, "", stall.bytes, 0, 0};
  error_.clear();
  done_.store(false);
  {
    std::lock_guard<std::mutex> lock(copy_mutex_);
    copied_ = !defer_copy;
  }
  std::vector<TensorPiece> sources;
  if (defer_copy) sources = pieces;
  const double stall_s = std::exchange(stall_s_, 0.0);
  worker_ = std::thread([this, step, shard, defer_copy, stall_s, sources = std::move(sources), datasets = std::move(datasets),
                         yaml = std::move(config_yaml), meta = std::move(meta)] {
    auto w0 = Clock::now();
    if (defer_copy) {
      copy_into_snapshot(sources, /*threaded=*/false);
      report_.copy_s = seconds_since(w0);
      {
        std::lock_guard<std::mutex> lock(copy_mutex_);
        copied_ = true;
      }
      copy_cv_.notify_all();
      w0 = Clock::now();
    }
    if (stall_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(stall_s));
    try {
      report_.dir = save_checkpoint_sharded(root_, step, snapshot_, datasets, yaml, meta, retention_, shard);
    } catch (const Error& e) {
      error_ = e.what();
    } catch (const std::bad_alloc&) {
      error_ = "out of memory";
    } catch (const std::exception& e) {
      error_ = std::string("internal error: ") + e.what();
    }
    report_.write_s = seconds_since(w0);
    done_.store(true, std::memory_order_release);
  });
  return stall;
}

double AsyncSaver::wait_snapshot() {
  auto t0 = Clock::now();
  std::unique_lock<std::mutex> lock(copy_mutex_);
  copy_cv_.wait(lock, [this] { return copied_; });
  return seconds_since(t0);
}

SaveReport AsyncSaver::collect() {
  worker_.join();
  if (!error_.empty())
    throw error("checkpoint of step ", report_.step, " failed: ", error_,
                " (nothing was committed for that step; earlier checkpoints are untouched)");
  return report_;
}

std::optional<SaveReport> AsyncSaver::poll() {
  if (!in_flight() || !done_.load(std::memory_order_acquire)) return std::nullopt;
  return collect();
}

std::optional<SaveReport> AsyncSaver::wait() {
  if (!in_flight()) return std::nullopt;
  return collect();
}

std::optional<SaveReport> AsyncSaver::wait_at_most(double timeout_s) {
  if (!in_flight() || timeout_s <= 0) return wait();
  const auto t0 = Clock::now();
  while (!done_.load(std::memory_order_acquire)) {
    const double waited = seconds_since(t0);
    if (waited > timeout_s) {
      worker_.detach();
      abandoned_ = true;
      throw error("checkpoint of step ", report_.step, ": its background write under ", root_,
                  " has not finished after ", timeout_s,
                  " s (checkpoint.write_timeout_s): the filesystem is stalled or far slower than it should be. "
                  "Nothing was committed for that step; earlier checkpoints are untouched");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(waited < 1 ? 1 : 20));
  }
  return collect();
}

}  // namespace moe
