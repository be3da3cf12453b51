#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "router_options.hpp"
#include "step_schedule.hpp"
#include "switchyard/comm/communicator.hpp"
#include "topology_options.hpp"

namespace switchyard::launch {

struct ForwardOptions {
  std::string model_dir;
  std::int64_t layer = -1;
  std::string input;
  std::string output;
  double capacity_factor = 0.0;
  std::string grad_output;  // dL/dy .npy: also run the backward
  std::string grads;        // where to write the gradients (safetensors)
  double aux_loss_coef = 0.0;
  double z_loss_coef = 0.0;
  std::string dtype = "f32";  // expert weights: f32 | bf16 (inference only)
  bool quiet = false;
  std::string json;           // append one JSON line (rank 0)
  std::string routing_stats;  // routing statistics (JSON), for placement
  std::string placement;      // expert placement file; empty: contiguous blocks
  RouterOptions router;       // top-p routing over the checkpoint's router
  ScheduleOptions schedule;
  TopologyOptions topology;
  RoutingOptions topology_routing;
};

struct InspectOptions {
  std::string model_dir;
};

struct TrainOptions {
  std::string config;
  std::int64_t steps = -1;       // overrides the config's steps when >= 1
  std::int64_t stop_after = -1;  // stop (and save) after this step; the schedule still spans `steps`
  std::string json;              // JSON lines, one per logged step and eval, one final
  std::string save;              // checkpoint directory, written at the end
  std::int64_t save_every = 0;
  std::string resume;
  std::string dtype;  // overrides the configuration's model.dtype when set
  // Override the configuration's model.router, model.top_p, model.top_k (the
  // cap of top-p) and entropy_loss_coef when set.
  RouterOptions router;
  double entropy_loss_coef = -1.0;
  bool quiet = false;
  std::string routing_stats;  // routing statistics over every training step (JSON)
  std::string placement;      // expert placement file, one placement per block; empty: contiguous blocks
  ScheduleOptions schedule;
  TopologyOptions topology;
  RoutingOptions topology_routing;
};

struct BenchOptions {
  std::int64_t hidden = 1024, ffn = 2048, experts = 8, top_k = 2, tokens = 4096;
  std::string arch = "mixtral", pass = "fwd", dtype = "f32", routing = "uniform", json;
  int iters = 10, warmup = 3;
  std::uint64_t seed = 1;
  std::int64_t corrupt_expert = -1;
  std::string routing_stats;  // the measured step's routing statistics (JSON)
  std::string placement;      // expert placement file; empty: contiguous blocks
  ScheduleOptions schedule;   // with overlap on, the same graph in sequence is timed beside it
  TopologyOptions topology;
  RoutingOptions topology_routing;
};

struct TopoOptions {
  TopologyOptions topology;
  bool json = false;      // print the topology file instead of the table
  bool no_probe = false;  // no link costs
};

struct PlacementCommandOptions {
  std::string stats;             // routing statistics (JSON)
  std::int64_t replicas = 0;     // extra expert copies in all
  std::string method = "model";  // the placement written to `out`: model | eplb
  std::string topology;          // topology file: link costs per byte
  std::string current;           // placement file in use now; "": the statistics' owners
  std::string out;               // where to write the chosen placement
  bool json = false;
  std::int64_t hidden = 1024, ffn = 2048, dtype_bytes = 4, migration_steps = 1000;
  double row_seconds = -1;  // < 0: 6 x hidden x ffn flops at 50 GFLOP/s
};

void add_forward_options(CLI::App& sub, ForwardOptions* opts);
void add_bench_options(CLI::App& sub, BenchOptions* opts);
void add_inspect_options(CLI::App& sub, InspectOptions* opts);
void add_train_options(CLI::App& sub, TrainOptions* opts);
void add_topo_options(CLI::App& sub, TopoOptions* opts);
void add_placement_options(CLI::App& sub, PlacementCommandOptions* opts);

/// `switchyard forward`: collective over `comm`.
void run_forward(const ForwardOptions& opts, comm::Communicator& comm);
/// `switchyard bench`: collective; rank 0 prints the table and the JSON line.
void run_bench(const BenchOptions& opts, comm::Communicator& comm);
/// `switchyard inspect`: rank 0 prints; other ranks only agree on errors.
void run_inspect(const InspectOptions& opts, comm::Communicator& comm);
/// `switchyard train`: collective over `comm`; rank 0 prints and writes JSON.
void run_train(const TrainOptions& opts, comm::Communicator& comm);
/// `switchyard env`: every SWITCHYARD_* setting with its value, where it came
/// from and its doc, one per line (rank 0 prints). Collective.
void run_env(comm::Communicator& comm);
/// `switchyard topo`: the job's topology (rank 0 prints the table, or with
/// --json the topology file). Collective.
void run_topo(const TopoOptions& opts, comm::Communicator& comm);
/// `switchyard placement`: the current, EPLB-style and modelled placements
/// of a routing-statistics file (rank 0 prints and writes --out). Collective
/// only in agreeing on errors.
void run_placement(const PlacementCommandOptions& opts, comm::Communicator& comm);

}  // namespace switchyard::launch
