#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "cli_runner.hpp"
#include "commands.hpp"
#include "layer_grads.hpp"
#include "switchyard/comm/gather.hpp"
#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/layers/moe_layer.hpp"
#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/npy.hpp"
#include "switchyard/runtime/partition.hpp"
#include "switchyard/runtime/phase_timer.hpp"

namespace switchyard::launch {
namespace fs = std::filesystem;

void add_forward_options(CLI::App& sub, ForwardOptions* o) {
  sub.add_option("--model", o->model_dir, "Checkpoint directory (config.json + safetensors)")->required();
  sub.add_option("--layer", o->layer, "Decoder layer index of the MoE block")->required();
  sub.add_option("--input", o->input, "Input hidden states, float32 .npy [tokens, hidden]")->required();
  sub.add_option("--output", o->output, "Output .npy, written by rank 0")->required();
  sub.add_option("--capacity-factor", o->capacity_factor, "Expert capacity factor; 0 (default) is dropless")
      ->check(CLI::Range(0.0, 1e6));
  sub.add_option("--grad-output", o->grad_output, "dL/dy, float32 .npy [tokens, hidden]: also run the backward");
  sub.add_option("--grads", o->grads,
                 "Write dL/dx (as 'hidden_states') and every parameter gradient, under checkpoint names, "
                 "to this safetensors file (rank 0)");
  sub.add_option("--aux-loss-coef", o->aux_loss_coef, "Load-balancing loss coefficient in the backward")
      ->check(CLI::Range(0.0, 1e6));
  sub.add_option("--z-loss-coef", o->z_loss_coef, "Router z-loss coefficient in the backward")
      ->check(CLI::Range(0.0, 1e6));
  sub.add_option(
         "--dtype", o->dtype,
         "Expert GEMMs: f32, or bf16 (bf16 operands, float32 accumulation; prepacked bf16 weights for inference, "
         "float32 master weights with --grads)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  sub.add_flag("--quiet", o->quiet, "Print no summary");
  add_schedule_options(sub, &o->schedule);
}

namespace {

void print_summary(const ForwardOptions& o, const formats::ModelConfig& config, const formats::MoeTensorNames& names,
                   const layers::ExpertPlacement& placement, const layers::ForwardStats& stats,
                   const std::vector<PhaseTimer::Entry>& phases) {
  std::printf(
      "switchyard forward: %s layer %lld (%s layout), %d rank%s, %lld tokens, hidden %lld, top-%lld of %lld experts\n",
      formats::architecture_name(config.arch), static_cast<long long>(o.layer),
      names.layout == formats::ExpertLayout::kFused ? "fused" : "per-expert", placement.num_ranks(),
      placement.num_ranks() == 1 ? "" : "s", static_cast<long long>(stats.num_tokens),
      static_cast<long long>(config.hidden_size), static_cast<long long>(config.top_k),
      static_cast<long long>(config.num_experts));
  std::printf("  experts per rank:");
  for (int r = 0; r < placement.num_ranks(); ++r)
    std::printf(" r%d=%lld", r, static_cast<long long>(placement.num_local(r)));
  std::printf("\n  load per expert: ");
  const auto& load = stats.expert_load;
  for (std::size_t e = 0; e < load.size(); ++e) std::printf(" e%zu=%lld", e, static_cast<long long>(load[e]));
  const double total = static_cast<double>(std::accumulate(load.begin(), load.end(), std::int64_t{0}));
  const double mean = total / static_cast<double>(load.size());
  const double mx = static_cast<double>(*std::max_element(load.begin(), load.end()));
  std::printf("\n  imbalance (max/mean load): %.2f   dropped slots: %lld\n", mean > 0 ? mx / mean : 0.0,
              static_cast<long long>(stats.num_dropped));
  std::printf("  time per phase (ms, slowest rank):");
  double sum = 0;
  for (auto& p : phases) {
    std::printf(" %s %.3f", p.phase.c_str(), p.seconds * 1e3);
    sum += p.seconds;
  }
  std::printf("  | total %.3f\n", sum * 1e3);
  std::printf("  wrote %s\n", o.output.c_str());
}

}  // namespace

void run_forward(const ForwardOptions& o, comm::Communicator& comm) {
  const int R = comm.size(), me = comm.rank();
  PhaseTimer load_timer;
  formats::ModelConfig config;
  std::unique_ptr<layers::ExpertPlacement> placement;
  std::unique_ptr<NpyMatrix> input, grad_output;
  collective_step(comm, [&] {
    check_arg(o.grad_output.empty() == o.grads.empty(), "--grad-output and --grads go together: give both or neither");
    check_schedule_options(o.schedule);
    config = formats::load_model_config(o.model_dir);
    with_flag("--layer", [&] { formats::check_moe_layer(config, o.layer); });
    placement = std::make_unique<layers::ExpertPlacement>(config.num_experts, R);
    check_output_dir("--output", o.output);
    input = std::make_unique<NpyMatrix>(o.input);
    check_arg(input->cols() == config.hidden_size,
              o.input + ": expected shape [tokens, " + std::to_string(config.hidden_size) + "] (hidden_size), got [" +
                  std::to_string(input->rows()) + ", " + std::to_string(input->cols()) + "]");
    if (!o.grads.empty()) {
      check_output_dir("--grads", o.grads);
      grad_output = std::make_unique<NpyMatrix>(o.grad_output);
      check_arg(grad_output->rows() == input->rows() && grad_output->cols() == input->cols(),
                o.grad_output + ": expected shape [" + std::to_string(input->rows()) + ", " +
                    std::to_string(input->cols()) + "] (the input's), got [" + std::to_string(grad_output->rows()) +
                    ", " + std::to_string(grad_output->cols()) + "]");
    }
  });

  std::unique_ptr<formats::Checkpoint> ckpt;
  std::unique_ptr<layers::MoeLayer> layer;
  formats::MoeTensorNames names;
  collective_step(comm, [&] {
    ckpt = std::make_unique<formats::Checkpoint>(o.model_dir);
    names = formats::moe_tensor_names(*ckpt, config, o.layer);
    auto weights =
        formats::load_moe_weights(*ckpt, config, o.layer, placement->first_expert(me), placement->num_local(me));
    layer = std::make_unique<layers::MoeLayer>(
        formats::moe_config(config), std::move(weights), *placement, me,
        layers::MoeLayerOptions{
            .capacity = {o.capacity_factor},
            .experts = {.inference_only = o.grads.empty(),
                        .weight_type = o.dtype == "bf16" ? kernels::WeightType::kBF16 : kernels::WeightType::kF32},
            .aux_loss_coef = o.aux_loss_coef,
            .z_loss_coef = o.z_loss_coef});
  });
  load_timer.mark("load");

  const std::int64_t T = input->rows(), H = config.hidden_size;
  const BlockPartition row_blocks(T, R);  // each rank runs a contiguous block of the input rows
  const std::int64_t begin = row_blocks.first(me), rows = row_blocks.count(me);
  std::unique_ptr<StepRunner> runner;
  collective_step(comm, [&] { runner = std::make_unique<StepRunner>(o.schedule, comm, rows); });
  std::vector<float> y(static_cast<std::size_t>(rows * H));
  layers::ForwardStats stats;
  PhaseTimer timer;
  layers::MoeForwardContext ctx;
  layers::MoeForwardContext* kept = grad_output ? &ctx : nullptr;
  const layers::StepSchedule schedule = runner->schedule();
  collective_step(comm, [&] {
    layer->initialize(comm, {rows, schedule.chunks, kept != nullptr, schedule.wire_bf16}, kept);
    layer->run(comm, {.x = input->data() + begin * H,
                      .num_tokens = rows,
                      .y = y.data(),
                      .context = kept,
                      .stats = &stats,
                      .timer = &timer,
                      .schedule = schedule});
  });

  // Rows to rank 0 in input order: the blocks are contiguous, in rank order.
  const auto gather_rows = [&](const std::vector<float>& mine) { return comm::gather_rows_to_root(comm, mine, 0); };
  const std::vector<float> all = gather_rows(y);

  std::vector<NamedTensor> grads;
  if (grad_output) {
    std::vector<float> dx(y.size());
    collective_step(comm, [&] {
      layer->run(comm, layers::MoeBackwardArguments{.context = &ctx,
                                                    .grad_y = grad_output->data() + begin * H,
                                                    .grad_x = dx.data(),
                                                    .timer = &timer,
                                                    .schedule = schedule});
    });
    collective_step(comm, [&] { grads = collect_layer_gradients(comm, *layer, names); });
    grads.insert(grads.begin(), NamedTensor{"hidden_states", {T, H}, gather_rows(dx)});
  }
  collective_step(comm, [&] { runner->write_outputs(comm, *layer, grad_output != nullptr); });
  collective_step(comm, [&] {
    if (me != 0) return;
    if (!grads.empty()) {
      std::vector<formats::TensorToWrite> views;
      for (auto& g : grads) views.push_back({g.name, g.shape, g.data.data()});
      formats::write_safetensors(o.grads, views, {{"format", "pt"}});
    }
    try {
      write_npy(o.output, all.data(), T, H);
    } catch (...) {
      if (!grads.empty()) fs::remove(o.grads);  // both outputs or neither
      throw;
    }
  });
  timer.mark("write");

  std::vector<PhaseTimer::Entry> phases = load_timer.entries();
  phases.insert(phases.end(), timer.entries().begin(), timer.entries().end());
  std::vector<double> seconds;
  for (auto& p : phases) seconds.push_back(p.seconds);
  comm.allreduce_max(seconds.data(), seconds.size());
  for (std::size_t i = 0; i < phases.size(); ++i) phases[i].seconds = seconds[i];
  if (me == 0 && !o.quiet) print_summary(o, config, names, *placement, stats, phases);
}

}  // namespace switchyard::launch
