// `moe plan` (launch/plan.h) on its own: the relations its figures must keep whatever the model.
// That its bytes equal what the code sends and holds is checked under mpirun by
// tests/mpi/plan.sh; its time and peak against this machine by bench/plan_check.sh.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "framework/config.h"
#include "framework/error.h"
#include "launch/plan.h"
#include "model/model.h"

namespace moe {
namespace {

Config config(const std::string& name, const std::vector<std::string>& sets = {}) {
  const char* src = std::getenv("MOE_SOURCE_DIR");
  return load_config(std::string(src ? src : ".") + "/configs/" + name, sets);
}

const CommLine& line(const Plan& p, CollectiveKind k) { return p.comm[size_t(k)]; }

TEST(Plan, OneDeviceCommunicatesNothingAndHoldsSixteenBytesPerParameter) {
  const Config cfg = config("tiny.yaml");
  const DeviceSpec dev = device_spec("h100", cfg);
  const Plan p = make_plan(cfg, PlanLayout{1, 8, 1, 1, 4, 1, false}, dev);
  for (const CommLine& c : p.comm) EXPECT_EQ(c.count.calls, 0);
  const ParamCounts pc = count_params(cfg.model);
  EXPECT_EQ(p.params_total, pc.total);
  // Padding to 16 floats per unit and the router's bias buffers: a little above 16 B x params.
  EXPECT_GE(p.state_bytes, 16 * pc.total);
  EXPECT_LT(p.state_bytes, 16 * pc.total + 16 * 64 * 16);
  EXPECT_EQ(p.state_bytes, 16 * p.state_param_elements);
}

TEST(Plan, ShardingDividesTheStateAndHsdpAddsOneShardSizedAllReduce) {
  const Config cfg = config("tiny.yaml");
  const DeviceSpec dev = device_spec("h100", cfg);
  const Plan one = make_plan(cfg, PlanLayout{1, 8, 1, 1, 1, 1, false}, dev);
  const Plan fsdp = make_plan(cfg, PlanLayout{4, 8, 1, 1, 1, 1, false}, dev);
  const Plan hsdp = make_plan(cfg, PlanLayout{4, 8, 2, 1, 1, 1, false}, dev);
  EXPECT_NEAR(double(fsdp.state_bytes) / double(one.state_bytes), 0.25, 0.02);
  EXPECT_NEAR(double(hsdp.state_bytes) / double(one.state_bytes), 0.5, 0.02);
  // Gathered twice per micro-batch, reduce-scattered once.
  EXPECT_EQ(line(fsdp, CollectiveKind::AllGather).count.bytes, 2 * line(fsdp, CollectiveKind::ReduceScatter).count.bytes);
  EXPECT_EQ(line(hsdp, CollectiveKind::AllReduce).count.calls, line(fsdp, CollectiveKind::AllReduce).count.calls + 1);
  EXPECT_EQ(line(hsdp, CollectiveKind::AllReduce).count.bytes - line(fsdp, CollectiveKind::AllReduce).count.bytes,
            hsdp.state_bytes / 4);
  EXPECT_EQ(line(fsdp, CollectiveKind::AllToAllV).count.calls, 0);
  // ep 2: the all-to-all appears, five calls per MoE layer and micro-batch.
  const Plan ep2 = make_plan(cfg, PlanLayout{4, 8, 1, 2, 1, 3, false}, dev);
  EXPECT_EQ(line(ep2, CollectiveKind::AllToAllV).count.calls, 5 * 1 * 3);
}

TEST(Plan, RecomputeTradesActivationsForTime) {
  const Config cfg = config("moe-1b.yaml");
  const DeviceSpec dev = device_spec("h100", cfg);
  const Plan keep = make_plan(cfg, PlanLayout{8, 8, 1, 1, 2, 1, false}, dev);
  const Plan again = make_plan(cfg, PlanLayout{8, 8, 1, 1, 2, 1, true}, dev);
  EXPECT_LT(again.activation_bytes, keep.activation_bytes / 4);
  EXPECT_EQ(again.activation_bytes_no_recompute, keep.activation_bytes);
  EXPECT_GT(again.compute_s, keep.compute_s);
  EXPECT_EQ(keep.peak_bytes, keep.state_bytes + keep.gathered_bytes + keep.lowp_weight_bytes + keep.activation_bytes +
                                 keep.workspace_bytes + keep.comm_buffer_bytes + keep.runtime_bytes);
}

TEST(Plan, CrossingNodesIsSlowerThanStayingInside) {
  const Config cfg = config("moe-1b.yaml");
  const DeviceSpec dev = device_spec("h800", cfg);
  const Plan inside = make_plan(cfg, PlanLayout{16, 8, 2, 1, 1, 1, false}, dev);   // a replica per node
  const Plan across = make_plan(cfg, PlanLayout{16, 8, 1, 1, 1, 1, false}, dev);   // one replica over both
  EXPECT_EQ(line(inside, CollectiveKind::AllGather).inter_bytes, 0);
  EXPECT_GT(line(across, CollectiveKind::AllGather).inter_bytes, 0);
  EXPECT_LT(line(inside, CollectiveKind::AllGather).seconds, line(across, CollectiveKind::AllGather).seconds);
}

TEST(Plan, SearchListsLayoutsThatFitFastestFirst) {
  const Config cfg = config("moe-1b.yaml");
  const DeviceSpec dev = device_spec("h100", cfg);
  const std::vector<Plan> found = search_layouts(cfg, 16, 8, 64, dev, 4);
  ASSERT_EQ(found.size(), 4u);
  for (size_t i = 0; i < found.size(); ++i) {
    EXPECT_TRUE(found[i].fits);
    EXPECT_EQ(int64_t(found[i].layout.micro_batch) * found[i].layout.grad_accum * 16, 64);
    if (i > 0) {
      EXPECT_LE(found[i - 1].step_s, found[i].step_s);
    }
  }
}

TEST(Plan, ImpossibleLayoutsAndDevicesAreNamed) {
  const Config cfg = config("tiny.yaml");
  const DeviceSpec dev = device_spec("h100", cfg);
  EXPECT_THROW(make_plan(cfg, PlanLayout{4, 8, 3, 1, 1, 1, false}, dev), Error);
  EXPECT_THROW(make_plan(cfg, PlanLayout{4, 8, 2, 4, 1, 1, false}, dev), Error);
  EXPECT_THROW(make_plan(cfg, PlanLayout{6, 8, 1, 3, 1, 1, false}, dev), Error);  // 4 experts over ep 3
  try {
    device_spec("a100", cfg);
    FAIL() << "a100 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("h100, h800, h200, b200, cpu"), std::string::npos) << e.what();
  }
}

TEST(Plan, DeepSeekV3On2048H800sFits) {
  const Config cfg = config("deepseek-v3-671b.yaml");
  const DeviceSpec dev = device_spec("h800", cfg);
  const Plan p = make_plan(cfg, PlanLayout{2048, 8, 1, 64, 1, 8, true}, dev);
  EXPECT_EQ(p.params_total, count_params(cfg.model).total);
  EXPECT_TRUE(p.fits);
  EXPECT_EQ(p.tokens_per_step, int64_t(16384) * 4096);
  // Every communication kind but broadcast, and all of it across nodes (groups of 2048 and 64).
  EXPECT_GT(line(p, CollectiveKind::AllToAllV).inter_bytes, 0);
  EXPECT_GT(p.gpu_hours_per_trillion, 1e5);
}

}  // namespace
}  // namespace moe
