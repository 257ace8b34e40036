// Finding checkpoints: what a user's path means, what a root holds, where a run resumes.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <utility>

#include "checkpoints/checkpoint.h"
#include "checkpoints/layout.h"

namespace moe {
namespace fs = std::filesystem;
using namespace ckpt;

namespace {

const char* kExpected = "(expected a step-N folder, a 'latest' link or a checkpoints folder)";

// "a/b/" and "a/b" name the same folder; keep the user's spelling otherwise.
std::string strip_trailing_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

}  // namespace

std::vector<std::string> list_checkpoints(const std::string& root_str) {
  fs::path root(strip_trailing_slashes(root_str));
  std::error_code ec;
  auto st = fs::status(root, ec);
  if (!fs::exists(st)) return {};
  if (!fs::is_directory(st)) throw error(root_str, ": not a folder (expected a checkpoints folder)");
  std::vector<std::pair<int64_t, std::string>> found;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    std::string name = entry.path().filename().string();
    auto step = parse_step_dir(name);
    if (step && entry.is_directory() && path_exists(entry.path() / kCommitted)) found.emplace_back(*step, (root / name).string());
  }
  if (ec) throw error(root_str, ": cannot list (", ec.message(), ")");
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

std::string resolve_checkpoint(const std::string& path_str) {
  std::string path = strip_trailing_slashes(path_str);
  fs::path p(path);
  std::error_code ec;
  auto st = fs::status(p, ec);  // follows `latest`; a dangling link does not exist
  if (!fs::exists(st)) throw error(path, ": no such checkpoint ", kExpected);
  if (!fs::is_directory(st)) throw error(path, ": not a checkpoint ", kExpected);

  fs::path dir = p;
  if (fs::is_symlink(fs::symlink_status(p, ec))) {
    fs::path target = fs::read_symlink(p, ec);
    if (ec) throw error(path, ": cannot read link (", ec.message(), ")");
    dir = target.is_absolute() ? target : p.parent_path() / target;
  }
  if (path_exists(dir / kCommitted)) return dir.string();

  std::string name = dir.filename().string();
  if (parse_step_dir(name) || is_tmp_dir(name) || path_exists(dir / kState) || path_exists(dir / kMeta))
    throw error(dir.string(), ": checkpoint is not committed (interrupted save?)");
  std::vector<std::string> all = list_checkpoints(dir.string());
  if (all.empty())
    throw error(path, ": no committed checkpoint in this folder (expected step-N folders with a COMMITTED file)");
  return all.back();
}

std::string find_resume_checkpoint(const std::string& root) {
  std::vector<std::string> all = list_checkpoints(root);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      CheckpointReader reader(*it);
      reader.verify();
      return *it;
    } catch (const Error& e) {
      fprintf(stderr, "warning: skipping checkpoint %s: %s\n", it->c_str(), e.what());
    }
  }
  return "";
}

}  // namespace moe
