// AdamW and the learning-rate schedules (framework/optimizer.h) against independent references
// written out here in double precision, over a flat buffer as FSDP shards and ParamStores hand it.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "framework/optimizer.h"
#include "framework/threads.h"

using namespace moe;

TEST(LearningRate, WarmupThenCosineLinearConstant) {
  TrainConfig t;
  t.lr = 1e-3; t.min_lr = 1e-4; t.warmup = 10; t.steps = 110;
  t.schedule = "cosine";
  EXPECT_DOUBLE_EQ(learning_rate(t, 0), 1e-4);       // (0+1)/10 of lr
  EXPECT_DOUBLE_EQ(learning_rate(t, 9), 1e-3);       // warmup ends at the peak
  EXPECT_DOUBLE_EQ(learning_rate(t, 10), 1e-3);      // cosine starts at the peak
  EXPECT_NEAR(learning_rate(t, 60), 5.5e-4, 1e-12);  // halfway: (lr + min_lr) / 2
  EXPECT_NEAR(learning_rate(t, 110), 1e-4, 1e-12);   // ends at min_lr
  EXPECT_NEAR(learning_rate(t, 500), 1e-4, 1e-12);   // and stays there
  t.schedule = "linear";
  EXPECT_NEAR(learning_rate(t, 35), 1e-3 - 0.25 * 9e-4, 1e-12);
  t.schedule = "constant";
  EXPECT_DOUBLE_EQ(learning_rate(t, 80), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(t, 4), 5e-4);
}

// WSD: warmup, lr until the last decay_steps steps, then each shape's formula down to min_lr at
// the final step; monotone non-increasing after warmup.
TEST(LearningRate, WarmupStableDecay) {
  TrainConfig t;
  t.lr = 1e-3; t.min_lr = 1e-4; t.warmup = 10; t.steps = 100; t.decay_steps = 20;
  t.schedule = "wsd";
  for (const char* shape : {"linear", "cosine", "sqrt"}) {
    SCOPED_TRACE(shape);
    t.decay_shape = shape;
    EXPECT_DOUBLE_EQ(learning_rate(t, 0), 1e-4);   // warmup as every schedule
    EXPECT_DOUBLE_EQ(learning_rate(t, 9), 1e-3);   // the peak at the end of warmup
    EXPECT_DOUBLE_EQ(learning_rate(t, 10), 1e-3);  // stable phase starts
    EXPECT_DOUBLE_EQ(learning_rate(t, 79), 1e-3);  // and ends just before the last 20 steps
    EXPECT_LT(learning_rate(t, 80), 1e-3);         // the first decay step is below the peak
    EXPECT_NEAR(learning_rate(t, 99), 1e-4, 1e-15);   // the final step trains at min_lr
    EXPECT_NEAR(learning_rate(t, 500), 1e-4, 1e-15);  // and it stays there
    for (int64_t s = 80; s < 100; ++s) {
      const double p = double(s - 80 + 1) / 20.0, span = t.lr - t.min_lr;
      const double want = t.decay_shape == "linear" ? t.lr - span * p
                          : t.decay_shape == "cosine" ? t.min_lr + span * 0.5 * (1 + std::cos(M_PI * p))
                                                      : t.lr - span * std::sqrt(p);
      EXPECT_NEAR(learning_rate(t, s), want, 1e-15) << s;
    }
    for (int64_t s = 10; s < 110; ++s) EXPECT_LE(learning_rate(t, s + 1), learning_rate(t, s)) << s;
  }
  // decay_steps = steps - warmup: no stable phase; 1: only the last step decays.
  t.decay_shape = "linear";
  t.decay_steps = 90;
  EXPECT_NEAR(learning_rate(t, 10), 1e-3 - 9e-4 / 90, 1e-15);
  t.decay_steps = 1;
  EXPECT_DOUBLE_EQ(learning_rate(t, 98), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(t, 99), 1e-4);
  // No warmup: stable from step 0.
  t.warmup = 0;
  EXPECT_DOUBLE_EQ(learning_rate(t, 0), 1e-3);
}

TEST(LearningRate, SameScheduleComparesTheKeysThatShapeTheCurve) {
  TrainConfig a, b;
  EXPECT_TRUE(same_schedule(a, b));
  b.micro_batch = 3;  // not a schedule key
  EXPECT_TRUE(same_schedule(a, b));
  b.steps = a.steps + 1;
  EXPECT_FALSE(same_schedule(a, b));
  b = a;
  b.decay_shape = "sqrt";  // ignored unless wsd
  EXPECT_TRUE(same_schedule(a, b));
  a.schedule = b.schedule = "wsd";
  EXPECT_FALSE(same_schedule(a, b));
}

// Three AdamW steps on a decayed segment (a weight) and an undecayed one (a norm), with an element
// outside every segment (a buffer), against PyTorch's AdamW update written in double:
// w -= lr*wd*w; m,v moments; w -= lr/bc1 * m / (sqrt(v/bc2) + eps).
TEST(AdamW, MatchesReferenceAndTouchesOnlyItsSegments) {
  set_num_threads(1);
  // [0, 3) weight, [3, 5) norm, 5 a buffer
  std::vector<float> w = {0.3f, -0.2f, 0.5f, 1.f, 1.f, 0.f}, g(6);
  TrainConfig t;
  t.beta1 = 0.9; t.beta2 = 0.95; t.eps = 1e-8; t.weight_decay = 0.1;
  AdamW opt(int64_t(w.size()), {{0, 3, /*decay=*/true}, {3, 2, /*decay=*/false}}, t);

  std::vector<double> ref(w.begin(), w.end()), m(5, 0), v(5, 0);
  const double lr = 0.01, scale = 0.5;
  for (int step = 1; step <= 3; ++step) {
    for (int i = 0; i < 3; ++i) g[i] = float(0.1 * (i + 1) * step - 0.2);
    for (int i = 3; i < 5; ++i) g[i] = float(-0.3 * (i - 2));
    g[5] = 5.f;  // must be ignored: outside the segments
    opt.step(w.data(), g.data(), lr, float(scale));
    double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.95, step);
    for (int i = 0; i < 5; ++i) {
      const double grad = double(g[i]) * scale;
      if (i < 3) ref[i] -= lr * 0.1 * ref[i];
      m[i] = 0.9 * m[i] + 0.1 * grad;
      v[i] = 0.95 * v[i] + 0.05 * grad * grad;
      ref[i] -= lr / bc1 * m[i] / (std::sqrt(v[i] / bc2) + 1e-8);
    }
  }
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(w[i], ref[i], 1e-6) << i;
  EXPECT_EQ(w[5], 0.f);
  EXPECT_EQ(opt.steps_taken(), 3);
}

TEST(SumSquares, CoversOnlyTheSegments) {
  std::vector<float> g = {3.f, 100.f, 4.f, 2.f};
  EXPECT_DOUBLE_EQ(sum_squares(g.data(), {{0, 1, true}, {2, 2, false}}), 9.0 + 16.0 + 4.0);
}
