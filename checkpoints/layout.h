// Internal to checkpoints/: the on-disk names (docs/formats.md, "Checkpoints") and small file
// helpers shared by the writer, the reader and resume discovery.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace moe::ckpt {

inline constexpr const char* kState = "state.h5";
inline constexpr const char* kConfig = "config.yaml";
inline constexpr const char* kMeta = "meta.json";
inline constexpr const char* kCommitted = "COMMITTED";
inline constexpr const char* kLatest = "latest";

std::string step_dir_name(int64_t step);  // "step-00000100"
// The step of a committed-folder name "step-<digits>", or nullopt for anything else (".tmp" too).
std::optional<int64_t> parse_step_dir(std::string_view name);
// A save in progress or abandoned: "step-<digits>.tmp" and the ".replaced.tmp"/".deleted.tmp"
// names a replaced or retired checkpoint passes through before it is removed.
bool is_tmp_dir(std::string_view name);

std::string read_text_file(const std::string& path);  // throws moe::Error naming the file
// Writes, fsyncs and closes (a crash after this returns cannot lose the bytes).
void write_file_synced(const std::string& path, const std::string& text);
// fsync of a file or a folder (a folder's fsync makes the creates and renames inside it durable).
void fsync_path(const std::string& path);

}  // namespace moe::ckpt
