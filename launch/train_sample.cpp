#include "launch/train_sample.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "framework/backend.h"
#include "framework/error.h"
#include "launch/generator.h"

namespace moe {
namespace {

// One rank's pieces as bytes: per piece [int64 name length][name][int64 begin][int64 n][n floats].
std::vector<char> pack_pieces(const ParamStore& ps, const std::vector<ShardPiece>& pieces, bool with_replicated) {
  std::vector<char> out;
  auto put = [&](const void* p, size_t bytes) {
    const char* c = static_cast<const char*>(p);
    out.insert(out.end(), c, c + bytes);
  };
  for (const ShardPiece& piece : pieces) {
    if (piece.replicated && !with_replicated) continue;  // every rank holds it: rank 0's copy is enough
    const std::string& name = ps.infos()[size_t(piece.param)].name;
    const int64_t len = int64_t(name.size()), n = piece.end - piece.begin;
    put(&len, sizeof len);
    put(name.data(), name.size());
    put(&piece.begin, sizeof piece.begin);
    put(&n, sizeof n);
    const size_t at = out.size();
    out.resize(at + size_t(n) * sizeof(float));
    compute().download(out.data() + at, piece.value, size_t(n) * sizeof(float));  // device -> host
  }
  return out;
}

// Every rank's blob on rank 0 (empty elsewhere), in rounds of at most kChunk bytes per rank, since
// an all-to-all-v count must stay below 2^31.
std::vector<std::vector<char>> gather_to_root(const Comm& world, const std::vector<char>& blob) {
  constexpr int64_t kChunk = int64_t(1) << 30;
  const int W = world.size();
  std::vector<int64_t> sizes(static_cast<size_t>(W));
  const int64_t mine = int64_t(blob.size());
  world.allgather_bytes(&mine, sizes.data(), sizeof mine);
  std::vector<std::vector<char>> out(world.is_root() ? size_t(W) : 0);
  for (int r = 0; r < int(out.size()); ++r) out[size_t(r)].resize(size_t(sizes[size_t(r)]));
  const int64_t largest = *std::max_element(sizes.begin(), sizes.end());
  std::vector<char> recv;
  for (int64_t off = 0; off < largest; off += kChunk) {
    auto part = [&](int64_t size) { return std::clamp<int64_t>(size - off, 0, kChunk); };
    std::vector<int64_t> send_counts(size_t(W), 0), send_displs(size_t(W), 0), recv_counts(size_t(W), 0);
    send_counts[0] = part(mine);
    if (world.is_root())
      for (int r = 0; r < W; ++r) recv_counts[size_t(r)] = part(sizes[size_t(r)]);
    const std::vector<int64_t> recv_displs = packed_displacements(recv_counts);
    recv.resize(size_t(recv_displs.back() + recv_counts.back()));
    world.alltoallv_bytes(blob.data() + std::min(off, mine), send_counts, send_displs, recv.data(), recv_counts,
                          recv_displs);
    for (int r = 0; r < int(out.size()); ++r)
      std::copy_n(recv.data() + recv_displs[size_t(r)], recv_counts[size_t(r)], out[size_t(r)].data() + off);
  }
  return out;
}

}  // namespace

std::unique_ptr<DeepSeekV3> gather_model(const Comm& world, const ModelConfig& config, const ParamStore& ps,
                                         const std::vector<ShardPiece>& pieces, Precision precision) {
  const std::vector<std::vector<char>> blobs = gather_to_root(world, pack_pieces(ps, pieces, world.is_root()));
  if (!world.is_root()) return nullptr;
  auto model = std::make_unique<DeepSeekV3>(config);
  model->set_precision(precision);
  ParamStore& full = model->params();
  std::vector<float> host(size_t(full.numel()), 0.f);
  int64_t filled = 0;
  for (const std::vector<char>& blob : blobs) {
    const char* p = blob.data();
    auto get = [&](void* dst, size_t bytes) {
      std::memcpy(dst, p, bytes);
      p += bytes;
    };
    while (p < blob.data() + blob.size()) {
      int64_t len = 0, begin = 0, n = 0;
      get(&len, sizeof len);
      const std::string name(p, size_t(len));
      p += len;
      get(&begin, sizeof begin);
      get(&n, sizeof n);
      const int id = full.find(name);
      MOE_CHECK(id >= 0, "gather_model: no parameter ", name, " in the full model");
      const ParamInfo& info = full.infos()[size_t(id)];
      MOE_CHECK(begin >= 0 && begin + n <= shape_numel(info.shape), "gather_model: piece of ", name, " out of range");
      get(host.data() + info.offset + begin, size_t(n) * sizeof(float));
      filled += n;
    }
  }
  int64_t expected = 0;
  for (const ParamInfo& info : full.infos()) expected += shape_numel(info.shape);
  MOE_CHECK(filled == expected, "gather_model: ", filled, " of ", expected, " parameter values arrived");
  compute().upload(full.params(), host.data(), host.size() * sizeof(float));
  return model;
}

std::string generate_sample(DeepSeekV3& model, const Tokenizer& tok, const SampleOptions& opt) {
  GeneratorOptions g;
  g.max_batch = 1;
  g.context = opt.context;
  g.sliding_window = true;  // a sample longer than the context slides instead of failing
  Generator gen(model, tok, g);
  SamplingParams s;
  s.max_tokens = opt.tokens;
  s.temperature = opt.temperature;
  s.seed = opt.seed;
  gen.submit(opt.prompt, s);
  std::string text;
  while (!gen.idle())
    for (const GenerationEvent& e : gen.step()) text += e.text;
  return text;
}

}  // namespace moe
