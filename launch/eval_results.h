// The results file of `moe eval --out FILE.jsonl`: one JSON row per (checkpoint, dataset, split),
// appended as each is evaluated, so a sweep resumes where it stopped and a later sweep adds only
// what is new.
//   - A row is identified by its EvalKey: the checkpoint's content checksum (sha256 of its COMMITTED
//     file, which holds the sha256 of every other file) and step, the dataset's name and the split.
//   - The settings that change the numbers (EvalSettings) are in every row. A key already in the
//     file with the same settings is done; with other settings it is a conflict (moe::Error): two
//     sweeps are never mixed in one file.
//   - Each row is one write(2) of a whole line followed by fsync, so a killed sweep leaves at most
//     a torn last line (no newline, or not JSON). open() drops it, truncating the file to its
//     complete lines, and says so in note(); a bad line anywhere else is an error naming
//     FILE:LINE, and the file is left as it is.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe {

struct EvalKey {
  std::string checksum;
  int64_t step = 0;
  std::string dataset, split;
  bool operator==(const EvalKey&) const = default;
};

struct EvalSettings {
  int64_t batches = 0;     // --batches (0: the whole split)
  int64_t micro_batch = 0; // sequences per forward (which windows --batches covers)
  int64_t seq_len = 0;
  std::string precision;   // fp32 | bf16 | fp8
  bool operator==(const EvalSettings&) const = default;
  std::string describe() const;  // "batches 0, micro_batch 4, seq_len 32, precision fp32"
};

// The key and settings fields of a row, and a row's key and settings back.
void set_key_fields(nlohmann::json& row, const EvalKey& key, const EvalSettings& settings);
EvalKey row_key(const nlohmann::json& row);
EvalSettings row_settings(const nlohmann::json& row);

class ResultsFile {
 public:
  // Reads `path` (a missing file is an empty one; its folder must exist). Only one process of a job
  // opens with truncate_torn (the writer); the others read and skip a torn last line.
  static ResultsFile open(const std::string& path, bool truncate_torn = true);

  const std::string& path() const { return path_; }
  const std::vector<nlohmann::json>& rows() const { return rows_; }
  const std::string& note() const { return note_; }  // "" or what open() did to a torn last line

  // True when a row with this key and these settings is in the file; a row with this key and
  // other settings throws moe::Error naming the line and both settings.
  bool done(const EvalKey& key, const EvalSettings& settings) const;
  // Appends one row as a line (one write, then fsync) and keeps it in rows().
  void append(const nlohmann::json& row);
  // Keeps a row in rows() without writing it (the ranks that do not write the file).
  void remember(const nlohmann::json& row) { rows_.push_back(row); }

 private:
  std::string path_, note_;
  std::vector<nlohmann::json> rows_;
  std::vector<int64_t> line_of_;  // 1-based line of each row read from the file
};

}  // namespace moe
