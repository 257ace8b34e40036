// `moe bench checkpoint`: how long checkpointing a config's full training state takes on this
// machine. The state is the one the trainer saves (f32 parameters under their Hugging Face names
// plus the two AdamW moments of every trainable parameter), filled with random values. Measured:
//   dd          sequential write speed of the folder's disk (dd ... conv=fsync), the ceiling
//   save        per save: the training stall (snapshot copy) and the background write (HDF5 write,
//               fsync, sha256 checksums, commit), as AsyncSaver runs them during training; then one
//               save as the trainer does it between steps, the copy deferred to the background
//               thread (deferred_stall_s: what save() blocks; deferred_copy_s: the copy, which
//               overlaps the next step's forward and backward)
//   verify/load what a resume does, with the file dropped from the page cache first
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoints/async_save.h"
#include "checkpoints/checkpoint.h"
#include "framework/config.h"
#include "framework/error.h"
#include "framework/rng.h"
#include "framework/threads.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "model/model.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double round3(double x) { return std::round(x * 1000.0) / 1000.0; }

// The trainer's checkpoint state for `m`: parameters, then the moments of trainable ones, each
// group in one flat buffer as in ParamStore / AdamW. Values are random so every page is real.
struct State {
  std::vector<Tensor> buffers;
  std::vector<NamedTensor> tensors;
  int64_t params = 0, bytes = 0;
};

State make_state(const ModelConfig& m, uint64_t seed) {
  std::vector<ParamInfo> infos;
  {
    DeepSeekV3 model(m);  // only for the names and shapes; freed before the state is allocated
    infos = model.params().infos();
  }
  State s;
  int64_t n_params = 0, n_trainable = 0;
  for (const ParamInfo& p : infos) {
    n_params += shape_numel(p.shape);
    if (p.trainable) n_trainable += shape_numel(p.shape);
  }
  for (int64_t n : {n_params, n_trainable, n_trainable}) {
    s.buffers.push_back(Tensor::empty({n}));
    float* w = s.buffers.back().f32();
    uint64_t stream = s.buffers.size();
    parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) w[i] = rng_uniform(seed, stream, uint64_t(i)) - 0.5f;
    }, 1 << 16);
  }
  int64_t off[3] = {0, 0, 0};
  const char* prefix[3] = {"", "optimizer.exp_avg.", "optimizer.exp_avg_sq."};
  for (int k = 0; k < 3; ++k)
    for (const ParamInfo& p : infos) {
      if (k > 0 && !p.trainable) continue;
      s.tensors.push_back({prefix[k] + p.name, Tensor::borrow(s.buffers[k].f32() + off[k], p.shape)});
      off[k] += shape_numel(p.shape);
    }
  s.params = n_params;
  for (const NamedTensor& t : s.tensors) s.bytes += t.tensor.nbytes();
  return s;
}

int64_t mem_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  while (in >> key >> kb) {
    if (key == "MemAvailable:") return kb * 1024;
    in.ignore(1 << 10, '\n');
  }
  return -1;
}

// dd's own figure for writing `bytes` of zeros to a file with an fsync at the end: GB/s.
double dd_write_gbps(const std::string& dir, int64_t bytes) {
  const int64_t bs = 16 << 20, count = std::max<int64_t>(1, (bytes + bs - 1) / bs);
  std::string file = dir + "/dd.bin";
  std::string cmd = "dd if=/dev/zero of='" + file + "' bs=16M count=" + std::to_string(count) + " conv=fsync 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw error("bench checkpoint: cannot run dd");
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  int rc = pclose(p);
  fs::remove(file);
  // "<bytes> bytes (...) copied, <seconds> s, <rate>": take bytes and seconds, not dd's rounded rate.
  long long copied = 0;
  double secs = 0;
  size_t at = out.rfind(" bytes");
  size_t line = out.rfind('\n', at == std::string::npos ? 0 : at);
  size_t comma = out.find("copied, ", at == std::string::npos ? 0 : at);
  if (rc != 0 || at == std::string::npos || comma == std::string::npos ||
      sscanf(out.c_str() + (line == std::string::npos ? 0 : line + 1), "%lld", &copied) != 1 ||
      sscanf(out.c_str() + comma + 8, "%lf", &secs) != 1 || secs <= 0)
    throw error("bench checkpoint: dd failed or printed something unexpected: ", out);
  return double(copied) / secs / 1e9;
}

// Drops a written (so clean, after fsync) file from the page cache, so the next read hits the disk.
void drop_from_page_cache(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  fdatasync(fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
}

}  // namespace

int cmd_bench_checkpoint(int argc, char** argv) {
  Args a(argc, argv, {"config", "set...", "dir", "saves", "threads"}, {"keep"});
  if (a.help()) {
    puts("usage: moe bench checkpoint [--config configs/moe-1b.yaml] [--set key=value]... [--dir DIR] [--saves N]\n"
         "                            [--threads T] [--keep]\n"
         "\n"
         "Saves the config's full training state (f32 parameters + AdamW moments, random values) N times\n"
         "(default 3) as training does (snapshot copy on this thread, write in the background) into a new\n"
         "folder under DIR (default /tmp), then verifies and loads it as a resume does, with the file\n"
         "dropped from the page cache first. Prints one JSON line: dd's sequential write speed of DIR's\n"
         "disk, per save the training stall and the background write time, and verify/load GB/s.\n"
         "Needs memory for two copies of the state (the live one and the snapshot): shrink a model that\n"
         "does not fit with --set, e.g. --set model.layers=8. --keep leaves the folder in place.");
    return 0;
  }
  Config cfg = load_config(a.get("config", "configs/moe-1b.yaml"), a.all("set"));
  const int saves = int(a.get_int("saves", 3));
  if (saves < 1) throw error("--saves: ", saves, " (expected >= 1)");
  set_num_threads(int(a.get_int("threads", cfg.train.threads)));

  ParamCounts pc = count_params(cfg.model);
  // params + 2 moments, twice (live + snapshot); a little more than that for the page cache.
  const double need = 2.0 * 3.0 * 4.0 * double(pc.total), avail = double(mem_available_bytes());
  if (avail > 0 && need > 0.9 * avail)
    throw error(cfg.source, ": the state of this model needs ", round3(need / 1e9), " GB (live copy + snapshot) but only ",
                round3(avail / 1e9), " GB of memory is available (expected a smaller model: shrink it with --set, "
                "e.g. --set model.layers=N)");

  std::string base = a.get("dir", "/tmp");
  std::string tmpl = base + "/moe-bench-checkpoint-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw error(base, ": cannot create a folder for the benchmark (", strerror(errno), ")");
  const std::string dir = tmpl;

  nlohmann::ordered_json out;
  try {
    State state = make_state(cfg.model, cfg.run.seed);
    double dd_gbps = dd_write_gbps(dir, state.bytes);

    AsyncSaver saver(dir + "/checkpoints", Retention(1), 1);
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    std::string last_dir;
    for (int i = 1; i <= saves; ++i) {
      SaveStall st = saver.save(i, state.tensors, config_to_yaml(cfg), {{"bench", true}});
      SaveReport r = *saver.wait();
      last_dir = r.dir;
      rows.push_back({{"stall_s", round3(st.copy_s)},
                      {"snapshot_gbps", round3(st.bytes / 1e9 / st.copy_s)},
                      {"write_s", round3(r.write_s)},
                      {"write_gbps", round3(r.bytes / 1e9 / r.write_s)}});
    }
    // As the trainer saves between steps: the copy moves to the background thread and overlaps the
    // next step's forward and backward, so the stall is save()'s return plus whatever of the copy
    // outlasts them.
    WholeTensors whole = whole_tensors(state.tensors);
    auto t_deferred = Clock::now();
    saver.save_sharded(saves + 1, whole.pieces, whole.datasets, config_to_yaml(cfg), {{"bench", true}}, ShardedSave{},
                       true);
    double deferred_stall = seconds_since(t_deferred);
    SaveReport deferred = *saver.wait();
    last_dir = deferred.dir;

    const std::string file = last_dir + "/state.h5";
    const int64_t file_bytes = int64_t(fs::file_size(file));
    drop_from_page_cache(file);
    auto t0 = Clock::now();
    CheckpointReader reader(last_dir);
    reader.verify();
    double verify_s = seconds_since(t0);
    drop_from_page_cache(file);
    t0 = Clock::now();
    for (NamedTensor& nt : state.tensors) reader.read(nt.name, nt.tensor);
    double load_s = seconds_since(t0);

    out = {{"bench", "checkpoint"},
           {"config", cfg.source},
           {"overrides", a.all("set")},
           {"threads", num_threads()},
           {"dir", dir},
           {"params", state.params},
           {"tensors", state.tensors.size()},
           {"state_bytes", state.bytes},
           {"file_bytes", file_bytes},
           {"dd_write_gbps", round3(dd_gbps)},
           {"saves", rows},
           // The first save also allocates (page-faults) the snapshot; later ones reuse it.
           {"stall_s", rows.back()["stall_s"]},
           {"deferred_stall_s", round3(deferred_stall)},
           {"deferred_copy_s", round3(deferred.copy_s)},
           {"save_gbps", rows.back()["write_gbps"]},
           {"verify_gbps", round3(file_bytes / 1e9 / verify_s)},
           {"load_gbps", round3(state.bytes / 1e9 / load_s)},
           {"resume_s", round3(verify_s + load_s)}};
  } catch (...) {
    if (!a.has("keep")) fs::remove_all(dir);
    throw;
  }
  if (!a.has("keep")) fs::remove_all(dir);
  puts(out.dump().c_str());
  return 0;
}

}  // namespace moe
