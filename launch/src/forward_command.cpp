#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "cli_runner.hpp"
#include "commands.hpp"
#include "layer_grads.hpp"
#include "routing_stats.hpp"
#include "switchyard/comm/gather.hpp"
#include "switchyard/comm/watchdog.hpp"
#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/layers/link_traffic.hpp"
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
  sub.add_option("--json", o->json,
                 "Append one JSON line to this file (rank 0): tokens, phases and the traffic per link class");
  add_router_options(sub, &o->router, /*training=*/false);
  add_schedule_options(sub, &o->schedule);
  add_topology_options(sub, &o->topology);
  add_routing_options(sub, &o->topology_routing);
  add_routing_stats_option(sub, &o->routing_stats);
  add_placement_option(sub, &o->placement);
}

namespace {

// "top-2", or "top-p 0.9 (at most 4)".
std::string router_name(const layers::RouterConfig& router) {
  char buf[64];
  if (router.top_p > 0)
    std::snprintf(buf, sizeof(buf), "top-p %g (at most %lld)", router.top_p, static_cast<long long>(router.top_k));
  else
    std::snprintf(buf, sizeof(buf), "top-%lld", static_cast<long long>(router.top_k));
  return buf;
}

void print_summary(const ForwardOptions& o, const formats::ModelConfig& config, const layers::RouterConfig& router,
                   const formats::MoeTensorNames& names, const layers::ExpertPlacement& placement,
                   const layers::ForwardStats& stats, const std::vector<PhaseTimer::Entry>& phases,
                   const layers::LinkTraffic& traffic) {
  std::printf(
      "switchyard forward: %s layer %lld (%s layout), %d rank%s, %lld tokens, hidden %lld, %s of %lld experts\n",
      formats::architecture_name(config.arch), static_cast<long long>(o.layer),
      names.layout == formats::ExpertLayout::kFused ? "fused" : "per-expert", placement.num_ranks(),
      placement.num_ranks() == 1 ? "" : "s", static_cast<long long>(stats.num_tokens),
      static_cast<long long>(config.hidden_size), router_name(router).c_str(),
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
  if (router.top_p > 0)
    std::printf("  experts per token: %.3f (%.1f%% of top-%lld's expert compute)\n", stats.mean_experts_per_token(),
                100.0 * stats.mean_experts_per_token() / static_cast<double>(router.top_k),
                static_cast<long long>(router.top_k));
  std::printf("  time per phase (ms, slowest rank):");
  double sum = 0;
  for (auto& p : phases) {
    std::printf(" %s %.3f", p.phase.c_str(), p.seconds * 1e3);
    sum += p.seconds;
  }
  std::printf("  | total %.3f\n", sum * 1e3);
  std::printf("  %s\n", routing_summary(o.topology_routing.over()).c_str());
  std::printf("  gate mass kept: %.4f of the %s scores'", stats.gate_mass_kept(), router_name(router).c_str());
  if (o.topology_routing.over().topology_loss > 0) std::printf("; topology loss %.6f", stats.topology_loss);
  std::printf("\n  %s\n", link_traffic_summary(traffic).c_str());
  std::printf("  wrote %s\n", o.output.c_str());
}

// What the checks before any work produce: the model's configuration, where
// its experts live, the input, and dL/dy when the backward runs too.
struct ForwardInputs {
  formats::ModelConfig config;
  std::unique_ptr<layers::ExpertPlacement> placement;
  std::unique_ptr<NpyMatrix> input, grad_output;
};

// Checks the flags, the layer and the shapes of the inputs before any work
// or output starts. Collective.
ForwardInputs read_inputs(const ForwardOptions& o, comm::Communicator& comm) {
  ForwardInputs in;
  collective_step(comm, [&] {
    check_arg(o.grad_output.empty() == o.grads.empty(), "--grad-output and --grads go together: give both or neither");
    check_schedule_options(o.schedule);
    check_output_dir("--json", o.json);
    in.config = formats::load_model_config(o.model_dir);
    with_flag("--layer", [&] { formats::check_moe_layer(in.config, o.layer); });
    in.placement =
        std::make_unique<layers::ExpertPlacement>(placement_of(o.placement, in.config.num_experts, comm.size(), 0));
    check_output_dir("--output", o.output);
    in.input = std::make_unique<NpyMatrix>(o.input);
    const NpyMatrix& input = *in.input;
    check_arg(input.cols() == in.config.hidden_size,
              o.input + ": expected shape [tokens, " + std::to_string(in.config.hidden_size) +
                  "] (hidden_size), got [" + std::to_string(input.rows()) + ", " + std::to_string(input.cols()) + "]");
    if (!o.grads.empty()) {
      check_output_dir("--grads", o.grads);
      in.grad_output = std::make_unique<NpyMatrix>(o.grad_output);
      const NpyMatrix& grad_output = *in.grad_output;
      check_arg(grad_output.rows() == input.rows() && grad_output.cols() == input.cols(),
                o.grad_output + ": expected shape [" + std::to_string(input.rows()) + ", " +
                    std::to_string(input.cols()) + "] (the input's), got [" + std::to_string(grad_output.rows()) +
                    ", " + std::to_string(grad_output.cols()) + "]");
    }
  });
  return in;
}

// The checkpoint stays open as long as the layer built from it.
struct LoadedLayer {
  std::unique_ptr<formats::Checkpoint> ckpt;
  std::unique_ptr<layers::MoeLayer> layer;
  formats::MoeTensorNames names;
  layers::RouterConfig router;  // as the layer routes (--router over the checkpoint's)
};

// Loads this rank's experts of the layer, routed as the routing flags ask on
// `topology`. Collective.
LoadedLayer load_layer(const ForwardOptions& o, const ForwardInputs& in, const comm::Topology& topology,
                       comm::Communicator& comm) {
  LoadedLayer l;
  const int me = comm.rank();
  collective_step(comm, [&] {
    l.ckpt = std::make_unique<formats::Checkpoint>(o.model_dir);
    l.names = formats::moe_tensor_names(*l.ckpt, in.config, o.layer);
    layers::MoeConfig moe = formats::moe_config(in.config);
    apply_router_options(o.router, &moe);
    l.router = moe.router;
    const std::int64_t row_bytes = layers::wire_row_bytes(in.config.hidden_size, o.schedule.wire == "bf16");
    apply_routing_flags(o.topology_routing.over(), *in.placement, topology, o.topology, me, row_bytes, &moe.router);
    auto weights = formats::load_moe_weights(*l.ckpt, in.config, o.layer, in.placement->local_experts(me));
    l.layer = std::make_unique<layers::MoeLayer>(
        moe, std::move(weights), *in.placement, me,
        layers::MoeLayerOptions{
            .capacity = {o.capacity_factor},
            .experts = {.inference_only = o.grads.empty(),
                        .weight_type = o.dtype == "bf16" ? kernels::WeightType::kBF16 : kernels::WeightType::kF32},
            .aux_loss_coef = o.aux_loss_coef,
            .z_loss_coef = o.z_loss_coef,
            .topology_loss_coef = o.topology_routing.over().topology_loss,
            .exchange = layers::exchange_layout(resolve_exchange(o.topology, topology, *in.placement,
                                                                 in.input->rows() / comm.size(), moe.top_k, row_bytes),
                                                topology)});
  });
  return l;
}

// Rank 0 writes --grads (when given) and --output. Collective.
void write_results(const ForwardOptions& o, const std::vector<NamedTensor>& grads, const std::vector<float>& y,
                   std::int64_t T, std::int64_t H, comm::Communicator& comm) {
  collective_step(comm, [&] {
    if (comm.rank() != 0) return;
    if (!grads.empty()) {
      std::vector<formats::TensorToWrite> views;
      for (auto& g : grads) views.push_back({g.name, g.shape, g.data.data()});
      formats::write_safetensors(o.grads, views, {{"format", "pt"}}, /*data_checksum=*/true);
    }
    try {
      write_npy(o.output, y.data(), T, H);
    } catch (...) {
      if (!grads.empty()) fs::remove(o.grads);  // both outputs or neither
      throw;
    }
  });
}

// The load phase, then the step's phases, each as the slowest rank's time.
// Collective.
std::vector<PhaseTimer::Entry> slowest_phases(comm::Communicator& comm, const PhaseTimer& load_timer,
                                              const PhaseTimer& timer) {
  std::vector<PhaseTimer::Entry> phases = load_timer.entries();
  phases.insert(phases.end(), timer.entries().begin(), timer.entries().end());
  std::vector<double> seconds;
  for (auto& p : phases) seconds.push_back(p.seconds);
  comm.allreduce_max(seconds.data(), seconds.size());
  for (std::size_t i = 0; i < phases.size(); ++i) phases[i].seconds = seconds[i];
  return phases;
}

// Rank 0 appends the --json line. Collective (the error is agreed).
void write_json_line(const ForwardOptions& o, comm::Communicator& comm, const layers::RouterConfig& router,
                     const layers::ForwardStats& stats, const std::vector<PhaseTimer::Entry>& phases,
                     const comm::Topology& topology, const layers::LinkTraffic& traffic,
                     layers::ExchangeKind exchange) {
  collective_step(comm, [&] {
    if (comm.rank() != 0 || o.json.empty()) return;
    nlohmann::ordered_json phase_ms = nlohmann::ordered_json::object();
    for (const auto& p : phases) phase_ms[p.phase] = p.seconds * 1e3;
    nlohmann::ordered_json line = {{"ranks", comm.size()},
                                   {"tokens", stats.num_tokens},
                                   {"dropped", stats.num_dropped},
                                   {"expert_load", stats.expert_load},
                                   {"top_k", router.top_k},
                                   {"top_p", o.router.router == "top-p" ? o.router.top_p : 0.0},
                                   {"gate_mass_kept", stats.gate_mass_kept()},
                                   {"topology_loss", stats.topology_loss},
                                   {"passes", o.grads.empty() ? 1 : 2},
                                   {"wire", o.schedule.wire},
                                   {"exchange", exchange_name(exchange)},
                                   {"phase_ms", phase_ms}};
    add_expert_count_fields(line, stats.experts_per_token, router.top_k);
    add_link_traffic_fields(line, topology, traffic);
    add_routing_fields(line, o.topology_routing.over());
    std::ofstream out(o.json, std::ios::app);
    out << line.dump() << "\n";
    check(out.good(), ErrorCode::kIo, o.json + ": cannot append the JSON line");
  });
}

}  // namespace

void run_forward(const ForwardOptions& o, comm::Communicator& comm) {
  comm::set_activity("forward");
  const int R = comm.size(), me = comm.rank();
  // The link costs only for cost-aware routing: otherwise forward reports
  // traffic per link class, and prices nothing.
  const comm::Topology topology = resolve_topology(o.topology, comm, needs_link_costs(o.topology_routing.over()));
  PhaseTimer load_timer;
  const ForwardInputs in = read_inputs(o, comm);
  const LoadedLayer loaded = load_layer(o, in, topology, comm);
  layers::MoeLayer& layer = *loaded.layer;
  load_timer.mark("load");

  const std::int64_t T = in.input->rows(), H = in.config.hidden_size;
  const BlockPartition row_blocks(T, R);  // each rank runs a contiguous block of the input rows
  const std::int64_t begin = row_blocks.first(me), rows = row_blocks.count(me);
  std::unique_ptr<StepRunner> runner;
  collective_step(comm, [&] { runner = std::make_unique<StepRunner>(o.schedule, comm, rows); });
  std::vector<float> y(static_cast<std::size_t>(rows * H));
  layers::ForwardStats stats;
  PhaseTimer timer;
  layers::MoeForwardContext ctx;
  layers::MoeForwardContext* kept = in.grad_output ? &ctx : nullptr;
  const layers::StepSchedule schedule = runner->schedule();
  collective_step(comm, [&] {
    layer.initialize(comm, {rows, schedule.chunks, kept != nullptr, schedule.wire_bf16}, kept);
    layer.run(comm, {.x = in.input->data() + begin * H,
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
  if (in.grad_output) {
    std::vector<float> dx(y.size());
    collective_step(comm, [&] {
      layer.run(comm, layers::MoeBackwardArguments{.context = &ctx,
                                                   .grad_y = in.grad_output->data() + begin * H,
                                                   .grad_x = dx.data(),
                                                   .timer = &timer,
                                                   .schedule = schedule});
    });
    collective_step(comm, [&] { grads = collect_layer_gradients(comm, layer, loaded.names); });
    grads.insert(grads.begin(), NamedTensor{"hidden_states", {T, H}, gather_rows(dx)});
  }
  collective_step(comm, [&] { runner->write_outputs(comm, layer, in.grad_output != nullptr); });
  write_results(o, grads, all, T, H, comm);
  timer.mark("write");

  const std::vector<PhaseTimer::Entry> phases = slowest_phases(comm, load_timer, timer);
  const layers::LinkTraffic traffic = layers::job_link_traffic(
      comm, layer.traffic(kept), topology, layers::wire_row_bytes(H, schedule.wire_bf16), in.grad_output ? 2 : 1);
  RoutingStats routing_stats(o.routing_stats, "forward", 1, in.config.num_experts);
  routing_stats.add(0, layer.traffic(kept));
  routing_stats.end_step();
  routing_stats.write(comm, topology, *in.placement);
  write_json_line(o, comm, loaded.router, stats, phases, topology, traffic, layer.exchange_kind());
  if (me == 0 && !o.quiet)
    print_summary(o, in.config, loaded.router, loaded.names, *in.placement, stats, phases, traffic);
}

}  // namespace switchyard::launch
