// Document starts from the index files, and MixtureSampler (data.mix): shares within one sample of
// the weights, purity in (seed, sample) — the same batches on resume and for any world size — and
// every source's windows in its own BatchSampler's order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "data_pipeline/mixture.h"
#include "data_pipeline/shards.h"
#include "test_data_util.h"

namespace moe {
namespace {

using test::TempDir;
using test::write_file;

// Blank-line-separated documents of varied length, in small shards (documents cut by shard
// boundaries), in the given format.
TokenDataset make_docs(const TempDir& t, const std::string& name, int docs, const std::string& format = "shards") {
  std::string text;
  for (int d = 0; d < docs; ++d) {
    text += std::string(size_t(3 + (d * 37) % 60), char('a' + d % 26));
    text += "\n\n";
  }
  write_file(t / (name + "/in.txt"), text);
  PreprocessOptions o;
  o.inputs = {t / (name + "/in.txt")};
  o.output = t / (name + "/out");
  o.val_fraction = 0.0;
  o.workers = 1;
  o.split_docs = true;
  o.shard_tokens = 101;
  o.format = format;
  preprocess(o);
  return TokenDataset::open(t / (name + "/out"));
}

// Where each token's document starts, from the EOS ids: what the index must agree with.
std::vector<int64_t> starts_from_eos(const TokenDataset& d) {
  const int64_t eos = d.manifest()["eos_id"].get<int64_t>();
  std::vector<int64_t> out(size_t(d.num_tokens()));
  for (int64_t i = 0, at = 0; i < d.num_tokens(); ++i) {
    if (i > 0 && int64_t(d.token(i - 1)) == eos) at = i;
    out[size_t(i)] = at;
  }
  return out;
}

}  // namespace

TEST(DocumentStarts, IndexAgreesWithEosAcrossShardsAndFormats) {
  TempDir t;
  for (const char* format : {"shards", "megatron"}) {
    TokenDataset d = make_docs(t, format, 40, format);
    const std::vector<int64_t> want = starts_from_eos(d);
    for (int64_t begin : {int64_t(0), int64_t(5), int64_t(99), int64_t(100), int64_t(101), d.num_tokens() - 70}) {
      std::vector<int32_t> got(64);
      d.document_starts(begin, 64, got.data());
      for (int64_t i = 0; i < 64; ++i)
        ASSERT_EQ(got[size_t(i)], std::max<int64_t>(want[size_t(begin + i)] - begin, 0))
            << format << " window at " << begin << ", token " << i;
    }
  }
}

TEST(BatchSampler, FillsDocumentStartsOfItsWindows) {
  TempDir t;
  TokenDataset d = make_docs(t, "a", 40);
  const int T = 32;
  BatchSampler s(d, T, 3);
  std::vector<int32_t> tokens(size_t(4 * (T + 1))), starts(size_t(4 * T)), plain(tokens.size());
  s.fill(10, 4, tokens.data(), starts.data());
  s.fill(10, 4, plain.data());
  EXPECT_EQ(tokens, plain);  // the document starts change nothing else
  const int64_t eos = d.manifest()["eos_id"].get<int64_t>();
  for (int b = 0; b < 4; ++b)
    for (int i = 0; i < T; ++i) {  // a document starts after each EOS
      const int32_t* row = tokens.data() + b * (T + 1);
      const int32_t want = i == 0 ? 0 : row[i - 1] == eos ? i : starts[size_t(b * T + i - 1)];
      ASSERT_EQ(starts[size_t(b * T + i)], want) << "window " << b << " token " << i;
    }
}

class Mixture : public ::testing::Test {
 protected:
  TempDir t;
  std::vector<TokenDataset> data;
  void SetUp() override {
    for (const char* name : {"a", "b", "c"}) data.push_back(make_docs(t, name, 30 + int(data.size()) * 20));
  }
  std::vector<const TokenDataset*> splits() const {
    std::vector<const TokenDataset*> out;
    for (const TokenDataset& d : data) out.push_back(&d);
    return out;
  }
};

TEST_F(Mixture, SharesFollowTheWeights) {
  const std::vector<double> w = {0.6, 0.3, 0.1};
  MixtureSampler m(splits(), w, 16, 7);
  std::vector<int64_t> count(3, 0);
  const int64_t G = 3 * kMixChunk + 1234;
  for (int64_t g = 0; g < G; ++g) {
    const auto [s, k] = m.locate(g);
    ASSERT_EQ(k, count[size_t(s)]) << "sample " << g << ": each source's samples in order";
    ++count[size_t(s)];
    if ((g + 1) % kMixChunk == 0) {  // exact at chunk ends: within one sample of G p
      for (int s2 = 0; s2 < 3; ++s2) EXPECT_LE(std::fabs(double(count[size_t(s2)]) - double(g + 1) * w[size_t(s2)]), 2.0);
    }
  }
  for (int s = 0; s < 3; ++s)  // and close anywhere
    EXPECT_NEAR(double(count[size_t(s)]) / double(G), w[size_t(s)], 0.01) << "source " << s;
  // Mixed within a batch, not in runs: every chunk's first 64 samples hold all three sources.
  std::map<int, int> first64;
  for (int64_t g = 0; g < 64; ++g) ++first64[m.locate(g).first];
  EXPECT_EQ(first64.size(), 3u);
}

TEST_F(Mixture, PureInSeedAndSampleSoResumeAndWorldSizeAgree) {
  const std::vector<double> w = {2, 1, 1};
  const int T = 16, G = 8;  // global batch
  MixtureSampler a(splits(), w, T, 11), b(splits(), w, T, 11), other(splits(), w, T, 12);
  auto batch = [&](const MixtureSampler& m, int64_t first, int B) {
    std::vector<int32_t> tokens(size_t(B * (T + 1))), starts(size_t(B * T)), source(static_cast<size_t>(B));
    m.fill(first, B, tokens.data(), starts.data(), source.data());
    tokens.insert(tokens.end(), starts.begin(), starts.end());
    tokens.insert(tokens.end(), source.begin(), source.end());
    return tokens;
  };
  const auto step_900 = batch(a, 900 * G, G);
  batch(a, 5, G);  // elsewhere in between (another chunk)
  EXPECT_EQ(batch(a, 900 * G, G), step_900);
  EXPECT_EQ(batch(b, 900 * G, G), step_900);  // a resumed run: a fresh sampler at step 900
  EXPECT_NE(batch(other, 900 * G, G), step_900);
  // Ranks r of W each take samples step*G + (micro*W + r)*B: the global batch's windows are the
  // same for any world size.
  for (int W : {1, 2, 4, 8}) {
    const int B = G / W;
    std::vector<std::vector<int32_t>> rows;
    for (int r = 0; r < W; ++r) {
      const auto part = batch(b, 900 * G + r * B, B);
      for (int i = 0; i < B; ++i) rows.emplace_back(part.begin() + i * (T + 1), part.begin() + (i + 1) * (T + 1));
    }
    std::vector<std::vector<int32_t>> want;
    for (int i = 0; i < G; ++i) want.emplace_back(step_900.begin() + i * (T + 1), step_900.begin() + (i + 1) * (T + 1));
    EXPECT_EQ(rows, want) << "world " << W;
  }
}

TEST_F(Mixture, SourcesKeepTheirOwnOrderAndOneSourceIsItsSampler) {
  const int T = 16;
  MixtureSampler m(splits(), {1, 1, 1}, T, 5);
  std::vector<int32_t> got(size_t(T + 1)), want(size_t(T + 1));
  int32_t source = -1;
  for (int64_t g = 0; g < 200; ++g) {
    m.fill(g, 1, got.data(), nullptr, &source);
    const auto [s, k] = m.locate(g);
    ASSERT_EQ(source, s);
    m.source(s).fill(k, 1, want.data());
    ASSERT_EQ(got, want) << "sample " << g;
  }
  MixtureSampler one({&data[1]}, {0.25}, T, 5);
  BatchSampler plain(data[1], T, 5);
  std::vector<int32_t> x(size_t(6 * (T + 1))), y(x.size());
  one.fill(4096 * 3 - 2, 6, x.data(), nullptr, nullptr);
  plain.fill(4096 * 3 - 2, 6, y.data());
  EXPECT_EQ(x, y);
}

}  // namespace moe
