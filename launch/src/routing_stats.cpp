#include "routing_stats.hpp"

#include <nlohmann/json.hpp>

#include <string>

#include "cli_runner.hpp"
#include "switchyard/runtime/atomic_file.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {

void add_routing_stats_option(CLI::App& sub, std::string* path) {
  sub.add_option("--routing-stats", *path,
                 "Write routing statistics here (JSON): for each block, the token copies each rank routed to each "
                 "expert over the run, with the nodes and expert owners; for placement");
}

void add_placement_option(CLI::App& sub, std::string* path) {
  sub.add_option("--placement", *path,
                 "Place experts as this file says (JSON, as `switchyard placement` writes it; replicas allowed) "
                 "instead of in contiguous blocks");
}

layers::ExpertPlacement placement_of(const std::string& path, std::int64_t num_experts, int num_ranks,
                                     std::int64_t block) {
  if (path.empty()) return layers::ExpertPlacement(num_experts, num_ranks);
  try {
    return layers::ExpertPlacement(layers::read_placement_file(path, num_experts, num_ranks, block), path);
  } catch (const Error& e) {
    throw Error(e.code(), std::string("--placement: ") + e.what());
  }
}

RoutingStats::RoutingStats(std::string path, std::string command, std::int64_t num_blocks, std::int64_t num_experts)
    : path_(std::move(path)),
      command_(std::move(command)),
      num_experts_(num_experts),
      slots_(static_cast<std::size_t>(num_blocks), std::vector<std::int64_t>(static_cast<std::size_t>(num_experts))) {}

void RoutingStats::add(std::int64_t block, const layers::StepTraffic& traffic) {
  if (!enabled()) return;
  std::vector<std::int64_t>& to = slots_.at(static_cast<std::size_t>(block));
  for (std::size_t e = 0; e < traffic.expert_slots.size() && e < to.size(); ++e) to[e] += traffic.expert_slots[e];
}

void RoutingStats::write(comm::Communicator& comm, const comm::Topology& topology,
                         const layers::ExpertPlacement& placement) {
  if (!enabled()) return;
  const int R = comm.size(), me = comm.rank();
  const std::int64_t E = num_experts_;
  // Each rank's counts in its own row, summed: every row arrives whole.
  nlohmann::ordered_json blocks = nlohmann::ordered_json::array();
  for (std::size_t b = 0; b < slots_.size(); ++b) {
    std::vector<std::int64_t> all(static_cast<std::size_t>(R * E), 0);
    std::copy(slots_[b].begin(), slots_[b].end(), all.begin() + me * E);
    comm.allreduce_sum(all.data(), all.size());
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    for (int r = 0; r < R; ++r)
      rows.push_back(std::vector<std::int64_t>(all.begin() + r * E, all.begin() + (r + 1) * E));
    blocks.push_back({{"block", b}, {"copies", rows}});
  }
  collective_step(comm, [&] {
    if (me != 0) return;
    std::vector<int> node_of_rank, owner;
    for (const comm::RankPlacement& r : topology.ranks) node_of_rank.push_back(r.node);
    for (std::int64_t e = 0; e < E; ++e) owner.push_back(placement.owner(e));
    const nlohmann::ordered_json out = {{"format", "switchyard-routing-stats"},
                                        {"version", 1},
                                        {"command", command_},
                                        {"ranks", R},
                                        {"experts", E},
                                        {"steps", steps_},
                                        {"node_of_rank", node_of_rank},
                                        {"expert_owner", owner},
                                        {"blocks", blocks}};
    const std::string text = out.dump() + "\n";
    try {
      write_file_atomically(path_, text.data(), text.size());
    } catch (const Error& e) {
      throw Error(e.code(), std::string("--routing-stats: ") + e.what());
    }
  });
}

}  // namespace switchyard::launch
