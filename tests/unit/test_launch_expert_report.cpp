// ExpertReport (launch/expert_report.h): counts summed over the steps of an interval, the top
// experts of each MoE layer with their share, the full counts as JSON, and reset.
#include <gtest/gtest.h>

#include "launch/expert_report.h"

using namespace moe;

namespace {

Tensor loads(std::vector<float> v, int64_t L, int64_t E) {
  Tensor t = Tensor::empty({L, E});
  std::copy(v.begin(), v.end(), t.f32());
  return t;
}

}  // namespace

TEST(ExpertReport, TopExpertsPerLayerOverTheInterval) {
  ExpertReport r({1, 3});  // MoE layers are blocks 1 and 3
  r.add(loads({10, 30, 40, 20, /*layer 3*/ 25, 25, 25, 25}, 2, 4));
  r.add(loads({10, 10, 0, 0, /*layer 3*/ 0, 0, 50, 50}, 2, 4));
  EXPECT_EQ(r.steps(), 2);
  // Layer 1: 20, 40, 40, 20 of 120 -> ties by the lower id; layer 3: 25, 25, 75, 75 of 200.
  EXPECT_EQ(r.lines(), (std::vector<std::string>{"top experts L1: 1:33% 2:33% 0:17% 3:17%",
                                                 "top experts L3: 2:38% 3:38% 0:12% 1:12%"}));
  EXPECT_EQ(r.lines(2)[0], "top experts L1: 1:33% 2:33%");
  const nlohmann::json j = r.json();
  EXPECT_EQ(j["expert_counts"], nlohmann::json::parse("[[20, 40, 40, 20], [25, 25, 75, 75]]"));
  EXPECT_EQ(j["expert_counts_layers"], nlohmann::json::parse("[1, 3]"));
  EXPECT_EQ(j["expert_counts_steps"], 2);
  r.reset();
  EXPECT_EQ(r.steps(), 0);
  r.add(loads({0, 0, 0, 8, 1, 0, 0, 0}, 2, 4));
  EXPECT_EQ(r.lines(1), (std::vector<std::string>{"top experts L1: 3:100%", "top experts L3: 0:100%"}));
}

TEST(ExpertReport, NoMoELayersNoLines) {
  ExpertReport r({});
  r.add(Tensor::empty({0, 0}));
  EXPECT_TRUE(r.lines().empty());
}
