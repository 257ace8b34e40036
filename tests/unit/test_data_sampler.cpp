// BatchSampler: window count, determinism, purity, and that an epoch is a permutation of windows.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "data_pipeline/shards.h"
#include "test_data_util.h"

namespace moe {
namespace {

using test::error_of;
using test::TempDir;
using test::write_file;

// A split whose T+1-token windows at stride T all differ (a de Bruijn-like walk over 26 letters).
TokenDataset make_data(const TempDir& t, int64_t n_chars) {
  std::string text;
  uint64_t x = 12345;
  for (int64_t i = 0; i < n_chars; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    text += char('a' + (x >> 33) % 26);
  }
  write_file(t / "in/doc.txt", text);
  PreprocessOptions o;
  o.inputs = {t / "in"};
  o.output = t / "out";
  o.val_fraction = 0.0;
  o.workers = 1;
  o.shard_tokens = 97;  // windows straddle shards
  preprocess(o);
  return TokenDataset::open(t / "out");
}

std::vector<int32_t> batch(const BatchSampler& s, int64_t first, int B, int T) {
  std::vector<int32_t> out(size_t(B) * (T + 1));
  s.fill(first, B, out.data());
  return out;
}

TEST(BatchSampler, WindowCountAndTooSmallSplit) {
  TempDir t;
  auto d = make_data(t, 1000);  // 1001 tokens
  EXPECT_EQ(BatchSampler(d, 10, 1).windows_per_epoch(), 100);
  EXPECT_EQ(BatchSampler(d, 1000, 1).windows_per_epoch(), 1);
  std::string msg = error_of([&] { BatchSampler(d, 1001, 1); });
  EXPECT_NE(msg.find("split has 1001 tokens, fewer than seq_len+1 = 1002"), std::string::npos) << msg;
}

TEST(BatchSampler, EachEpochVisitsEveryWindowOnce) {
  TempDir t;
  auto d = make_data(t, 2000);
  const int T = 16;
  BatchSampler s(d, T, 1337);
  const int64_t n = s.windows_per_epoch();  // (2001 - 1) / 16 = 125
  ASSERT_EQ(n, 125);
  std::map<std::vector<int32_t>, int64_t> window_of;
  for (int64_t w = 0; w < n; ++w) {
    std::vector<int32_t> tok(T + 1);
    d.read(w * T, T + 1, tok.data());
    window_of[tok] = w;
  }
  ASSERT_EQ(int64_t(window_of.size()), n) << "test data must have distinct windows";

  std::vector<int64_t> order[2];
  for (int epoch = 0; epoch < 2; ++epoch) {
    auto all = batch(s, epoch * n, int(n), T);
    std::set<int64_t> seen;
    for (int64_t b = 0; b < n; ++b) {
      std::vector<int32_t> row(all.begin() + b * (T + 1), all.begin() + (b + 1) * (T + 1));
      auto it = window_of.find(row);
      ASSERT_NE(it, window_of.end());
      seen.insert(it->second);
      order[epoch].push_back(it->second);
    }
    EXPECT_EQ(int64_t(seen.size()), n) << "epoch " << epoch;
  }
  EXPECT_NE(order[0], order[1]);  // a fresh permutation per epoch
  // Pinned (computed independently from docs/formats.md's formula): a change here would silently
  // change which batches a resumed run sees.
  EXPECT_EQ(std::vector<int64_t>(order[0].begin(), order[0].begin() + 10),
            (std::vector<int64_t>{13, 29, 110, 15, 66, 91, 88, 93, 68, 33}));
  EXPECT_EQ(std::vector<int64_t>(order[1].begin(), order[1].begin() + 10),
            (std::vector<int64_t>{97, 98, 119, 19, 55, 61, 1, 59, 34, 82}));
  std::vector<int64_t> identity(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) identity[size_t(i)] = i;
  EXPECT_NE(order[0], identity);
}

TEST(BatchSampler, BatchesArePureFunctionsOfSeedAndPosition) {
  TempDir t;
  auto d = make_data(t, 1000);
  const int T = 8, B = 4;
  BatchSampler a(d, T, 7), b(d, T, 7), c(d, T, 8);
  const int64_t n = a.windows_per_epoch();
  auto first = batch(a, 3 * B, B, T);
  batch(a, 5 * n, B, T);  // visit another epoch in between
  EXPECT_EQ(batch(a, 3 * B, B, T), first);
  EXPECT_EQ(batch(b, 3 * B, B, T), first);  // a fresh sampler, same seed
  EXPECT_NE(batch(c, 3 * B, B, T), first);  // another seed

  // A batch across an epoch boundary equals its two halves.
  auto across = batch(a, n - 2, B, T);
  auto head = batch(b, n - 2, 2, T), tail = batch(b, n, 2, T);
  head.insert(head.end(), tail.begin(), tail.end());
  EXPECT_EQ(across, head);
}

}  // namespace
}  // namespace moe
