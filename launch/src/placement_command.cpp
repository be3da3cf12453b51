// `switchyard placement`: from a routing-statistics file, the contiguous
// placement, the EPLB-style one and the model's one side by side, with the
// modelled figures of each, and the chosen one written as a placement file
// (docs/placement.md). Rank 0 does the work; other ranks only agree on errors.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_runner.hpp"
#include "commands.hpp"
#include "switchyard/comm/topology.hpp"
#include "switchyard/layers/placement_plan.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {

void add_placement_options(CLI::App& sub, PlacementCommandOptions* o) {
  sub.add_option("--stats", o->stats, "Routing statistics (JSON) from forward, bench or train --routing-stats")
      ->required();
  sub.add_option("--replicas", o->replicas, "Extra expert copies in all, beyond one per expert (default 0)");
  sub.add_option("--method", o->method, "The placement written to --out: model (default) or eplb")
      ->check(CLI::IsMember({"model", "eplb"}));
  sub.add_option("--topology", o->topology,
                 "Topology file (switchyard topo --json): link costs per byte from its bandwidths; its nodes must "
                 "match the statistics'");
  sub.add_option("--current", o->current,
                 "Placement file in use now (default: the statistics' expert owners); migration counts against it");
  sub.add_option("--out", o->out, "Write the chosen placement here (JSON)");
  sub.add_flag("--json", o->json, "Print the figures as one JSON object instead of the table");
  sub.add_option("--hidden", o->hidden, "Model width: a row on the wire is hidden x dtype-bytes (default 1024)");
  sub.add_option("--ffn", o->ffn, "Expert FFN width: an expert is 3 x hidden x ffn x dtype-bytes (default 2048)");
  sub.add_option("--dtype-bytes", o->dtype_bytes, "Bytes per value of rows and weights (default 4)");
  sub.add_option("--row-seconds", o->row_seconds,
                 "Seconds of one expert row (default: 6 x hidden x ffn flops at 50 GFLOP/s)")
      ->check(CLI::NonNegativeNumber);
  sub.add_option("--migration-steps", o->migration_steps, "Steps a migration's cost is spread over (default 1000)");
}

namespace {

layers::PlacementCostModel cost_model(const PlacementCommandOptions& o, const layers::RoutingStatsFile& stats) {
  check_arg(o.hidden >= 1, "--hidden is " + std::to_string(o.hidden) + "; expected >= 1");
  check_arg(o.ffn >= 1, "--ffn is " + std::to_string(o.ffn) + "; expected >= 1");
  check_arg(o.dtype_bytes >= 1, "--dtype-bytes is " + std::to_string(o.dtype_bytes) + "; expected >= 1");
  check_arg(o.migration_steps >= 1, "--migration-steps is " + std::to_string(o.migration_steps) + "; expected >= 1");
  check_arg(o.replicas >= 0, "--replicas is " + std::to_string(o.replicas) + "; expected >= 0");
  const double flops_per_s = 50e9;  // documented default: a CPU core's order of magnitude
  layers::PlacementCostModel m{.node_of_rank = stats.node_of_rank,
                               .row_seconds = o.row_seconds >= 0 ? o.row_seconds
                                                                 : 6.0 * static_cast<double>(o.hidden) *
                                                                       static_cast<double>(o.ffn) / flops_per_s,
                               .row_bytes = o.hidden * o.dtype_bytes,
                               .expert_bytes = 3 * o.hidden * o.ffn * o.dtype_bytes,
                               .migration_steps = o.migration_steps};
  check_arg(std::isfinite(m.row_seconds), "--row-seconds is not finite; expected seconds >= 0");
  if (o.topology.empty()) return m;
  const comm::Topology t = comm::read_topology_file(o.topology);
  check_arg(t.num_ranks() == stats.num_ranks, o.topology + ": field 'ranks' lists " + std::to_string(t.num_ranks()) +
                                                  " ranks; expected " + std::to_string(stats.num_ranks) + ", as " +
                                                  o.stats);
  for (int r = 0; r < t.num_ranks(); ++r)
    check_arg(t.ranks[static_cast<std::size_t>(r)].node == stats.node_of_rank[static_cast<std::size_t>(r)],
              o.topology + ": field 'ranks[" + std::to_string(r) + "].node' is " +
                  std::to_string(t.ranks[static_cast<std::size_t>(r)].node) + "; expected " +
                  std::to_string(stats.node_of_rank[static_cast<std::size_t>(r)]) + ", as node_of_rank in " + o.stats);
  // The per-byte part of each class's cost; latency is per message, which the model does not count.
  if (const auto& c = t.cost(comm::LinkClass::kSameNode)) m.same_node_seconds_per_byte = 1 / c->bandwidth_bytes_per_s;
  if (const auto& c = t.cost(comm::LinkClass::kOtherNode)) m.other_node_seconds_per_byte = 1 / c->bandwidth_bytes_per_s;
  return m;
}

// The three placements of every block and their figures.
struct Plans {
  static constexpr int kCount = 3;  // current, eplb, model
  static constexpr const char* kNames[kCount] = {"current", "eplb", "model"};
  std::vector<layers::ExpertHolders> holders[kCount];
  std::vector<layers::PlacementFigures> figures[kCount];
};

Plans make_plans(const PlacementCommandOptions& o, const layers::RoutingStatsFile& stats,
                 const layers::PlacementCostModel& model) {
  Plans p;
  for (std::int64_t b = 0; b < stats.num_blocks(); ++b) {
    const layers::RoutingCounts counts = stats.counts(b);
    const layers::ExpertHolders current =
        o.current.empty() ? layers::single_holders(stats.expert_owner, stats.num_ranks)
                          : layers::read_placement_file(o.current, stats.num_experts, stats.num_ranks, b);
    layers::ExpertHolders eplb, planned;
    with_flag("--replicas", [&] {
      eplb = layers::eplb_placement(counts.expert_loads(), stats.node_of_rank, o.replicas);
      planned = layers::plan_placement(counts, current, {.replicas = o.replicas, .model = model});
    });
    const layers::ExpertHolders* made[Plans::kCount] = {&current, &eplb, &planned};
    for (int i = 0; i < Plans::kCount; ++i) {
      p.holders[i].push_back(*made[i]);
      p.figures[i].push_back(layers::model_placement(counts, *made[i], current, model));
    }
  }
  return p;
}

// Per step over every block: rows, bytes and seconds summed; max/mean the worst block's.
layers::PlacementFigures total(const std::vector<layers::PlacementFigures>& blocks, double* worst_ratio) {
  layers::PlacementFigures t;
  *worst_ratio = 0;
  for (const layers::PlacementFigures& f : blocks) {
    t.max_load_rows += f.max_load_rows;
    t.mean_load_rows += f.mean_load_rows;
    t.same_node_bytes += f.same_node_bytes;
    t.other_node_bytes += f.other_node_bytes;
    t.migration_bytes += f.migration_bytes;
    t.compute_seconds += f.compute_seconds;
    t.exchange_seconds += f.exchange_seconds;
    t.migration_seconds += f.migration_seconds;
    t.step_seconds += f.step_seconds;
    *worst_ratio = std::max(*worst_ratio, f.max_over_mean());
  }
  return t;
}

nlohmann::ordered_json figures_json(const layers::PlacementFigures& f) {
  return {{"max_load_rows", f.max_load_rows},         {"mean_load_rows", f.mean_load_rows},
          {"max_over_mean", f.max_over_mean()},       {"same_node_bytes", f.same_node_bytes},
          {"other_node_bytes", f.other_node_bytes},   {"migration_bytes", f.migration_bytes},
          {"compute_seconds", f.compute_seconds},     {"exchange_seconds", f.exchange_seconds},
          {"migration_seconds", f.migration_seconds}, {"step_seconds", f.step_seconds}};
}

void print_json(const Plans& p, const layers::RoutingStatsFile& stats, const PlacementCommandOptions& o) {
  nlohmann::ordered_json out = {{"stats", o.stats},
                                {"replicas", o.replicas},
                                {"method", o.method},
                                {"ranks", stats.num_ranks},
                                {"experts", stats.num_experts}};
  for (int i = 0; i < Plans::kCount; ++i) {
    nlohmann::ordered_json blocks = nlohmann::ordered_json::array();
    for (std::size_t b = 0; b < p.figures[i].size(); ++b) {
      nlohmann::ordered_json block = figures_json(p.figures[i][b]);
      block["expert_ranks"] = p.holders[i][b].ranks_of_expert;
      blocks.push_back(block);
    }
    double worst = 0;
    out[Plans::kNames[i]] = {{"total", figures_json(total(p.figures[i], &worst))}, {"blocks", blocks}};
  }
  std::printf("%s\n", out.dump().c_str());
}

void print_table(const Plans& p, const layers::RoutingStatsFile& stats, const PlacementCommandOptions& o) {
  int num_nodes = 0;
  for (int n : stats.node_of_rank) num_nodes = std::max(num_nodes, n + 1);
  std::printf(
      "switchyard placement: %s (%s, %lld steps): %d ranks on %d nodes, %lld experts, %lld blocks, "
      "%lld replicas\n",
      o.stats.c_str(), stats.command.c_str(), static_cast<long long>(stats.steps), stats.num_ranks, num_nodes,
      static_cast<long long>(stats.num_experts), static_cast<long long>(stats.num_blocks()),
      static_cast<long long>(o.replicas));
  std::printf("  per step, summed over blocks (max/mean: the worst block's)\n");
  std::printf("  %-8s %8s %12s %14s %14s %14s %12s %12s %12s %12s\n", "placement", "max/mean", "max_rows",
              "other_node_B", "same_node_B", "migration_B", "compute_s", "exchange_s", "migration_s", "step_s");
  for (int i = 0; i < Plans::kCount; ++i) {
    double worst = 0;
    const layers::PlacementFigures t = total(p.figures[i], &worst);
    std::printf("  %-9s %8.3f %12.1f %14.0f %14.0f %14lld %12.4g %12.4g %12.4g %12.4g\n", Plans::kNames[i], worst,
                t.max_load_rows, t.other_node_bytes, t.same_node_bytes, static_cast<long long>(t.migration_bytes),
                t.compute_seconds, t.exchange_seconds, t.migration_seconds, t.step_seconds);
  }
}

}  // namespace

void run_placement(const PlacementCommandOptions& o, comm::Communicator& comm) {
  collective_step(comm, [&] {
    if (comm.rank() != 0) return;
    check_output_dir("--out", o.out);
    const layers::RoutingStatsFile stats = layers::read_routing_stats_file(o.stats);
    const layers::PlacementCostModel model = cost_model(o, stats);
    const Plans p = make_plans(o, stats, model);
    if (o.json)
      print_json(p, stats, o);
    else
      print_table(p, stats, o);
    if (!o.out.empty()) {
      const int chosen = o.method == "eplb" ? 1 : 2;
      layers::PlacementFile file{.method = o.method, .replicas = o.replicas, .blocks = {}};
      for (std::size_t b = 0; b < p.holders[chosen].size(); ++b)
        file.blocks.push_back({.holders = p.holders[chosen][b], .has_figures = true, .figures = p.figures[chosen][b]});
      layers::write_placement_file(o.out, file);
      if (!o.json) std::printf("wrote the %s placement to %s\n", o.method.c_str(), o.out.c_str());
    }
    std::fflush(stdout);
  });
}

}  // namespace switchyard::launch
