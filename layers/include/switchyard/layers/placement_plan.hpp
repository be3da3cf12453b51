#pragma once
// Expert placement planning: which ranks hold a copy of each expert, a model
// of what a placement costs per step (compute, exchange, migration), two
// planners (a minimiser of that model and an EPLB-style balancer) and the
// files they read and write: routing statistics in, placements out. Plain
// functions on plain data, no communication. See docs/placement.md.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace switchyard::layers {

/// Which ranks hold a copy of each expert.
///
/// The replica choice rule (the layer routes by the same rule): a token on
/// rank r for expert e goes to the holders of e over the cheapest link class
/// from r (self < same node < other node, by node_of_rank); among n equally
/// cheap holders, the token with index t (its index within its rank's step)
/// takes the (t mod n)-th of them in ascending rank order. The model splits
/// rank r's copies of e evenly among those holders.
struct ExpertHolders {
  int num_ranks = 0;
  std::int64_t num_experts = 0;
  /// [num_experts]: the ranks holding a copy, at least one, distinct,
  /// ascending.
  std::vector<std::vector<int>> ranks_of_expert;

  /// Copies held per rank ([num_ranks]).
  std::vector<std::int64_t> experts_per_rank() const;
  std::int64_t total_copies() const;
  bool holds(std::int64_t expert, int rank) const;
  bool operator==(const ExpertHolders&) const = default;
};

/// Throws Error(kInvalidArgument), one line starting with `what` (the file
/// and field), unless num_ranks >= 1, num_experts >= 1, there is one list
/// per expert and each holds ranks in 0..num_ranks-1, at least one, distinct
/// and ascending.
void check_expert_holders(const ExpertHolders& holders, const std::string& what);

/// One holder per expert: expert e on owner_of_expert[e].
ExpertHolders single_holders(std::span<const int> owner_of_expert, int num_ranks);

/// The holders of `expert` that a token on `rank` may go to under the
/// replica choice rule: those over the cheapest link class, ascending.
std::vector<int> cheapest_holders(const ExpertHolders& holders, std::int64_t expert, int rank,
                                  std::span<const int> node_of_rank);

/// The holder that token `token_idx` of `rank` for `expert` goes to: the
/// (token_idx mod n)-th of the n cheapest_holders.
int holder_for_token(const ExpertHolders& holders, std::int64_t expert, int rank, std::int64_t token_idx,
                     std::span<const int> node_of_rank);

/// The same rule on one expert's holders (ascending), allocating nothing:
/// what the layer's exchange plan calls per slot. An empty node_of_rank
/// means one node.
int pick_holder(std::span<const int> holders, int rank, std::int64_t token_idx, std::span<const int> node_of_rank);

/// One block's routing per step: copies[r * num_experts + e] = token slots
/// rank r routes to expert e in an average step.
struct RoutingCounts {
  int num_ranks = 0;
  std::int64_t num_experts = 0;
  std::vector<double> copies;

  double at(int rank, std::int64_t expert) const {
    return copies[static_cast<std::size_t>(rank * num_experts + expert)];
  }
  /// Copies per expert over all ranks ([num_experts]).
  std::vector<double> expert_loads() const;
};

/// What a step costs, the constants of the model (docs/placement.md).
struct PlacementCostModel {
  std::vector<int> node_of_rank;                   // [num_ranks], nodes 0..N-1
  double row_seconds = 2e-6;                       // one expert row's compute
  std::int64_t row_bytes = 4096;                   // one token row on the wire
  double same_node_seconds_per_byte = 1 / 20e9;    // default: 20 GB/s
  double other_node_seconds_per_byte = 1 / 2.5e9;  // default: 2.5 GB/s
  std::int64_t expert_bytes = 0;                   // one expert's parameters, moved when placed anew
  std::int64_t migration_steps = 1000;             // steps a migration is amortised over, >= 1
};

/// Throws Error(kInvalidArgument) naming the field unless node_of_rank has
/// `num_ranks` entries >= 0, costs are finite and >= 0, row_bytes and
/// expert_bytes >= 0 and migration_steps >= 1.
void check_cost_model(const PlacementCostModel& model, int num_ranks);

/// The modelled figures of one block's placement, per step.
struct PlacementFigures {
  double max_load_rows = 0;          // rows the busiest rank computes
  double mean_load_rows = 0;         // rows per rank on average
  double same_node_bytes = 0;        // bytes sent within nodes (dispatch + combine)
  double other_node_bytes = 0;       // bytes sent across nodes (dispatch + combine)
  std::int64_t migration_bytes = 0;  // copies new to their rank × expert_bytes
  double compute_seconds = 0;        // max over ranks of rows × row_seconds
  double exchange_seconds = 0;       // max over ranks of Σ_class bytes in and out × seconds per byte
  double migration_seconds = 0;      // migration bytes × other-node cost / migration_steps
  double step_seconds = 0;           // the sum of the three

  double max_over_mean() const { return mean_load_rows > 0 ? max_load_rows / mean_load_rows : 1.0; }
};

/// Models `placement` under the replica choice rule: each rank's copies of
/// an expert are split evenly among its cheapest holders, which compute
/// them; a copy sent to another rank crosses its link twice (dispatch out,
/// combine back). Migration counts the copies of `placement` that `current`
/// does not hold. Throws Error(kInvalidArgument) when the shapes disagree.
PlacementFigures model_placement(const RoutingCounts& counts, const ExpertHolders& placement,
                                 const ExpertHolders& current, const PlacementCostModel& model);

/// At most ceil((num_experts + replicas) / num_ranks) copies per rank.
std::int64_t max_experts_per_rank(std::int64_t num_experts, int num_ranks, std::int64_t replicas);

/// Throws Error(kInvalidArgument) naming `replicas` unless 0 <= replicas,
/// num_experts + replicas >= num_ranks (every rank holds one) and replicas
/// <= num_experts * (num_ranks - 1) (a rank holds each expert once).
void check_replicas(std::int64_t num_experts, int num_ranks, std::int64_t replicas);

struct PlacementOptions {
  std::int64_t replicas = 0;  // extra copies in all, beyond one per expert
  PlacementCostModel model;
};

/// A deterministic local search for the placement with the shortest
/// modelled step: starting from `current` (one copy per expert kept), it
/// places up to `replicas` extra copies, each where it shortens the model
/// most (stopping early when none does, unless a rank is still empty), then
/// moves and swaps copies between ranks while the model improves. Every rank
/// holds at least one copy and at most max_experts_per_rank. Throws
/// Error(kInvalidArgument) on bad shapes, replicas < 0 or too few copies to
/// give every rank one.
ExpertHolders plan_placement(const RoutingCounts& counts, const ExpertHolders& current,
                             const PlacementOptions& options);

/// The EPLB-style balancer (DeepSeek's EPLB, docs/placement.md): from the
/// load per expert alone, ignoring links and migration. Hierarchical when
/// the nodes have equal rank counts and divide both the experts and the
/// copies (experts packed to nodes by balanced packing, replicas made within
/// each node for the hottest load per copy, copies packed to the node's
/// ranks), global otherwise (one node of all ranks). Throws as plan_placement.
ExpertHolders eplb_placement(std::span<const double> expert_loads, std::span<const int> node_of_rank,
                             std::int64_t replicas);

/// A routing-statistics file (`--routing-stats`, docs/placement.md).
struct RoutingStatsFile {
  std::string command;
  int num_ranks = 0;
  std::int64_t num_experts = 0;
  std::int64_t steps = 0;
  std::vector<int> node_of_rank;                  // [num_ranks]
  std::vector<int> expert_owner;                  // [num_experts]
  std::vector<std::vector<std::int64_t>> copies;  // [block][r * num_experts + e], over all steps

  std::int64_t num_blocks() const { return static_cast<std::int64_t>(copies.size()); }
  /// Block `block`'s copies per step (divided by steps).
  RoutingCounts counts(std::int64_t block) const;
};

/// Parses a routing-statistics file's text; `source` names it in errors.
/// Throws Error(kInvalidArgument), one line naming `source` and the field.
RoutingStatsFile parse_routing_stats_json(const std::string& text, const std::string& source);
/// Reads the file at `path` (Error(kIo) when it cannot be read).
RoutingStatsFile read_routing_stats_file(const std::string& path);

/// One block's placement and, optionally, its modelled figures.
struct BlockPlacement {
  ExpertHolders holders;
  bool has_figures = false;
  PlacementFigures figures;
};

/// What a placement file holds: one placement per block, listed in block
/// order, and how it was made ("method", "replicas": free text for people).
struct PlacementFile {
  std::string method;
  std::int64_t replicas = 0;
  std::vector<BlockPlacement> blocks;
};

/// The placement file's text: {"format": "switchyard-placement", "version":
/// 1, "ranks", "experts", "blocks": [{"block", "expert_ranks"}], "model"}.
/// Throws Error(kInvalidArgument) when the blocks disagree in shape.
std::string write_placement_json(const PlacementFile& file);
/// Writes it to `path` atomically (Error(kIo) naming `path`).
void write_placement_file(const std::string& path, const PlacementFile& file);

/// Parses a placement file for a job of `num_experts` experts on
/// `num_ranks` ranks: every block's holders, in block order. Throws
/// Error(kInvalidArgument), one line naming `source` and the field: not
/// JSON, wrong format or version, ranks or experts other than the job's,
/// blocks out of order, a rank out of range or listed twice, an expert with
/// no holder.
std::vector<ExpertHolders> parse_placement_json(const std::string& text, const std::string& source,
                                                std::int64_t num_experts, int num_ranks);
/// Block `block`'s holders from the placement file at `path`: as
/// parse_placement_json, and refused when the file has no such block.
ExpertHolders read_placement_file(const std::string& path, std::int64_t num_experts, int num_ranks, std::int64_t block);

}  // namespace switchyard::layers
