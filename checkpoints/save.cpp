// save_checkpoint: write everything into step-N.tmp/, COMMITTED last, then publish with renames.
// The order is what makes a crash at any point harmless: a folder named step-N (no .tmp) only ever
// appears complete and fsync'd, and `latest` only ever points at such a folder.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

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

void write_state(const fs::path& file, int64_t step, const std::vector<NamedTensor>& tensors) {
  std::string path = file.string();
  std::set<std::string> seen;
  for (const NamedTensor& nt : tensors) {
    h5::check_name(nt.name);
    MOE_CHECK(seen.insert(nt.name).second, "tensor '", nt.name, "' is saved twice");
  }
  {
    h5::Plist fapl = h5::file_access(path);
    h5::File f(h5::check(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.get()), path,
                         "cannot create HDF5 file"));
    h5::write_i64_attr(f.get(), path, "step", step);
    for (const NamedTensor& nt : tensors) h5::write_tensor(f.get(), path, nt.name, nt.tensor);
  }  // closed (and so flushed) before the fsync
  fsync_path(path);
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

// Removes leftovers of crashed saves, then all but the newest keep_last committed checkpoints.
void clean_up(const fs::path& root, int64_t just_saved, int keep_last) {
  std::vector<fs::path> stale;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec))
    if (is_tmp_dir(entry.path().filename().string())) stale.push_back(entry.path());
  if (ec) throw error(root.string(), ": cannot list (", ec.message(), ")");
  for (const fs::path& p : stale) remove_all_or_throw(p);
  if (keep_last <= 0) return;
  std::vector<std::string> committed = list_checkpoints(root.string());
  int excess = int(committed.size()) - keep_last;
  for (int i = 0; i < excess; ++i) {
    fs::path dir = committed[i];
    if (parse_step_dir(dir.filename().string()) == just_saved) continue;
    // Renamed first so a crash mid-delete leaves a .tmp (cleaned next time), never a half folder.
    fs::path doomed = dir.string() + ".deleted.tmp";
    remove_all_or_throw(doomed);
    rename_or_throw(dir, doomed);
    remove_all_or_throw(doomed);
  }
}

}  // namespace

std::string save_checkpoint(const std::string& root_str, int64_t step, const std::vector<NamedTensor>& tensors,
                            const std::string& config_yaml, const nlohmann::json& meta, int keep_last) {
  MOE_CHECK(step >= 0, "checkpoint step ", step);
  MOE_CHECK(meta.is_object() || meta.is_null(), "checkpoint meta must be a JSON object");
  h5::init();
  fs::path root(root_str);
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw error(root_str, ": cannot create checkpoints folder (", ec.message(), ")");

  std::string name = step_dir_name(step);
  fs::path tmp = root / (name + ".tmp"), final_dir = root / name;
  remove_all_or_throw(tmp);
  fs::create_directory(tmp, ec);
  if (ec) throw error(tmp.string(), ": cannot create folder (", ec.message(), ")");

  write_state(tmp / kState, step, tensors);
  write_file_synced((tmp / kConfig).string(), config_yaml);
  nlohmann::json m = meta.is_null() ? nlohmann::json::object() : meta;
  m["step"] = step;
  write_file_synced((tmp / kMeta).string(), m.dump(2) + "\n");

  nlohmann::json committed = {{"step", step}, {"files", nlohmann::json::object()}};
  for (const char* f : {kState, kConfig, kMeta}) committed["files"][f] = sha256_file((tmp / f).string());
  write_file_synced((tmp / kCommitted).string(), committed.dump(2) + "\n");
  fsync_path(tmp.string());

  // Saving a step that already exists (a rerun after resuming from an earlier step) replaces it;
  // the old folder goes out of the way by rename, so step-N is never missing a committed version
  // for longer than the two renames.
  if (fs::exists(fs::symlink_status(final_dir))) {
    fs::path replaced = root / (name + ".replaced.tmp");
    remove_all_or_throw(replaced);
    rename_or_throw(final_dir, replaced);
  }
  rename_or_throw(tmp, final_dir);
  switch_latest(root, name);
  fsync_path(root.string());

  clean_up(root, step, keep_last);
  return final_dir.string();
}

}  // namespace moe
