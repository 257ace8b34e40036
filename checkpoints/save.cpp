// save_checkpoint: write everything into step-N.tmp/, COMMITTED last, then publish with renames.
// The order is what makes a crash at any point harmless: a folder named step-N (no .tmp) only ever
// appears complete and fsync'd, and `latest` only ever points at such a folder.
#include <sys/statvfs.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "checkpoints/checkpoint.h"
#include "checkpoints/h5.h"
#include "checkpoints/layout.h"
#include "framework/sha256.h"

namespace moe {
namespace fs = std::filesystem;
using namespace ckpt;

namespace {

void rename_or_throw(const fs::path& from, const fs::path& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0)
    throw error(from.string(), ": cannot rename to ", to.string(), " (", strerror(errno), ")");
}

void remove_all_or_throw(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) throw error(p.string(), ": cannot remove (", ec.message(), ")");
}

// HDF5 1.10 cannot recover from a failed metadata flush: the close fails too ("slist already
// enabled") and the library crashes when it shuts down at exit. So all metadata (every dataset,
// its file space allocated but not filled) is created and flushed first, while it is small; a disk
// that fills up during the data then fails a raw write, after which the file closes cleanly.
// Rank 0 creates the file and every dataset, then writes its own pieces.
void write_state(const fs::path& file, int64_t step, int world_size, const std::vector<DatasetSpec>& datasets,
                 const std::vector<TensorPiece>& pieces) {
  std::string path = file.string();
  std::set<std::string> seen;
  for (const DatasetSpec& d : datasets) {
    h5::check_name(d.name);
    MOE_CHECK(seen.insert(d.name).second, "tensor '", d.name, "' is saved twice");
  }
  h5::Plist fapl = h5::file_access(path);
  // No sieve buffer: HDF5 would collect small datasets' data in it and flush it later, ignoring a
  // failed write (seen with ENOSPC). Without it every write goes to the file in its H5Dwrite, which
  // reports the failure.
  h5::check(H5Pset_sieve_buf_size(fapl.get(), 0), path, "H5Pset_sieve_buf_size");
  hid_t f = h5::check(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.get()), path, "cannot create HDF5 file");
  try {
    h5::write_i64_attr(f, path, "format_version", kCheckpointFormatVersion);
    h5::write_i64_attr(f, path, "step", step);
    h5::write_i64_attr(f, path, "world_size", world_size);
    std::map<std::string, h5::Dataset> open;
    for (const DatasetSpec& d : datasets) open.emplace(d.name, h5::create_dataset(f, path, d.name, d.shape, d.dtype));
    h5::check(H5Fflush(f, H5F_SCOPE_LOCAL), path, "cannot write HDF5 metadata");
    for (const TensorPiece& p : pieces) {
      auto it = open.find(p.name);
      MOE_CHECK(it != open.end(), "piece of '", p.name, "', which is not among the checkpoint's datasets");
      h5::write_piece(it->second.get(), path, p.name, p.shape, p.begin, p.data);
    }
  } catch (...) {
    if (H5Fclose(f) < 0) H5Eclear2(H5E_DEFAULT);
    throw;
  }
  h5::check(H5Fclose(f), path, "cannot close HDF5 file");
  fsync_path(path);
}

// Another rank adds its pieces to the file rank 0 made.
void write_state_part(const fs::path& file, const std::vector<TensorPiece>& pieces) {
  std::string path = file.string();
  h5::Plist fapl = h5::file_access(path);
  h5::check(H5Pset_sieve_buf_size(fapl.get(), 0), path, "H5Pset_sieve_buf_size");
  h5::File f(h5::check(H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl.get()), path, "cannot open HDF5 file for writing"));
  for (const TensorPiece& p : pieces) {
    h5::Dataset ds(h5::check(H5Dopen2(f.get(), p.name.c_str(), H5P_DEFAULT), path, "no dataset '" + p.name + "'"));
    h5::write_piece(ds.get(), path, p.name, p.shape, p.begin, p.data);
  }
  h5::check(H5Fclose(f.release()), path, "cannot close HDF5 file");
  fsync_path(path);
}

// Marker files of a sharded save, inside step-N.tmp/.
fs::path marker(const fs::path& tmp, int rank, const std::string& save_id, const char* what) {
  return tmp / ("rank-" + std::to_string(rank) + "." + save_id + "." + what);
}

// Blocks until `rank` has marked its pieces written. Any rank's failure marker fails this one too.
void wait_for_rank(const fs::path& tmp, int rank, const ShardedSave& sh) {
  auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    std::error_code ec;
    if (fs::exists(marker(tmp, rank, sh.save_id, "done"), ec)) return;
    for (int r = 0; r < sh.world; ++r) {
      fs::path failed = marker(tmp, r, sh.save_id, "failed");
      if (fs::exists(failed, ec)) {
        std::string why;
        try {
          why = read_text_file(failed.string());
        } catch (const Error&) {
          why = "(no message)";
        }
        throw error("rank ", r, " could not write its part: ", why);
      }
    }
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (sh.wait_timeout_s > 0 && waited > sh.wait_timeout_s)
      throw error(tmp.string(), ": waited ", sh.wait_timeout_s, " s for rank ", rank, " to write its part");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Refuses a save that certainly cannot fit before writing anything (the usual way a disk fills):
// the tensors' bytes alone are a lower bound on the space needed.
void check_free_space(const fs::path& root, const std::vector<DatasetSpec>& datasets) {
  struct statvfs st;
  if (statvfs(root.c_str(), &st) != 0) return;  // unknown: the writes will tell
  uint64_t free_bytes = uint64_t(st.f_bavail) * st.f_frsize, need = 0;
  for (const DatasetSpec& d : datasets) need += uint64_t(shape_numel(d.shape)) * uint64_t(dtype_size(d.dtype));
  if (need > free_bytes)
    throw error(root.string(), ": ", strerror(ENOSPC), " (the checkpoint needs more than ", need, " bytes, ",
                free_bytes, " are free)");
}

// Points root/latest at `target` (a sibling name) atomically: a new link, renamed over the old one.
void switch_latest(const fs::path& root, const std::string& target) {
  fs::path tmp = root / (std::string(kLatest) + ".tmp");
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_symlink(target, tmp, ec);
  if (ec) throw error(tmp.string(), ": cannot create symlink (", ec.message(), ")");
  rename_or_throw(tmp, root / kLatest);
}

// Removes leftovers of crashed saves, then the committed checkpoints `keep` does not cover.
void clean_up(const fs::path& root, int64_t just_saved, const Retention& keep) {
  std::vector<fs::path> stale;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec))
    if (is_tmp_dir(entry.path().filename().string())) stale.push_back(entry.path());
  if (ec) throw error(root.string(), ": cannot list (", ec.message(), ")");
  for (const fs::path& p : stale) remove_all_or_throw(p);
  if (keep.keep_last <= 0) return;
  std::vector<std::string> committed = list_checkpoints(root.string());
  int excess = int(committed.size()) - keep.keep_last;
  for (int i = 0; i < excess; ++i) {
    fs::path dir = committed[i];
    int64_t step = parse_step_dir(dir.filename().string()).value_or(-1);
    if (step == just_saved || (keep.keep_every > 0 && step % keep.keep_every == 0)) continue;
    // Renamed first so a crash mid-delete leaves a .tmp (cleaned next time), never a half folder.
    fs::path doomed = dir.string() + ".deleted.tmp";
    remove_all_or_throw(doomed);
    rename_or_throw(dir, doomed);
    remove_all_or_throw(doomed);
  }
}

// Writes and fsyncs every file of the checkpoint into `tmp`, COMMITTED last. With several ranks,
// rank 0 writes first and commits after the last rank's marker.
void write_uncommitted(const fs::path& tmp, int64_t step, const std::vector<TensorPiece>& pieces,
                       const std::vector<DatasetSpec>& datasets, const std::string& config_yaml,
                       const nlohmann::json& meta, const ShardedSave& sh) {
  std::error_code ec;
  fs::create_directory(tmp, ec);
  if (ec) throw error(tmp.string(), ": cannot create folder (", ec.message(), ")");
  write_state(tmp / kState, step, sh.recorded_world_size > 0 ? sh.recorded_world_size : sh.world, datasets, pieces);
  if (sh.world > 1) {
    write_file_synced(marker(tmp, 0, sh.save_id, "done").string(), "");
    wait_for_rank(tmp, sh.world - 1, sh);
    for (int r = 0; r < sh.world; ++r) fs::remove(marker(tmp, r, sh.save_id, "done"), ec);
  }
  write_file_synced((tmp / kConfig).string(), config_yaml);
  nlohmann::json m = meta.is_null() ? nlohmann::json::object() : meta;
  m["step"] = step;
  write_file_synced((tmp / kMeta).string(), m.dump(2) + "\n");

  nlohmann::json committed = {{"step", step}, {"files", nlohmann::json::object()}};
  for (const char* f : {kState, kConfig, kMeta}) committed["files"][f] = sha256_file((tmp / f).string());
  write_file_synced((tmp / kCommitted).string(), committed.dump(2) + "\n");
  fsync_path(tmp.string());
}

// After a failed save: until every other rank has marked its part written or failed (bounded by
// the timeout), so that removing the folder leaves nobody waiting on it.
void wait_for_all_ranks(const fs::path& tmp, const ShardedSave& sh) {
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 1; r < sh.world; ++r) {
    std::error_code ec;
    while (!fs::exists(marker(tmp, r, sh.save_id, "done"), ec) && !fs::exists(marker(tmp, r, sh.save_id, "failed"), ec)) {
      double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (sh.wait_timeout_s > 0 && waited > sh.wait_timeout_s) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
}

// A rank other than 0: waits for the rank before it, adds its pieces, marks them written. Any
// failure, its own or one it learnt of while waiting, leaves a marker with the message: the ranks
// after it stop waiting, and rank 0 knows when nobody uses the folder any more.
void write_part(const fs::path& tmp, const std::vector<TensorPiece>& pieces, const ShardedSave& sh) {
  try {
    wait_for_rank(tmp, sh.rank - 1, sh);
    write_state_part(tmp / kState, pieces);
    write_file_synced(marker(tmp, sh.rank, sh.save_id, "done").string(), "");
  } catch (const Error& e) {
    try {
      write_file_synced(marker(tmp, sh.rank, sh.save_id, "failed").string(), e.what());
    } catch (const Error&) {  // the disk that failed the write may refuse the marker too; the wait times out
    }
    throw;
  }
}

// Publishes tmp as final_dir. Saving a step that already exists (a rerun after resuming from an
// earlier step) replaces it: the old folder goes out of the way by rename and comes back if the
// second rename fails, so step-N never lacks a committed version for longer than two renames.
void publish(const fs::path& tmp, const fs::path& final_dir) {
  if (!fs::exists(fs::symlink_status(final_dir))) {
    rename_or_throw(tmp, final_dir);
    return;
  }
  fs::path replaced = final_dir.string() + ".replaced.tmp";
  remove_all_or_throw(replaced);
  rename_or_throw(final_dir, replaced);
  if (std::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    int e = errno;
    std::rename(replaced.c_str(), final_dir.c_str());
    throw error(tmp.string(), ": cannot rename to ", final_dir.string(), " (", strerror(e), ")");
  }
}

}  // namespace

std::string save_checkpoint(const std::string& root, int64_t step, const std::vector<NamedTensor>& tensors,
                            const std::string& config_yaml, const nlohmann::json& meta, Retention retention,
                            int world_size) {
  WholeTensors whole = whole_tensors(tensors);
  ShardedSave one;
  one.recorded_world_size = world_size;
  return save_checkpoint_sharded(root, step, whole.pieces, whole.datasets, config_yaml, meta, retention, one);
}

WholeTensors whole_tensors(const std::vector<NamedTensor>& tensors) {
  WholeTensors w;
  for (const NamedTensor& nt : tensors) {
    w.pieces.push_back({nt.name, nt.tensor.shape(), 0, nt.tensor});
    w.datasets.push_back({nt.name, nt.tensor.shape(), nt.tensor.dtype()});
  }
  return w;
}

std::string save_checkpoint_sharded(const std::string& root_str, int64_t step, const std::vector<TensorPiece>& pieces,
                                    const std::vector<DatasetSpec>& datasets, const std::string& config_yaml,
                                    const nlohmann::json& meta, Retention retention, const ShardedSave& sh) {
  MOE_CHECK(step >= 0, "checkpoint step ", step);
  MOE_CHECK(meta.is_object() || meta.is_null(), "checkpoint meta must be a JSON object");
  MOE_CHECK(sh.world >= 1 && sh.rank >= 0 && sh.rank < sh.world, "sharded save rank ", sh.rank, " of ", sh.world);
  h5::init();
  fs::path root(root_str);
  std::string name = step_dir_name(step);
  fs::path tmp = root / (name + ".tmp"), final_dir = root / name;
  if (sh.rank > 0) {
    write_part(tmp, pieces, sh);
    return "";
  }
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw error(root_str, ": cannot create checkpoints folder (", ec.message(), ")");
  remove_all_or_throw(tmp);
  try {
    check_free_space(root, datasets);
    write_uncommitted(tmp, step, pieces, datasets, config_yaml, meta, sh);
    publish(tmp, final_dir);
  } catch (const std::exception& e) {
    // A full disk would otherwise stay full of the partial save; the committed checkpoints are
    // untouched. The other ranks first learn of the failure and let go of the folder.
    if (sh.world > 1 && fs::exists(tmp, ec)) {
      try {
        write_file_synced(marker(tmp, 0, sh.save_id, "failed").string(), e.what());
      } catch (const Error&) {
      }
      wait_for_all_ranks(tmp, sh);
    }
    fs::remove_all(tmp, ec);
    throw;
  }
  switch_latest(root, name);
  fsync_path(root.string());

  clean_up(root, step, retention);
  return final_dir.string();
}

}  // namespace moe
