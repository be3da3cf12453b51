// The bf16 training experts (ExpertBackendOptions{.weight_type = kBF16}):
// per-row results independent of batching (bit for bit), outputs and every
// gradient against a float64 reference within a bf16 tolerance, and float32
// master weights that behave like the float32 backend's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../support/moe_reference.hpp"
#include "switchyard/formats/random_checkpoint.hpp"
#include "switchyard/kernels/packed_linear.hpp"
#include "switchyard/layers/experts.hpp"

namespace {

using namespace switchyard;
using test_support::Vec;

// Shapes that are not multiples of the kernels' 16/32/64 blocks, so tails run.
constexpr std::int64_t kHidden = 96, kInter = 160;

// Normwise relative error ||got - want|| / ||want|| allowed for bf16 operands
// with float32 accumulation: each operand carries a relative rounding error
// of up to 2^-9 (~2e-3), and a result sees two or three roundings.
// Observed: 3.8e-3 to 4.1e-3 (forward, dL/dx, weight gradients; silu and
// both gelus), 1.6e-3 to 2.3e-3 for relu (on bf16-exact inputs, see below).
// float32 runs the same check at 1e-5 (observed ~4e-7).
constexpr double kBf16Tolerance = 8e-3;
constexpr double kF32Tolerance = 1e-5;

std::vector<layers::MlpWeights> random_experts(std::int64_t count, std::uint64_t seed, std::int64_t hidden = kHidden,
                                               std::int64_t inter = kInter) {
  std::vector<layers::MlpWeights> experts;
  for (std::int64_t e = 0; e < count; ++e) {
    const float gate_up_scale = 2.0f / std::sqrt(float(hidden)), down_scale = 2.0f / std::sqrt(float(inter));
    experts.push_back({hidden, inter, formats::random_matrix(2 * inter, hidden, seed + 2 * e, gate_up_scale),
                       formats::random_matrix(hidden, inter, seed + 2 * e + 1, down_scale)});
  }
  return experts;
}

// Global ids first, first + 1, ... for `count` experts.
std::vector<std::int64_t> ids_from(std::int64_t first, std::size_t count) {
  std::vector<std::int64_t> out;
  for (std::size_t j = 0; j < count; ++j) out.push_back(first + static_cast<std::int64_t>(j));
  return out;
}

std::unique_ptr<layers::ExpertBackend> make_experts(kernels::WeightType type, std::int64_t count, std::uint64_t seed,
                                                    kernels::Activation act = kernels::Activation::kSilu) {
  return layers::make_expert_backend({.inference_only = false, .weight_type = type}, random_experts(count, seed),
                                     ids_from(3, static_cast<std::size_t>(count)), act);
}

// Everything one forward + backward_data produces for a batch of rows.
struct RowResults {
  std::vector<float> out, saved, grad_rows, grad_saved;
};

RowResults run_rows(layers::ExpertBackend& experts, std::int64_t hidden, const float* rows,
                    const std::vector<std::int64_t>& counts, const float* grad_out) {
  std::int64_t n = 0;
  for (auto c : counts) n += c;
  RowResults r;
  r.out.resize(n * hidden);
  r.saved.resize(n * experts.saved_per_row());
  r.grad_rows.resize(n * hidden);
  r.grad_saved.resize(n * experts.grad_saved_per_row());
  experts.forward(rows, counts.data(), r.out.data(), r.saved.data());
  experts.backward_data(rows, counts.data(), r.saved.data(), grad_out, r.grad_rows.data(), r.grad_saved.data());
  return r;
}

// Row `row` of a [n, width] array, as bytes, for exact comparison.
bool same_row(const std::vector<float>& a, std::int64_t a_row, const std::vector<float>& b, std::int64_t b_row,
              std::int64_t width) {
  return std::memcmp(a.data() + a_row * width, b.data() + b_row * width, width * sizeof(float)) == 0;
}

struct Shape {
  std::int64_t hidden, inter;
};

class RowInvariance : public ::testing::TestWithParam<Shape> {};

TEST_P(RowInvariance, RowResultsDoNotDependOnBatching) {
  const auto [H, I] = GetParam();
  auto experts = layers::make_expert_backend({.weight_type = kernels::WeightType::kBF16}, random_experts(2, 11, H, I),
                                             ids_from(0, 2), kernels::Activation::kSilu);
  const std::vector<std::int64_t> counts = {75, 64};
  const std::int64_t n = 139;
  const auto x = formats::random_matrix(n, H, 1), g = formats::random_matrix(n, H, 2);
  const RowResults whole = run_rows(*experts, H, x.data(), counts, g.data());
  const std::int64_t S = experts->saved_per_row(), G = experts->grad_saved_per_row();

  // The same rows again, each expert's in pieces of `piece` rows, so every
  // row runs in a batch of another size and at another position.
  for (std::int64_t piece : {1, 3, 7, 64}) {
    std::int64_t first = 0;
    for (std::size_t j = 0; j < counts.size(); ++j) {
      for (std::int64_t begin = 0; begin < counts[j]; begin += piece) {
        std::vector<std::int64_t> piece_counts(counts.size(), 0);
        piece_counts[j] = std::min(piece, counts[j] - begin);
        const std::int64_t row0 = first + begin;
        const RowResults part = run_rows(*experts, H, x.data() + row0 * H, piece_counts, g.data() + row0 * H);
        for (std::int64_t r = 0; r < piece_counts[j]; ++r) {
          const std::int64_t row = row0 + r;
          ASSERT_TRUE(same_row(whole.out, row, part.out, r, H)) << "output row " << row << ", pieces " << piece;
          ASSERT_TRUE(same_row(whole.saved, row, part.saved, r, S)) << "saved row " << row << ", pieces " << piece;
          ASSERT_TRUE(same_row(whole.grad_rows, row, part.grad_rows, r, H))
              << "dL/dx row " << row << ", pieces " << piece;
          ASSERT_TRUE(same_row(whole.grad_saved, row, part.grad_saved, r, G))
              << "grad_saved row " << row << ", pieces " << piece;
        }
      }
      first += counts[j];
    }
  }
}

// Small shapes with tails past every kernel block, and the benchmark's shape
// (long reductions: K = 1024, 2048 and 4096).
INSTANTIATE_TEST_SUITE_P(Bf16Experts, RowInvariance, ::testing::Values(Shape{kHidden, kInter}, Shape{1024, 2048}),
                         [](const auto& info) {
                           // NOTE: appended, not `"h" + ...`, which trips GCC 12's -Wrestrict.
                           std::string name = "h";
                           name += std::to_string(info.param.hidden) + "_i" + std::to_string(info.param.inter);
                           return name;
                         });

// ---- float64 reference of one expert, with analytic gradients ------------

double act_slope(const std::string& act, double x) {
  if (act == "silu") {
    const double s = 1.0 / (1.0 + std::exp(-x));
    return s * (1.0 + x * (1.0 - s));
  }
  if (act == "gelu")
    return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
  if (act == "relu") return x > 0 ? 1.0 : 0.0;
  const double c = std::sqrt(2.0 / M_PI), k = 0.044715, t = std::tanh(c * (x + k * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * k * x * x);
}

// y = down · (act(gate · x) ⊙ (up · x)) per row, and for L = Σ g ⊙ y the
// gradients dL/dx and dL/dW (gate_up as [2I, H], down as [H, I]).
struct RefExpert {
  Vec y, grad_x, grad_gate_up, grad_down;
};

RefExpert ref_expert(const layers::MlpWeights& w, const std::string& act, const float* x, const float* g,
                     std::int64_t rows) {
  const std::int64_t H = w.hidden, I = w.inter;
  const float *Wg = w.gate_up.data(), *Wu = Wg + I * H, *Wd = w.down.data();
  RefExpert r{Vec(rows * H, 0.0), Vec(rows * H, 0.0), Vec(2 * I * H, 0.0), Vec(H * I, 0.0)};
  for (std::int64_t t = 0; t < rows; ++t) {
    const float *xt = x + t * H, *gt = g + t * H;
    Vec gate(I, 0.0), up(I, 0.0), h(I), grad_h(I, 0.0);
    for (std::int64_t i = 0; i < I; ++i)
      for (std::int64_t c = 0; c < H; ++c) {
        gate[i] += double(Wg[i * H + c]) * xt[c];
        up[i] += double(Wu[i * H + c]) * xt[c];
      }
    for (std::int64_t i = 0; i < I; ++i) h[i] = test_support::ref_act(act, gate[i]) * up[i];
    for (std::int64_t c = 0; c < H; ++c)
      for (std::int64_t i = 0; i < I; ++i) {
        r.y[t * H + c] += double(Wd[c * I + i]) * h[i];
        grad_h[i] += double(Wd[c * I + i]) * gt[c];
        r.grad_down[c * I + i] += double(gt[c]) * h[i];
      }
    for (std::int64_t i = 0; i < I; ++i) {
      const double grad_gate = grad_h[i] * up[i] * act_slope(act, gate[i]);
      const double grad_up = grad_h[i] * test_support::ref_act(act, gate[i]);
      for (std::int64_t c = 0; c < H; ++c) {
        r.grad_x[t * H + c] += grad_gate * Wg[i * H + c] + grad_up * Wu[i * H + c];
        r.grad_gate_up[i * H + c] += grad_gate * xt[c];
        r.grad_gate_up[(I + i) * H + c] += grad_up * xt[c];
      }
    }
  }
  return r;
}

// ||got - want|| / ||want||; `want` must not be all zeros.
double rel_error(const float* got, const Vec& want) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  EXPECT_GT(norm, 1e-12) << "reference is all zeros: the comparison would be vacuous";
  return std::sqrt(diff / norm);
}

TEST(Bf16Experts, ReferenceGradientsMatchFiniteDifferences) {
  // The analytic float64 gradients above, checked once on a tiny expert.
  layers::MlpWeights w{3, 2, formats::random_matrix(4, 3, 5), formats::random_matrix(3, 2, 6)};
  const auto x = formats::random_matrix(2, 3, 7), g = formats::random_matrix(2, 3, 8);
  for (const char* act : {"silu", "gelu", "gelu_tanh", "relu"}) {
    const RefExpert r = ref_expert(w, act, x.data(), g.data(), 2);
    auto loss = [&](const layers::MlpWeights& ww, const std::vector<float>& xx) {
      const RefExpert e = ref_expert(ww, act, xx.data(), g.data(), 2);
      double l = 0;
      for (std::size_t i = 0; i < e.y.size(); ++i) l += g[i] * e.y[i];
      return l;
    };
    // float32 storage limits the step: h = 1e-3 gives ~1e-6 agreement.
    auto check = [&](std::vector<float>* v, const Vec& want, const char* what) {
      for (std::size_t i = 0; i < v->size(); ++i) {
        const float keep = (*v)[i];
        (*v)[i] = keep + 1e-3f;
        const double up = loss(w, x);
        (*v)[i] = keep - 1e-3f;
        const double down = loss(w, x);
        (*v)[i] = keep;
        const double fd = (up - down) / (double((keep + 1e-3f)) - double(keep - 1e-3f));
        EXPECT_NEAR(fd, want[i], 1e-4) << what << "[" << i << "], " << act;
      }
    };
    check(&w.gate_up, r.grad_gate_up, "gate_up");
    check(&w.down, r.grad_down, "down");
    std::vector<float> xx = x;
    for (std::size_t i = 0; i < xx.size(); ++i) {
      const float keep = xx[i];
      xx[i] = keep + 1e-3f;
      const double up = loss(w, xx);
      xx[i] = keep - 1e-3f;
      const double down = loss(w, xx);
      xx[i] = keep;
      EXPECT_NEAR((up - down) / (double(keep + 1e-3f) - double(keep - 1e-3f)), r.grad_x[i], 1e-4) << "x, " << act;
    }
  }
}

struct AccuracyCase {
  kernels::WeightType type;
  std::string act;
};

class ExpertAccuracy : public ::testing::TestWithParam<AccuracyCase> {};

// x rounded to bf16 and back: values a bf16 kernel takes without rounding.
void round_to_bf16(std::vector<float>* x) {
  std::vector<std::uint16_t> bits(x->size());
  kernels::convert_to_bf16(x->data(), static_cast<std::int64_t>(x->size()), bits.data());
  for (std::size_t i = 0; i < x->size(); ++i) {
    const std::uint32_t f = std::uint32_t(bits[i]) << 16;
    std::memcpy(&(*x)[i], &f, sizeof(float));
  }
}

TEST_P(ExpertAccuracy, OutputsAndGradientsMatchFloat64) {
  const auto& c = GetParam();
  kernels::Activation act;
  ASSERT_TRUE(formats::parse_activation(c.act == "gelu_tanh" ? "gelu_pytorch_tanh" : c.act, &act));
  const double tolerance = c.type == kernels::WeightType::kBF16 ? kBf16Tolerance : kF32Tolerance;
  auto weights = random_experts(2, 21);
  const std::vector<std::int64_t> counts = {57, 40};
  const std::int64_t n = 97;
  auto x = formats::random_matrix(n, kHidden, 3), g = formats::random_matrix(n, kHidden, 4);
  if (c.act == "relu") {
    // NOTE: relu' jumps at 0, so a gate that rounding moves across 0 flips
    // its whole gradient term (a 3-5% error against float64 here). With x
    // and W already bf16 values the gates are float32-accurate and only the
    // rounding of h and dL/d(gate_up) remains.
    round_to_bf16(&x);
    for (auto& w : weights) {
      round_to_bf16(&w.gate_up);
      round_to_bf16(&w.down);
    }
  }
  auto experts = layers::make_expert_backend({.weight_type = c.type}, weights, ids_from(3, weights.size()), act);
  std::vector<float> y(n * kHidden), saved(n * experts->saved_per_row()), grad_x(n * kHidden);
  experts->forward(x.data(), counts.data(), y.data(), saved.data());
  std::vector<float> grad_saved(n * experts->grad_saved_per_row());
  experts->backward_data(x.data(), counts.data(), saved.data(), g.data(), grad_x.data(), grad_saved.data());
  experts->backward_weights(x.data(), counts.data(), saved.data(), g.data(), grad_saved.data());

  const auto params = experts->parameters();
  ASSERT_EQ(params.size(), 4u);
  std::int64_t row0 = 0;
  for (std::size_t j = 0; j < counts.size(); ++j) {
    const RefExpert r = ref_expert(weights[j], c.act, x.data() + row0 * kHidden, g.data() + row0 * kHidden, counts[j]);
    const std::string expert = "expert " + std::to_string(j);
    const double e_y = rel_error(y.data() + row0 * kHidden, r.y),
                 e_x = rel_error(grad_x.data() + row0 * kHidden, r.grad_x);
    const double e_gu = rel_error(params[2 * j]->grad.data(), r.grad_gate_up);
    const double e_d = rel_error(params[2 * j + 1]->grad.data(), r.grad_down);
    EXPECT_LE(e_y, tolerance) << "output, " << expert;
    EXPECT_LE(e_x, tolerance) << "dL/dx, " << expert;
    EXPECT_LE(e_gu, tolerance) << "dL/d(gate_up), " << expert;
    EXPECT_LE(e_d, tolerance) << "dL/d(down), " << expert;
    std::printf("%s %s %s: rel errors y %.2e dx %.2e dgate_up %.2e ddown %.2e\n",
                c.type == kernels::WeightType::kBF16 ? "bf16" : "f32", c.act.c_str(), expert.c_str(), e_y, e_x, e_gu,
                e_d);
    row0 += counts[j];
  }

  // Weight gradients add into Parameter::grad: the same backward again
  // doubles them exactly (the same sums, each added once more).
  std::vector<std::vector<float>> once;
  for (auto* p : params) once.push_back(p->grad);
  experts->backward_data(x.data(), counts.data(), saved.data(), g.data(), grad_x.data(), grad_saved.data());
  experts->backward_weights(x.data(), counts.data(), saved.data(), g.data(), grad_saved.data());
  for (std::size_t p = 0; p < params.size(); ++p)
    for (std::size_t i = 0; i < once[p].size(); ++i)
      ASSERT_EQ(params[p]->grad[i], 2.0f * once[p][i]) << params[p]->name << "[" << i << "]";
}

INSTANTIATE_TEST_SUITE_P(Activations, ExpertAccuracy,
                         ::testing::Values(AccuracyCase{kernels::WeightType::kBF16, "silu"},
                                           AccuracyCase{kernels::WeightType::kBF16, "gelu"},
                                           AccuracyCase{kernels::WeightType::kBF16, "gelu_tanh"},
                                           AccuracyCase{kernels::WeightType::kBF16, "relu"},
                                           AccuracyCase{kernels::WeightType::kF32, "silu"}),
                         [](const auto& info) {
                           return std::string(info.param.type == kernels::WeightType::kBF16 ? "bf16_" : "f32_") +
                                  info.param.act;
                         });

TEST(Bf16Experts, ParametersAreTheFloat32BackendsMasterWeights) {
  auto bf16 = make_experts(kernels::WeightType::kBF16, 2, 31), f32 = make_experts(kernels::WeightType::kF32, 2, 31);
  const auto a = bf16->parameters(), b = f32->parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]->name, b[i]->name);
    EXPECT_EQ(a[i]->shape, b[i]->shape);
    EXPECT_EQ(a[i]->value, b[i]->value) << a[i]->name << ": master weights must stay float32, unrounded";
    EXPECT_EQ(a[i]->grad.size(), a[i]->value.size());
    EXPECT_FALSE(a[i]->replicated) << a[i]->name;
  }
  EXPECT_EQ(a[0]->name, "experts.3.gate_up_proj");
  EXPECT_EQ(a[3]->name, "experts.4.down_proj");
}

TEST(Bf16Experts, ForwardSeesInPlaceWeightUpdates) {
  // An optimizer step writes Parameter::value in place between steps.
  auto updated = make_experts(kernels::WeightType::kBF16, 1, 41);
  const std::vector<std::int64_t> counts = {9};
  const auto x = formats::random_matrix(9, kHidden, 5);
  std::vector<float> y(9 * kHidden), saved(9 * updated->saved_per_row());
  updated->forward(x.data(), counts.data(), y.data(), saved.data());
  const std::vector<float> before = y;

  auto weights = random_experts(1, 41);
  for (auto* p : updated->parameters())
    for (auto& v : p->value) v *= 0.75f;
  for (auto& v : weights[0].gate_up) v *= 0.75f;
  for (auto& v : weights[0].down) v *= 0.75f;
  const std::vector<std::int64_t> fresh_ids = ids_from(3, weights.size());
  auto fresh = layers::make_expert_backend({.weight_type = kernels::WeightType::kBF16}, std::move(weights), fresh_ids,
                                           kernels::Activation::kSilu);
  std::vector<float> want(y.size()), want_saved(saved.size());
  fresh->forward(x.data(), counts.data(), want.data(), want_saved.data());
  updated->begin_step();  // what the layer calls before every forward step
  updated->forward(x.data(), counts.data(), y.data(), saved.data());
  EXPECT_NE(y, before);
  EXPECT_EQ(y, want) << "forward must use the updated float32 weights";
}

}  // namespace
