// What a preprocess run keeps in <output>.tmp to be resumed (docs/formats.md, "Resuming"): the
// last checkpoint as progress.json, and the lock that keeps two runs out of one folder.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "data_pipeline/corpus.h"
#include "data_pipeline/token_stream.h"

namespace moe {

inline constexpr int kStateVersion = 1;

// What the input has given so far; part of every checkpoint.
struct Counts {
  int64_t documents = 0, empty = 0, bad_lines = 0, invalid_docs = 0;
  uint64_t invalid_bytes = 0, text_bytes = 0;
  int64_t doc_tokens = 0;    // of the document in progress
  bool doc_invalid = false;  // the document in progress holds invalid UTF-8
  std::string first_bad;     // "path:line: what" of the first skipped line
};

// progress.json: the last checkpoint. `at` + `skip` say where the input continues: re-read the unit
// (document or piece) starting at `at` and drop its first `skip` tokens, which are in the stream.
struct RunState {
  std::string fingerprint;  // of the arguments and inputs (preprocess.cpp)
  StreamState stream;
  InputPosition at;
  int64_t skip = 0;
  Counts counts;
  bool input_done = false;
  nlohmann::json val;  // what finishing recorded once the val split was written; null before

  nlohmann::json to_json() const;
  // Throws (nlohmann::json::exception or std::runtime_error) when anything is missing or off.
  static RunState from_json(const nlohmann::json& j);
};

// An exclusive flock on the run folder itself: two runs with one --output would corrupt each
// other. The kernel drops it when the process dies, so a killed run never leaves a stale lock.
class FolderLock {
 public:
  explicit FolderLock(const std::filesystem::path& dir);  // throws moe::Error when another run holds it
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace moe
