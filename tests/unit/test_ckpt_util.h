// Shared by the test_ckpt_* suites: a temporary folder removed at the end of each test, and small
// tensors with recognisable contents.
#pragma once
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "framework/error.h"
#include "framework/tensor.h"

namespace moe::test {

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/moe-ckpt-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& rel) const { return dir_ + "/" + rel; }
  std::string dir_;
};

// f32 tensor whose elements are distinct, non-round values (so a bitwise mismatch shows).
inline Tensor ramp(const Shape& shape, float seed) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = seed + 0.001f * float(i) - 1.0f / (3.0f + float(i));
  return t;
}

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), size_t(a.nbytes())) == 0);
}

// Runs fn, expects a moe::Error whose message contains `part`.
template <class Fn>
void expect_error(Fn&& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "expected moe::Error containing: " << part;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "message: " << e.what();
  }
}

}  // namespace moe::test
