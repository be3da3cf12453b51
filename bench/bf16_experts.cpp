// bf16_experts: one expert's training passes, the float32 backend beside the
// bf16 training backend (ExpertBackendOptions{.weight_type = kBF16}), each
// through the ExpertBackend interface the MoE layer calls.
//
//   forward           y = down(act(gate·x) ⊙ up·x)      6·rows·H·I flop
//   backward_data     dL/dx                              6·rows·H·I flop
//   backward_weights  dL/dW (gate_up and down)           6·rows·H·I flop
//
// The bf16 forward includes rebuilding the bf16 weight copy from the float32
// master weights (it runs at every forward); `weight_refresh` times that
// conversion alone, and `gated activation` the float32 element-wise part
// both backends share. Beside them, the same-run limit: one prepacked oneDNN
// GEMM (kernels::PackedLinear, rows × H → 2I) per dtype, and the same shape
// as the bf16 backend runs it (kernels::Bf16Linear, plain weights). Error
// columns are ||bf16 - f32|| / ||f32|| over y, dL/dx and each weight gradient.
// Each time is the median of --repeats runs after --warmup runs.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "switchyard/formats/random_checkpoint.hpp"
#include "switchyard/kernels/bf16_matmul.hpp"
#include "switchyard/kernels/number_conversion.hpp"
#include "switchyard/kernels/packed_linear.hpp"
#include "switchyard/layers/experts.hpp"

namespace {

using namespace switchyard;

struct Options {
  std::int64_t hidden = 1024, ffn = 2048, rows = 2048;
  int repeats = 5, warmup = 1;
  std::string json;
};

struct Timing {
  double median_ms = 0, min_ms = 0, max_ms = 0;
};

Timing time_ms(const Options& o, const std::function<void()>& fn) {
  for (int i = 0; i < o.warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < o.repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    diff += double(got[i] - want[i]) * double(got[i] - want[i]);
    norm += double(want[i]) * double(want[i]);
  }
  return std::sqrt(diff / norm);
}

// Everything one expert backend produces and how long it took.
struct Run {
  Timing forward, backward_data, backward_weights;
  std::vector<float> y, grad_x;
  std::vector<std::vector<float>> grad_w;  // gate_up, down
};

Run run_backend(const Options& o, kernels::WeightType type, const std::vector<float>& x, const std::vector<float>& g) {
  const std::int64_t H = o.hidden, I = o.ffn, n = o.rows;
  const float gate_up_scale = 1.0f / std::sqrt(float(H)), down_scale = 1.0f / std::sqrt(float(I));
  std::vector<layers::MlpWeights> weights = {
      {H, I, formats::random_matrix(2 * I, H, 11, gate_up_scale), formats::random_matrix(H, I, 12, down_scale)}};
  auto experts = layers::make_expert_backend({.weight_type = type}, std::move(weights), std::vector<std::int64_t>{0},
                                             kernels::Activation::kSilu);
  const std::int64_t counts[] = {n};
  Run r;
  r.y.resize(n * H);
  r.grad_x.resize(n * H);
  std::vector<float> saved(n * experts->saved_per_row()), grad_saved(n * experts->grad_saved_per_row());
  r.forward = time_ms(o, [&] { experts->forward(x.data(), counts, r.y.data(), saved.data()); });
  r.backward_data = time_ms(
      o, [&] { experts->backward_data(x.data(), counts, saved.data(), g.data(), r.grad_x.data(), grad_saved.data()); });
  auto params = experts->parameters();
  r.backward_weights =
      time_ms(o, [&] { experts->backward_weights(x.data(), counts, saved.data(), g.data(), grad_saved.data()); });
  for (auto* p : params) p->zero_grad();  // then one pass's gradients, for the error columns
  experts->backward_weights(x.data(), counts, saved.data(), g.data(), grad_saved.data());
  for (auto* p : params) r.grad_w.push_back(p->grad);
  return r;
}

double gflops(double flop, const Timing& t) { return flop / (t.median_ms * 1e6); }

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app("One expert's forward and backward: float32 beside bf16 training experts");
  app.add_option("--hidden", o.hidden, "Hidden size H")->check(CLI::PositiveNumber);
  app.add_option("--ffn", o.ffn, "Expert width I")->check(CLI::PositiveNumber);
  app.add_option("--rows", o.rows, "Rows (tokens) the expert gets")->check(CLI::PositiveNumber);
  app.add_option("--repeats", o.repeats, "Timed runs per pass (the median is reported)")->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "Untimed runs before them")->check(CLI::NonNegativeNumber);
  app.add_option("--json", o.json, "Append one JSON line with every figure to this file");
  CLI11_PARSE(app, argc, argv);

  const std::int64_t H = o.hidden, I = o.ffn, n = o.rows;
  const auto x = formats::random_matrix(n, H, 1), g = formats::random_matrix(n, H, 2);
  const Run f32 = run_backend(o, kernels::WeightType::kF32, x, g);
  const Run bf16 = run_backend(o, kernels::WeightType::kBF16, x, g);

  // Same-run limits: one prepacked GEMM of the gate_up shape per dtype, and
  // the bf16 weight refresh alone.
  const auto w = formats::random_matrix(2 * I, H, 13);
  auto peak = [&](kernels::WeightType type) {
    kernels::PackedLinear linear(w.data(), 2 * I, H, type);
    std::vector<float> y(n * 2 * I);
    return gflops(2.0 * n * H * 2 * I, time_ms(o, [&] { linear.run(x.data(), n, y.data()); }));
  };
  const double peak_f32 = peak(kernels::WeightType::kF32), peak_bf16 = peak(kernels::WeightType::kBF16);
  std::vector<std::uint16_t> w_bf16(3 * H * I);
  const auto master = formats::random_matrix(3 * I, H, 14);
  const Timing refresh = time_ms(o, [&] { kernels::convert_to_bf16(master.data(), 3 * H * I, w_bf16.data()); });
  // The same GEMM as the bf16 backend runs it: plain bf16 weights, bf16 x.
  const double plain_bf16 = [&] {
    kernels::Bf16Linear linear(w_bf16.data(), 2 * I, H);
    std::vector<std::uint16_t> x_bf16(n * H);
    kernels::convert_to_bf16(x.data(), n * H, x_bf16.data());
    std::vector<float> y(n * 2 * I);
    return gflops(2.0 * n * H * 2 * I, time_ms(o, [&] { linear.run(x_bf16.data(), n, y.data()); }));
  }();

  // The element-wise part both backends share (float32 gated activation).
  const auto gate_up = formats::random_matrix(n, 2 * I, 15);
  std::vector<float> h(n * I), grad_gate_up(n * 2 * I);
  const Timing act_forward =
      time_ms(o, [&] { kernels::gated_activation(kernels::Activation::kSilu, gate_up.data(), n, I, h.data()); });
  const Timing act_backward = time_ms(o, [&] {
    kernels::gated_activation_backward(kernels::Activation::kSilu, gate_up.data(), h.data(), n, I, grad_gate_up.data());
  });

  const double flop = 6.0 * n * H * I;
  auto total = [](const Timing& a, const Timing& b) { return Timing{a.median_ms + b.median_ms, 0, 0}; };
  const Timing f32_backward = total(f32.backward_data, f32.backward_weights);
  const Timing bf16_backward = total(bf16.backward_data, bf16.backward_weights);
  std::printf("# one expert: H %lld, I %lld, %lld rows, silu; median of %d (min-max)\n", (long long)H, (long long)I,
              (long long)n, o.repeats);
  std::printf("%-17s %-26s %-26s %s\n", "pass", "f32 ms (GFLOP/s)", "bf16 ms (GFLOP/s)", "bf16 speed-up");
  auto row = [&](const char* name, const Timing& a, const Timing& b, double flops) {
    std::printf("%-17s %7.2f (%6.2f-%6.2f) %4.0f  %7.2f (%6.2f-%6.2f) %4.0f  %.2fx\n", name, a.median_ms, a.min_ms,
                a.max_ms, gflops(flops, a), b.median_ms, b.min_ms, b.max_ms, gflops(flops, b),
                a.median_ms / b.median_ms);
  };
  row("forward", f32.forward, bf16.forward, flop);
  row("backward_data", f32.backward_data, bf16.backward_data, flop);
  row("backward_weights", f32.backward_weights, bf16.backward_weights, flop);
  std::printf("%-17s %7.2f %21.0f  %7.2f %21.0f  %.2fx\n", "backward (both)", f32_backward.median_ms,
              gflops(2 * flop, f32_backward), bf16_backward.median_ms, gflops(2 * flop, bf16_backward),
              f32_backward.median_ms / bf16_backward.median_ms);
  const double f32_step = f32.forward.median_ms + f32_backward.median_ms;
  const double bf16_step = bf16.forward.median_ms + bf16_backward.median_ms;
  std::printf("%-17s %7.2f %21.0f  %7.2f %21.0f  %.2fx\n", "forward+backward", f32_step, 3 * flop / (f32_step * 1e6),
              bf16_step, 3 * flop / (bf16_step * 1e6), f32_step / bf16_step);
  std::printf(
      "same-run GEMM peak (prepacked, %lld x %lld -> %lld): f32 %.0f GFLOP/s, bf16 %.0f GFLOP/s; "
      "bf16 on plain weights (Bf16Linear) %.0f GFLOP/s\n",
      (long long)n, (long long)H, (long long)(2 * I), peak_f32, peak_bf16, plain_bf16);
  std::printf("bf16 weight refresh (%lld floats -> bf16): %.2f ms, %.1f%% of the bf16 forward\n",
              (long long)(3 * H * I), refresh.median_ms, 100.0 * refresh.median_ms / bf16.forward.median_ms);
  std::printf("gated activation (float32 in both): forward %.2f ms, backward %.2f ms\n", act_forward.median_ms,
              act_backward.median_ms);
  const double err_y = rel_error(bf16.y, f32.y), err_x = rel_error(bf16.grad_x, f32.grad_x);
  const double err_gu = rel_error(bf16.grad_w[0], f32.grad_w[0]), err_d = rel_error(bf16.grad_w[1], f32.grad_w[1]);
  std::printf("bf16 vs f32, ||bf16 - f32|| / ||f32||: y %.2e, dL/dx %.2e, dL/d(gate_up) %.2e, dL/d(down) %.2e\n", err_y,
              err_x, err_gu, err_d);

  if (!o.json.empty()) {
    nlohmann::json j = {
        {"bench", "bf16_experts"},
        {"hidden", H},
        {"ffn", I},
        {"rows", n},
        {"repeats", o.repeats},
        {"f32_ms", {f32.forward.median_ms, f32.backward_data.median_ms, f32.backward_weights.median_ms}},
        {"bf16_ms", {bf16.forward.median_ms, bf16.backward_data.median_ms, bf16.backward_weights.median_ms}},
        {"passes", {"forward", "backward_data", "backward_weights"}},
        {"gemm_peak_gflops", {{"f32", peak_f32}, {"bf16", peak_bf16}, {"bf16_plain_weights", plain_bf16}}},
        {"weight_refresh_ms", refresh.median_ms},
        {"activation_ms", {act_forward.median_ms, act_backward.median_ms}},
        {"rel_error", {{"y", err_y}, {"grad_x", err_x}, {"grad_gate_up", err_gu}, {"grad_down", err_d}}}};
    std::ofstream(o.json, std::ios::app) << j.dump() << "\n";
  }
  return 0;
}
