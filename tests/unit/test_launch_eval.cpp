// The pure parts of `moe eval` sweeps: flags that must not repeat, the results file (resume,
// torn last line, conflicting settings), --data parsing, the tables.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "framework/error.h"
#include "launch/args.h"
#include "launch/eval_results.h"
#include "launch/eval_sweep.h"
#include "launch/eval_table.h"

using namespace moe;
namespace fs = std::filesystem;

namespace {

Args parse(std::vector<std::string> words, const std::vector<std::string>& values,
           const std::vector<std::string>& switches = {}) {
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  return Args(int(argv.size()), argv.data(), values, switches);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct TempDir {
  fs::path dir = fs::temp_directory_path() / ("moe_eval_test_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(dir); }
  ~TempDir() { fs::remove_all(dir); }
};

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

nlohmann::json row(int64_t step, const std::string& dataset, double loss, int64_t batches = 0) {
  nlohmann::json r = {{"run", "r"}, {"loss", loss}, {"top1", 0.5}};
  set_key_fields(r, {"sum" + std::to_string(step), step, dataset, "val"}, {batches, 4, 32, "fp32"});
  return r;
}

}  // namespace

TEST(Args, RepeatedFlag) {
  const std::string e = error_of([] { parse({"--split", "val", "--split=train"}, {"split"}); });
  EXPECT_NE(e.find("--split given twice ('val' and 'train')"), std::string::npos) << e;
  Args a = parse({"--set", "a=1", "--data", "x", "--set=b=2", "--json", "--json"}, {"set...", "data"}, {"json"});
  EXPECT_EQ(a.all("set"), (std::vector<std::string>{"a=1", "b=2"}));
  EXPECT_EQ(a.get("set"), "b=2");
  EXPECT_EQ(a.get("data"), "x");
  EXPECT_TRUE(a.has("json"));  // a switch twice is the same switch
  EXPECT_NE(error_of([] { parse({"--sett", "1"}, {"set..."}); }).find("unknown flag --sett"), std::string::npos);
  EXPECT_NE(error_of([] { parse({"--set"}, {"set..."}); }).find("--set: missing value"), std::string::npos);
}

TEST(EvalData, NameAndFolder) {
  EXPECT_EQ(parse_data_flag("wiki=/d/wiki").name, "wiki");
  EXPECT_EQ(parse_data_flag("wiki=/d/wiki").dir, "/d/wiki");
  EXPECT_EQ(parse_data_flag("/data/shakespeare/").name, "shakespeare");
  EXPECT_EQ(parse_data_flag("/data/shakespeare/").dir, "/data/shakespeare/");
  EXPECT_NE(error_of([] { parse_data_flag("=x"); }), "");
  EXPECT_EQ(run_name_of("/runs/demo/checkpoints/step-00000100"), "demo");
  EXPECT_EQ(run_name_of("/runs/ckpts/step-00000100"), "ckpts");
}

TEST(ResultsFile, ResumeSkipsDoneRowsAndKeepsOthers) {
  TempDir t;
  const std::string path = (t.dir / "r.jsonl").string();
  ResultsFile f = ResultsFile::open(path);  // missing: empty
  EXPECT_TRUE(f.rows().empty());
  f.append(row(10, "a", 1.5));
  f.append(row(10, "b", 1.25));
  const std::string text = read(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);

  ResultsFile g = ResultsFile::open(path);
  EXPECT_EQ(g.rows().size(), 2u);
  EXPECT_TRUE(g.note().empty());
  const EvalSettings s{0, 4, 32, "fp32"};
  EXPECT_TRUE(g.done({"sum10", 10, "a", "val"}, s));
  EXPECT_FALSE(g.done({"sum10", 10, "a", "train"}, s));   // other split
  EXPECT_FALSE(g.done({"sum20", 20, "a", "val"}, s));     // other checkpoint
  EXPECT_FALSE(g.done({"other", 10, "a", "val"}, s));     // same step, other content (a re-run)
  // The same checkpoint and dataset under other settings: an error naming the line, file untouched.
  const std::string e = error_of([&] { g.done({"sum10", 10, "b", "val"}, {5, 4, 32, "fp32"}); });
  EXPECT_NE(e.find("r.jsonl:2: step 10 on b/val was evaluated with batches 0"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { g.done({"sum10", 10, "a", "val"}, {0, 4, 32, "bf16"}); }).find("precision fp32"),
            std::string::npos);
  EXPECT_EQ(read(path), text);
}

TEST(ResultsFile, TornLastLineIsDroppedOthersAreErrors) {
  TempDir t;
  const fs::path path = t.dir / "r.jsonl";
  const std::string good = row(10, "a", 1.5).dump() + "\n" + row(20, "a", 1.0).dump() + "\n";
  for (const std::string& torn : {std::string("{\"run\": \"r\", \"lo"), row(30, "a", 0.5).dump()}) {
    std::ofstream(path, std::ios::binary) << good << torn;  // the second: complete JSON, no newline
    ResultsFile reader = ResultsFile::open(path.string(), /*truncate_torn=*/false);
    EXPECT_EQ(reader.rows().size(), 2u);
    EXPECT_EQ(read(path), good + torn);  // a reader leaves the file alone
    ResultsFile f = ResultsFile::open(path.string());
    EXPECT_EQ(f.rows().size(), 2u);
    EXPECT_NE(f.note().find("line 3"), std::string::npos) << f.note();
    EXPECT_EQ(read(path), good);
    f.append(row(30, "a", 0.5));
    EXPECT_EQ(read(path), good + row(30, "a", 0.5).dump() + "\n");
  }
  // A bad line that is not the last one is not a crash's doing: an error, nothing dropped.
  const std::string bad = row(10, "a", 1.5).dump() + "\nnot json\n" + row(20, "a", 1.0).dump() + "\n";
  std::ofstream(path, std::ios::binary) << bad;
  const std::string e = error_of([&] { ResultsFile::open(path.string()); });
  EXPECT_NE(e.find("r.jsonl:2: not a results row"), std::string::npos) << e;
  EXPECT_EQ(read(path), bad);
  // A row without the key fields is not ours either.
  std::ofstream(path, std::ios::binary) << "{\"loss\": 1}\n" << row(10, "a", 1.5).dump() << "\n";
  EXPECT_NE(error_of([&] { ResultsFile::open(path.string()); }).find("r.jsonl:1:"), std::string::npos);
}

TEST(EvalTable, MatrixAtLatestStepAndLongTable) {
  std::vector<nlohmann::json> rows = {row(10, "a", 2.0), row(10, "b", 2.5), row(20, "a", 1.5), row(20, "b", 1.75)};
  const std::string table = format_results(rows, TableFormat::Table);
  // Matrix: run r at step 20, both datasets; then every row.
  EXPECT_NE(table.find("r    20    1.5000 (50.00%)     1.7500 (50.00%)"), std::string::npos) << table;
  EXPECT_NE(table.find("a/val loss (top-1)"), std::string::npos) << table;
  const std::string md = format_results(rows, TableFormat::Markdown);
  EXPECT_NE(md.find("| r | 20 | 1.5000 (50.00%) | 1.7500 (50.00%) |"), std::string::npos) << md;
  const std::string csv = format_results(rows, TableFormat::Csv);
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "run,step,tokens_seen,dataset,split,loss,perplexity,bits_per_byte,top1,top5,load_max_mean,tokens,seconds,"
            "windows_per_s");
  EXPECT_NE(csv.find("\nr,20,,a,val,1.5,,,0.5,"), std::string::npos) << csv;
  EXPECT_NE(error_of([] { parse_table_format("html"); }), "");
}
