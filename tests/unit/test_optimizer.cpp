// The optimizer numerics against values derived by hand: AdamW one and two
// steps on a scalar, decoupled weight decay, SGD with momentum, global-norm
// clipping and the warm-up + cosine schedule.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/comm/self_communicator.hpp"
#include "switchyard/runtime/error.hpp"
#include "switchyard/train/optimizer.hpp"

namespace {

using namespace switchyard;
using namespace switchyard::train;

using comm::SelfCommunicator;

Parameter scalar(float value, std::vector<std::int64_t> shape = {1}) {
  return Parameter("p", std::move(shape), {value}, true);
}

OptimizerConfig adamw(double lr) {
  return OptimizerConfig{.kind = OptimizerKind::kAdamW, .lr = lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

TEST(AdamW, OneStepOnAScalarMovesByLrTimesSign) {
  // m1 = 0.1 g, v1 = 0.001 g²; bias-corrected m̂ = g, v̂ = g², so the step is
  // lr * g / (|g| + eps) = 0.1 * 0.5 / 0.50000001: p1 = 1 - 0.1 + 2e-9.
  Parameter p = scalar(1.0f);
  Optimizer opt(adamw(0.1), {&p});
  p.grad = {0.5f};
  opt.step(0.1);
  EXPECT_EQ(opt.num_steps(), 1);
  EXPECT_NEAR(p.value[0], 0.900000002, 1e-7);
  EXPECT_FLOAT_EQ((*opt.slots()[0].values)[0][0], 0.05f);     // exp_avg
  EXPECT_FLOAT_EQ((*opt.slots()[1].values)[0][0], 0.00025f);  // exp_avg_sq
}

TEST(AdamW, TwoStepsOnAScalarUseBiasCorrection) {
  // Step 2 with g = -0.25: m2 = 0.9·0.05 - 0.1·0.25 = 0.02,
  // v2 = 0.999·0.00025 + 0.001·0.0625 = 0.00031225; m̂ = 0.02 / 0.19 = 2/19,
  // v̂ = 0.00031225 / 0.001999 = 0.1562031; step = 0.1 · (2/19) / 0.3952254
  // = 0.0266337: p2 = 0.900000002 - 0.0266337 = 0.8733663.
  Parameter p = scalar(1.0f);
  Optimizer opt(adamw(0.1), {&p});
  p.grad = {0.5f};
  opt.step(0.1);
  p.grad = {-0.25f};
  opt.step(0.1);
  EXPECT_NEAR(p.value[0], 0.8733663, 1e-6);
  EXPECT_NEAR((*opt.slots()[0].values)[0][0], 0.02, 1e-8);
  EXPECT_NEAR((*opt.slots()[1].values)[0][0], 0.00031225, 1e-10);
}

TEST(AdamW, WeightDecayIsDecoupledAndSkipsVectors) {
  // With g = 0 the Adam step is 0 / (0 + eps) = 0, leaving only the decay:
  // p -= lr · wd · p = 2 - 0.5 · 0.1 · 2 = 1.9 for a matrix; a vector (norm
  // gain, bias) is not decayed.
  Parameter matrix = scalar(2.0f, {1, 1}), vector = scalar(2.0f, {1});
  OptimizerConfig c = adamw(0.5);
  c.weight_decay = 0.1;
  Optimizer opt(c, {&matrix, &vector});
  opt.step(0.5);
  EXPECT_FLOAT_EQ(matrix.value[0], 1.9f);
  EXPECT_FLOAT_EQ(vector.value[0], 2.0f);
}

TEST(Sgd, MomentumAccumulatesGradients) {
  // buf = 0.9 buf + g; p -= 0.1 buf. g = 1, 1, 0: buf = 1, 1.9, 1.71;
  // p = 0.9, 0.71, 0.539.
  Parameter p = scalar(1.0f);
  Optimizer opt(OptimizerConfig{.kind = OptimizerKind::kSgd, .lr = 0.1, .momentum = 0.9}, {&p});
  const float grads[] = {1.0f, 1.0f, 0.0f};
  const double expected[] = {0.9, 0.71, 0.539};
  for (int i = 0; i < 3; ++i) {
    p.grad = {grads[i]};
    opt.step(0.1);
    EXPECT_NEAR(p.value[0], expected[i], 1e-6) << "step " << i + 1;
  }
  EXPECT_EQ(opt.slots().size(), 1u);
  EXPECT_NEAR((*opt.slots()[0].values)[0][0], 1.71, 1e-6);
}

TEST(Sgd, WeightDecayIsL2OnMatrices) {
  // g_eff = g + wd · p = 0 + 0.5 · 2 = 1; p = 2 - 0.1 · 1 = 1.9.
  Parameter p = scalar(2.0f, {1, 1});
  Optimizer opt(OptimizerConfig{.kind = OptimizerKind::kSgd, .lr = 0.1, .momentum = 0.9, .weight_decay = 0.5}, {&p});
  opt.step(0.1);
  EXPECT_FLOAT_EQ(p.value[0], 1.9f);
}

TEST(Clipping, GlobalNormCountsEveryParameterOnce) {
  // Gradients (3, 4) and (12): norm sqrt(9 + 16 + 144) = 13.
  SelfCommunicator comm;
  Parameter a("a", {2}, {0.0f, 0.0f}, true), b("b", {1}, {0.0f}, false);
  a.grad = {3.0f, 4.0f};
  b.grad = {12.0f};
  const std::vector<Parameter*> params = {&a, &b};
  const double norm = global_grad_norm(comm, params);
  EXPECT_DOUBLE_EQ(norm, 13.0);
  // Under the limit: untouched.
  EXPECT_EQ(clip_grads(params, norm, 13.0), 1.0);
  EXPECT_EQ(a.grad[0], 3.0f);
  // Over it: scaled by 1.3 / (13 + 1e-6), so the new norm is 1.3 (to 1e-7).
  const double f = clip_grads(params, norm, 1.3);
  EXPECT_NEAR(f, 0.1, 1e-8);
  EXPECT_NEAR(a.grad[0], 0.3, 1e-6);
  EXPECT_NEAR(a.grad[1], 0.4, 1e-6);
  EXPECT_NEAR(b.grad[0], 1.2, 1e-6);
  EXPECT_NEAR(global_grad_norm(comm, params), 1.3, 1e-6);
  // max_norm 0 disables clipping.
  EXPECT_EQ(clip_grads(params, 100.0, 0.0), 1.0);
}

TEST(Schedule, LinearWarmupThenCosineToMinLr) {
  // lr 1, min 0.1, 4 warm-up steps, 15 steps: warm-up 0.25, 0.5, 0.75, 1; the
  // cosine runs over steps 4..14 (10 intervals): step 9 is half way,
  // 0.1 + 0.45 · (1 + cos(π/2)) = 0.55; step 14 and later give min_lr.
  OptimizerConfig c{.lr = 1.0, .min_lr = 0.1, .warmup_steps = 4, .total_steps = 15};
  EXPECT_DOUBLE_EQ(learning_rate(c, 0), 0.25);
  EXPECT_DOUBLE_EQ(learning_rate(c, 1), 0.5);
  EXPECT_DOUBLE_EQ(learning_rate(c, 3), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(c, 4), 1.0);
  EXPECT_NEAR(learning_rate(c, 9), 0.55, 1e-12);
  // Step 6 is 2 of 10 intervals in: 0.1 + 0.45 · (1 + cos(0.2π)).
  EXPECT_NEAR(learning_rate(c, 6), 0.1 + 0.45 * (1 + std::cos(M_PI * 0.2)), 1e-12);
  EXPECT_NEAR(learning_rate(c, 14), 0.1, 1e-12);
  EXPECT_NEAR(learning_rate(c, 100), 0.1, 1e-12);
  // No warm-up: the first step already has the peak rate.
  c.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0), 1.0);
  // The rate never rises after warm-up.
  c.warmup_steps = 4;
  for (int s = 4; s < 20; ++s) EXPECT_LE(learning_rate(c, s + 1), learning_rate(c, s) + 1e-15);
}

}  // namespace
