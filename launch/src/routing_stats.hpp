#pragma once
// --routing-stats FILE: where each rank's tokens were routed, per block,
// over a whole run, for expert placement (docs/topology.md#routing-statistics).
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/comm/topology.hpp"
#include "switchyard/layers/dispatch.hpp"
#include "switchyard/layers/moe_context.hpp"

namespace switchyard::launch {

/// Adds --routing-stats FILE to `sub`.
void add_routing_stats_option(CLI::App& sub, std::string* path);

/// Adds --placement FILE (as `switchyard placement` writes it) to `sub`.
void add_placement_option(CLI::App& sub, std::string* path);

/// Block `block`'s expert placement: contiguous blocks when `path` is
/// empty, else the placement file's. Throws Error(kInvalidArgument), one
/// line naming --placement, the file and the field, for a bad file.
layers::ExpertPlacement placement_of(const std::string& path, std::int64_t num_experts, int num_ranks,
                                     std::int64_t block);

/// Sums this rank's routed slots per expert (StepTraffic::expert_slots) for
/// each block over the steps of a run; write() gathers every rank's counts
/// into one file. Nothing here is collective but write().
class RoutingStats {
 public:
  /// `path` empty: record nothing, write nothing.
  RoutingStats(std::string path, std::string command, std::int64_t num_blocks, std::int64_t num_experts);

  bool enabled() const { return !path_.empty(); }
  /// Adds one forward's routing of `block` on this rank.
  void add(std::int64_t block, const layers::StepTraffic& traffic);
  /// Counts a step (every block's forward once).
  void end_step() { ++steps_; }

  /// Collective: every rank's counts summed into copies[block][rank][expert];
  /// rank 0 writes the JSON file atomically (no partial file on failure), and
  /// an error ends every rank with one line naming --routing-stats.
  void write(comm::Communicator& comm, const comm::Topology& topology, const layers::ExpertPlacement& placement);

 private:
  std::string path_, command_;
  std::int64_t num_experts_ = 0, steps_ = 0;
  std::vector<std::vector<std::int64_t>> slots_;  // [block][E], this rank
};

}  // namespace switchyard::launch
