// Reading exports back: the int8 quantiser (per-row scale, clamp, zero rows, error bound), the
// safetensors reader (round trip of what the writer wrote, and a clear error for every kind of
// corrupt file), config.json -> Config as the inverse of hf_config(), and export -> read of every
// dtype (f32 bitwise, bf16 its rounding, int8 within half a step).
#include <cmath>
#include <fstream>
#include <limits>

#include "checkpoints/hf_export.h"
#include "checkpoints/hf_import.h"
#include "checkpoints/int8_weights.h"
#include "checkpoints/safetensors.h"
#include "framework/config.h"
#include "framework/dtype.h"
#include "test_ckpt_util.h"

namespace moe {
namespace {

using test::expect_error;
using test::ramp;

Tensor matrix(int64_t rows, int64_t cols, std::initializer_list<float> values) {
  Tensor t = Tensor::empty({rows, cols});
  std::copy(values.begin(), values.end(), t.f32());
  return t;
}

TEST(Int8Rows, ScalePerRowIsMaxAbsOver127AndDequantIsWithinHalfAStep) {
  Tensor w = ramp({5, 7}, -0.3f);
  for (int64_t c = 0; c < 7; ++c) w.f32()[2 * 7 + c] *= 100.f;  // one row far larger: its own scale
  Int8Rows q = quantize_rows_int8(w, "w");
  std::vector<float> back(35);
  dequantize_rows_int8(q.q.data(), q.scale.data(), 5, 7, back.data());
  for (int64_t r = 0; r < 5; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < 7; ++c) amax = std::max(amax, std::fabs(w.f32()[r * 7 + c]));
    EXPECT_FLOAT_EQ(q.scale[r], amax / 127.f) << r;
    bool hit_127 = false;
    for (int64_t c = 0; c < 7; ++c) {
      const int8_t v = q.q[r * 7 + c];
      EXPECT_GE(v, -127);
      hit_127 |= std::abs(v) == 127;  // the largest element uses the whole range
      EXPECT_LE(std::fabs(back[r * 7 + c] - w.f32()[r * 7 + c]), q.scale[r] * 0.5f * 1.0001f) << r << "," << c;
      EXPECT_EQ(back[r * 7 + c], float(v) * q.scale[r]);
    }
    EXPECT_TRUE(hit_127) << r;
  }
}

TEST(Int8Rows, ZeroRowHasScaleZeroAndComesBackExactlyZero) {
  Tensor w = matrix(2, 3, {0.f, -0.f, 0.f, 1.f, -2.f, 0.5f});
  Int8Rows q = quantize_rows_int8(w, "w");
  EXPECT_EQ(q.scale[0], 0.f);
  std::vector<float> back(6);
  dequantize_rows_int8(q.q.data(), q.scale.data(), 2, 3, back.data());
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(q.q[c], 0);
    EXPECT_EQ(back[c], 0.f);
    EXPECT_FALSE(std::isnan(back[c]));
  }
  EXPECT_EQ(q.q[3 + 1], -127);  // -2 is the row's max: -127, never -128
  EXPECT_EQ(q.q[3 + 0], 64);    // 1 / (2/127) = 63.5, to even: 64
  EXPECT_EQ(back[3 + 1], -2.f);
}

TEST(Int8Rows, NonFiniteWeightIsAnErrorNamingIt) {
  Tensor w = matrix(1, 2, {1.f, std::numeric_limits<float>::infinity()});
  expect_error([&] { quantize_rows_int8(w, "layer.w"); }, "layer.w: row 0 holds inf");
}

class Safetensors : public test::TempDir {
 protected:
  // Writes a file with two tensors: a F32 [2,3] and an I8 [4].
  std::string write_good() {
    const std::string file = path("good.safetensors");
    SafetensorsWriter w(file, {{"a", {2, 3}, "F32"}, {"b", {4}, "I8"}}, {{"step", "7"}});
    w.write(ramp({2, 3}, 1.f));
    const int8_t b[4] = {-127, 0, 5, 127};
    w.write(b, 4);
    w.finish();
    return file;
  }
  // A file from a header given as JSON text and `data_bytes` zero bytes of data.
  std::string write_raw(const std::string& header, size_t data_bytes, uint64_t declared_len = 0) {
    const std::string file = path("bad.safetensors");
    std::ofstream out(file, std::ios::binary);
    const uint64_t n = declared_len ? declared_len : header.size();
    for (int i = 0; i < 8; ++i) out.put(char(n >> (8 * i)));
    out << header << std::string(data_bytes, '\0');
    return file;
  }
  void expect_rejected(const std::string& header, size_t data, const std::string& part, uint64_t declared = 0) {
    const std::string file = write_raw(header, data, declared);
    expect_error([&] { SafetensorsReader r(file); }, part);
    expect_error([&] { SafetensorsReader r(file); }, file);
  }
};

TEST_F(Safetensors, ReadsBackWhatTheWriterWrote) {
  SafetensorsReader r(write_good());
  EXPECT_EQ(r.metadata().at("step"), "7");
  EXPECT_EQ(r.tensors().size(), 2u);
  EXPECT_TRUE(test::bitwise_equal(r.read_f32("a"), ramp({2, 3}, 1.f)));
  EXPECT_EQ(r.info("b").dtype, "I8");
  std::vector<char> b = r.read_bytes("b");
  EXPECT_EQ(int8_t(b[0]), -127);
  EXPECT_EQ(int8_t(b[3]), 127);
  expect_error([&] { r.read_f32("b"); }, "tensor 'b' is I8 (expected F32 or BF16)");
  expect_error([&] { r.info("c"); }, "no tensor 'c'");
}

TEST_F(Safetensors, TruncatedFileIsAnError) {
  const std::string file = write_good();
  std::filesystem::resize_file(file, std::filesystem::file_size(file) - 3);
  expect_error([&] { SafetensorsReader r(file); }, "tensor 'b': data_offsets [24, 28] outside the data");
  std::filesystem::resize_file(file, 5);
  expect_error([&] { SafetensorsReader r(file); }, "5 bytes (expected at least the 8-byte header length)");
}

TEST_F(Safetensors, HeaderLengthPastTheEndIsAnErrorWithoutAllocatingIt) {
  expect_rejected("{}", 0, "header length 18446744073709551615 runs past the end of the file", ~uint64_t(0));
  expect_rejected("{}", 0, "header length 3 runs past the end of the file", 3);
}

TEST_F(Safetensors, MalformedHeadersAreErrors) {
  expect_rejected("{not json", 0, "header is not JSON");
  // Printing a value 50,000 levels deep in the error message overflowed the stack (found by tests/fuzz).
  const std::string deep = R"({"a": {"dtype": "F32", "shape": )" + std::string(50000, '[') + std::string(50000, ']') + "}}";
  expect_rejected(deep, 0, "JSON nested deeper than 64 levels (expected a safetensors header");
  expect_rejected("[1, 2]", 0, "header is a JSON array (expected an object)");
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [2]}})", 8, "tensor 'a': expected an object with dtype");
  expect_rejected(R"({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}})", 8, "tensor 'a': unknown dtype \"Q4\"");
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8, "expected non-negative integers");
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}})", 8,
                  "data_offsets [0, 12] outside the data (8 bytes");
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 2]}})", 8, "data_offsets [4, 2] outside");
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 12,
                  "shape [3] of F32 is 12 bytes but data_offsets span 8");
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                  R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                  12, "tensors 'a' and 'b' overlap");
  expect_rejected(R"({"__metadata__": {"step": 7}})", 0, "__metadata__ 'step' is not a string");
}

TEST_F(Safetensors, HugeDeclaredShapesAreErrorsNotAllocations) {
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 8]}})", 8,
                  "needs more bytes than the file's 8 bytes of data");
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 18446744073709551615]}})", 8,
                  "expected [begin, end], non-negative integers");
}

Config small_config() {
  Config c;
  c.model.vocab_size = 48;
  c.model.hidden = 16;
  c.model.layers = 3;
  c.model.dense_layers = 1;
  c.model.dense_inter = 24;
  c.model.heads = 2;
  c.model.q_lora_rank = 0;
  c.model.kv_lora_rank = 8;
  c.model.qk_nope_dim = 4;
  c.model.qk_rope_dim = 4;
  c.model.v_head_dim = 4;
  c.model.routed_experts = 4;
  c.model.experts_per_token = 2;
  c.model.expert_inter = 8;
  c.model.router.groups = 2;
  c.model.router.groups_per_token = 1;
  c.model.router.routed_scaling = 2.5;
  c.model.router.score = "softmax";
  c.model.rope_theta = 50000;
  c.model.rms_norm_eps = 1e-5;
  c.model.init_std = 0.01;
  c.model.tie_embeddings = true;
  c.data.seq_len = 96;
  return c;
}

// The router's training coefficients are not part of a DeepseekV3Config: they come back as defaults.
ModelConfig inference_part(ModelConfig m) {
  const RouterConfig defaults;
  m.router.bias_update_rate = defaults.bias_update_rate;
  m.router.aux_loss_coef = defaults.aux_loss_coef;
  m.router.z_loss_coef = defaults.z_loss_coef;
  return m;
}

TEST(HfConfig, RoundTripsThroughConfigJson) {
  for (int q_lora : {0, 12}) {
    Config c = small_config();
    c.model.q_lora_rank = q_lora;
    const nlohmann::json j = nlohmann::json::parse(hf_config(c, "int8").dump());
    const Config back = config_from_hf(j, "x/config.json");
    EXPECT_EQ(back.model, inference_part(c.model)) << q_lora;
    EXPECT_EQ(back.data.seq_len, 96);
    EXPECT_EQ(back.source, "x/config.json");
  }
}

TEST(HfConfig, RejectsWhatWeCannotBuild) {
  const nlohmann::json good = nlohmann::json::parse(hf_config(small_config(), "f32").dump());
  auto rejected = [&](const char* key, nlohmann::json value, const std::string& part) {
    nlohmann::json j = good;
    if (value.is_discarded()) j.erase(key);
    else j[key] = value;
    expect_error([&] { config_from_hf(j, "x/config.json"); }, "x/config.json: " + part);
  };
  rejected("hidden_size", "16", "\"hidden_size\" is \"16\" (expected an integer)");
  rejected("hidden_size", 1.5, "\"hidden_size\" is 1.5 (expected an integer)");
  rejected("num_hidden_layers", nlohmann::json::value_t::discarded, "missing key \"num_hidden_layers\"");
  rejected("model_type", "llama", "\"model_type\" is \"llama\" (expected \"deepseek_v3\")");
  rejected("hidden_act", "gelu", "\"hidden_act\" is \"gelu\"");
  rejected("num_key_value_heads", 1, "\"num_key_value_heads\" is 1");
  rejected("rope_scaling", {{"type", "yarn"}}, "\"rope_scaling\"");
  rejected("tie_word_embeddings", 1, "\"tie_word_embeddings\" is 1 (expected true or false)");
  rejected("first_k_dense_replace", 7, "not a model this build can run: model.dense_layers is 7 but model.layers is 3");
  rejected("n_routed_experts", 3, "not a model this build can run");
  expect_error([&] { config_from_hf(nlohmann::json::array(), "x/config.json"); }, "a JSON array");
}

// A checkpoint exported as f32, bf16 and int8, read back: the tensors are the checkpoint's
// exactly, rounded to bf16, or within half an int8 step; config.json records the rest.
class ExportImport : public test::TempDir {};

TEST_F(ExportImport, EveryDtypeReadsBackWithinItsRounding) {
  const Config cfg = small_config();
  Tensor zero_row = ramp({3, 16}, 0.5f);
  for (int c = 0; c < 16; ++c) zero_row.f32()[16 + c] = 0;
  const std::vector<NamedTensor> tensors = {
      {"model.embed_tokens.weight", ramp({48, 16}, 0.1f)},
      {"model.layers.1.mlp.experts.0.down_proj.weight", ramp({16, 8}, -0.2f)},
      {"model.layers.1.mlp.gate.weight", ramp({4, 16}, 0.3f)},
      {"model.layers.1.mlp.gate.e_score_correction_bias", ramp({4}, 1e-3f)},
      {"model.layers.1.self_attn.kv_a_proj_with_mqa.weight", zero_row},
      {"model.norm.weight", ramp({16}, 1.f)},
      {"optimizer.exp_avg.model.norm.weight", ramp({16}, 9.f)}};
  const std::string dir = save_checkpoint(path("ckpt"), 5, tensors, config_to_yaml(cfg),
                                          {{"tokenizer", "byte"}, {"tokenizer_hash", "abc"}, {"val_loss", 2.5},
                                           {"val_loss_step", 4}, {"tokens", 640}},
                                          0);
  CheckpointReader ckpt(dir);
  for (const std::string dtype : {"f32", "bf16", "int8"}) {
    const std::string out = path("hf-" + dtype);
    export_hf(ckpt, out, dtype);
    SafetensorsReader st(out + "/model.safetensors");
    std::ifstream in(out + "/config.json");
    const nlohmann::json config = nlohmann::json::parse(in);
    EXPECT_EQ(config_from_hf(config, "config.json").model, inference_part(cfg.model));
    EXPECT_EQ(config["moe"]["tokenizer"], "byte");
    EXPECT_EQ(config["moe"]["step"], 5);
    EXPECT_EQ(config["moe"]["val_loss"], 2.5);
    EXPECT_EQ(config["moe"]["tokens"], 640);
    EXPECT_EQ(config.contains("quantization_config"), dtype == "int8");
    EXPECT_FALSE(st.has("optimizer.exp_avg.model.norm.weight"));
    for (const NamedTensor& t : tensors) {
      if (t.name.rfind("optimizer.", 0) == 0) continue;
      const float* want = t.tensor.f32();
      const bool i8 = dtype == "int8" && int8_quantized(t.name, t.tensor.shape());
      EXPECT_EQ(st.info(t.name).dtype, i8                                            ? "I8"
                                       : dtype == "bf16" && t.name.find("bias") == std::string::npos ? "BF16"
                                                                                                     : "F32")
          << dtype << " " << t.name;
      std::vector<float> got(size_t(t.tensor.numel()));
      if (i8) {
        const int64_t rows = t.tensor.shape()[0], cols = t.tensor.shape()[1];
        EXPECT_EQ(st.info(int8_scale_name(t.name)).shape, Shape{rows});
        std::vector<char> q = st.read_bytes(t.name), s = st.read_bytes(int8_scale_name(t.name));
        const float* scale = reinterpret_cast<const float*>(s.data());
        dequantize_rows_int8(reinterpret_cast<const int8_t*>(q.data()), scale, rows, cols, got.data());
        for (int64_t i = 0; i < t.tensor.numel(); ++i)
          EXPECT_LE(std::fabs(got[i] - want[i]), scale[i / cols] * 0.5f * 1.0001f) << t.name << "[" << i << "]";
      } else {
        Tensor r = st.read_f32(t.name);
        for (int64_t i = 0; i < t.tensor.numel(); ++i)
          EXPECT_EQ(r.f32()[i], st.info(t.name).dtype == "BF16" ? round_bf16(want[i]) : want[i]) << t.name;
      }
    }
  }
  // Which tensors int8 converts: Linear weights and lm_head; not embeddings, routers, norms.
  EXPECT_TRUE(int8_quantized("model.layers.1.self_attn.kv_a_proj_with_mqa.weight", {3, 16}));
  EXPECT_TRUE(int8_quantized("lm_head.weight", {48, 16}));
  EXPECT_FALSE(int8_quantized("model.embed_tokens.weight", {48, 16}));
  EXPECT_TRUE(int8_quantized("model.embed_tokens.weight", {48, 16}, /*embeddings=*/true));
  EXPECT_FALSE(int8_quantized("model.layers.1.mlp.gate.weight", {4, 16}));
  EXPECT_FALSE(int8_quantized("model.norm.weight", {16}));
  // The zero row of an int8 weight comes back as exact zeros.
  SafetensorsReader st(path("hf-int8/model.safetensors"));
  std::vector<char> s = st.read_bytes("model.layers.1.self_attn.kv_a_proj_with_mqa.weight_scale");
  EXPECT_EQ(reinterpret_cast<const float*>(s.data())[1], 0.f);
}

}  // namespace
}  // namespace moe
