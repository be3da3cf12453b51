#include "topology_options.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "cli_runner.hpp"
#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/comm/topology_probe.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {

void add_topology_options(CLI::App& sub, TopologyOptions* o) {
  sub.add_option("--topology", o->topology,
                 "auto (default): discover nodes, placement and link costs; or a topology file (JSON, as "
                 "`switchyard topo --json` writes it)");
  sub.add_option("--ranks-per-node", o->ranks_per_node,
                 "Virtual nodes of N consecutive ranks instead of the nodes MPI reports")
      ->check(CLI::PositiveNumber);
  sub.add_option("--probe-bytes", o->probe_bytes,
                 "Message sizes of the link probe, comma-separated, at least 2 distinct, each 1 B .. 64 MiB (K and M "
                 "are 1024 and 1024^2: 8,64K,1M,4M is the default); probe past the links' burst to measure their "
                 "sustained rate")
      ->delimiter(',')
      ->transform(CLI::AsSizeValue(false))
      ->type_name("SIZES");
  sub.add_option("--exchange", o->exchange,
                 "flat (default): each token once to each rank holding its experts; hierarchical: once to each "
                 "node, forwarded inside it; auto: the faster by the topology's link costs")
      ->check(CLI::IsMember({"flat", "hierarchical", "auto"}));
}

layers::ExchangeKind resolve_exchange(const TopologyOptions& o, const comm::Topology& topology,
                                      const layers::ExpertPlacement& placement, std::int64_t tokens, std::int64_t top_k,
                                      std::int64_t row_bytes) {
  if (o.exchange == "hierarchical") return layers::ExchangeKind::kHierarchical;
  if (o.exchange != "auto") return layers::ExchangeKind::kFlat;
  return layers::forecast_exchange(topology, placement, tokens, top_k, std::max<std::int64_t>(row_bytes, 1)).better();
}

const char* exchange_name(layers::ExchangeKind kind) {
  return kind == layers::ExchangeKind::kHierarchical ? "hierarchical" : "flat";
}

std::string topology_source(const TopologyOptions& o) {
  if (o.topology != "auto") return "file " + o.topology;
  if (o.ranks_per_node > 0)
    return "virtual nodes of " + std::to_string(o.ranks_per_node) + " rank" + (o.ranks_per_node == 1 ? "" : "s");
  return "MPI shared-memory nodes";
}

namespace {

// Rank 0 reads the file; every rank gets the same topology. Collective.
comm::Topology topology_from_file(const std::string& path, comm::Communicator& comm) {
  std::string text;
  collective_step(comm, [&] {
    if (comm.rank() != 0) return;
    const comm::Topology topology = comm::read_topology_file(path);
    check_arg(topology.num_ranks() == comm.size(),
              path + ": the topology file describes " + std::to_string(topology.num_ranks()) + " rank" +
                  (topology.num_ranks() == 1 ? "" : "s") + "; expected the job's " + std::to_string(comm.size()));
    text = comm::write_topology_json(topology);  // reads back equal, bit for bit
  });
  std::int64_t size = static_cast<std::int64_t>(text.size());
  comm.broadcast(&size, sizeof(size), 0);
  text.resize(static_cast<std::size_t>(size));
  comm.broadcast(text.data(), text.size(), 0);
  comm::Topology topology;
  collective_step(comm, [&] { topology = comm::parse_topology_json(text, path); });
  return topology;
}

}  // namespace

comm::Topology resolve_topology(const TopologyOptions& o, comm::Communicator& comm, bool probe) {
  collective_step(comm, [&] {
    check_arg(o.topology == "auto" || o.ranks_per_node == 0,
              "--ranks-per-node and --topology FILE: give one (the file says which node each rank is on)");
    check_arg(o.topology == "auto" || o.probe_bytes.empty(),
              "--probe-bytes and --topology FILE: give one (the file's link costs are not probed)");
  });
  if (o.topology != "auto") return topology_from_file(o.topology, comm);
  comm::Topology topology;
  collective_step(comm, [&] {
    const auto* mpi = dynamic_cast<const comm::MpiCommunicator*>(&comm);
    if (mpi == nullptr) {  // not an MPI job: nothing to discover
      topology = comm::virtual_nodes(comm.size(), o.ranks_per_node > 0 ? o.ranks_per_node : comm.size());
      return;
    }
    comm::DiscoveryOptions options;
    options.ranks_per_node = o.ranks_per_node;
    options.probe = probe;
    if (!o.probe_bytes.empty()) {
      options.probe_bytes = o.probe_bytes;
      with_flag("--probe-bytes", [&] { comm::check_probe_bytes(options.probe_bytes); });
    }
    topology = comm::discover_topology(mpi->handle(), options);
  });
  return topology;
}

namespace {

std::string bytes_text(std::int64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (bytes >= (std::int64_t{1} << 30))
    std::snprintf(buf, sizeof(buf), "%.2f GiB", b / (1 << 30));
  else if (bytes >= (1 << 20))
    std::snprintf(buf, sizeof(buf), "%.2f MiB", b / (1 << 20));
  else if (bytes >= (1 << 10))
    std::snprintf(buf, sizeof(buf), "%.1f KiB", b / (1 << 10));
  else
    std::snprintf(buf, sizeof(buf), "%lld B", static_cast<long long>(bytes));
  return buf;
}

}  // namespace

layers::TopologyRouting RoutingOptions::over(layers::TopologyRouting base) const {
  if (max_nodes) base.max_nodes = *max_nodes;
  if (node_score_experts) base.node_score_experts = *node_score_experts;
  if (link_penalty) base.link_penalty = *link_penalty;
  if (topology_loss) base.topology_loss = *topology_loss;
  return base;
}

namespace {

// A value of at least `min`, named `what` in the message ("expected an
// integer >= 0, got -1"): CLI11's NonNegativeNumber names its range up to the
// largest double.
CLI::Validator at_least(double min, const std::string& what) {
  return CLI::Validator(
      [min, what](std::string& text) -> std::string {
        double v = 0;
        if (CLI::detail::lexical_cast(text, v) && std::isfinite(v) && v >= min) return {};
        return "expected " + what + ", got " + text;
      },
      "");
}

}  // namespace

void add_routing_options(CLI::App& sub, RoutingOptions* o) {
  sub.add_option_function<std::int64_t>(
         "--max-nodes", [o](const std::int64_t& v) { o->max_nodes = v; },
         "Node-limited routing: each token's experts come from at most M nodes, those whose best "
         "--node-score-experts scores are highest; 0 (default): no limit")
      ->type_name("M")
      ->check(at_least(0, "an integer >= 0"));
  sub.add_option_function<std::int64_t>(
         "--node-score-experts", [o](const std::int64_t& v) { o->node_score_experts = v; },
         "With --max-nodes: a node scores as the sum of its best S expert scores (default 2)")
      ->type_name("S")
      ->check(at_least(1, "an integer >= 1"));
  sub.add_option_function<double>(
         "--link-penalty", [o](const double& v) { o->link_penalty = v; },
         "Cost-aware routing: an expert's selection score loses L x the modelled cost of reaching its rank over "
         "that of the dearest link (needs link costs: measured, or from --topology FILE); 0 (default): none")
      ->type_name("L")
      ->check(at_least(0, "a finite number >= 0"));
  sub.add_option_function<double>(
         "--topology-loss", [o](const double& v) { o->topology_loss = v; },
         "Topology loss in the backward: adds C x the mean modelled link cost of the router's probabilities (as "
         "--link-penalty prices links; needs link costs); 0 (default): none")
      ->type_name("C")
      ->check(at_least(0, "a finite number >= 0"));
}

namespace {

bool mentions(const std::string& text, const char* word) { return text.find(word) != std::string::npos; }

}  // namespace

void with_routing_labels(const RoutingLabels& labels, const std::string& topology_source,
                         const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    const std::string message = e.what();
    const std::string where = mentions(message, "no cost") ? " (topology: " + topology_source + ")" : "";
    if (message.starts_with("link penalty:") || mentions(message, "selection_penalty"))
      throw Error(e.code(), labels.link_penalty + ": " + message + where);
    if (message.starts_with("topology loss:") || mentions(message, "link_cost"))
      throw Error(e.code(), labels.topology_loss + ": " + message + where);
    if (mentions(message, "max_nodes") || mentions(message, "spans nodes"))
      throw Error(e.code(), labels.max_nodes + ": " + message);
    if (mentions(message, "node_score_experts")) throw Error(e.code(), labels.node_score_experts + ": " + message);
    throw;
  }
}

void apply_routing_flags(const layers::TopologyRouting& routing, const layers::ExpertPlacement& placement,
                         const comm::Topology& topology, const TopologyOptions& source, int rank,
                         std::int64_t row_bytes, layers::RouterConfig* router) {
  with_routing_labels({}, topology_source(source),
                      [&] { layers::apply_topology_routing(routing, placement, topology, rank, row_bytes, router); });
}

std::string routing_summary(const layers::TopologyRouting& r) {
  char buf[192];
  if (r.max_nodes > 0)
    std::snprintf(buf, sizeof(buf),
                  "routing: each token's experts on at most %lld node%s (a node scores as its best %lld expert%s); "
                  "link penalty %g",
                  static_cast<long long>(r.max_nodes), r.max_nodes == 1 ? "" : "s",
                  static_cast<long long>(r.node_score_experts), r.node_score_experts == 1 ? "" : "s", r.link_penalty);
  else
    std::snprintf(buf, sizeof(buf), "routing: no node limit; link penalty %g", r.link_penalty);
  std::string out = buf;
  if (r.topology_loss > 0) {
    std::snprintf(buf, sizeof(buf), "; topology loss %g", r.topology_loss);
    out += buf;
  }
  return out;
}

std::string link_traffic_summary(const layers::LinkTraffic& t) {
  using comm::LinkClass;
  const std::int64_t total = t.total_copies(), across = t.copies_on(LinkClass::kOtherNode);
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "token copies: %lld on rank, %lld in node, %lld across nodes (%.1f%% across; %lld slots across); "
                "bytes: self %s, same node %s, other node %s",
                static_cast<long long>(t.copies_on(LinkClass::kSelf)),
                static_cast<long long>(t.copies_on(LinkClass::kSameNode)), static_cast<long long>(across),
                total > 0 ? 100.0 * static_cast<double>(across) / static_cast<double>(total) : 0.0,
                static_cast<long long>(t.slots_on(LinkClass::kOtherNode)),
                bytes_text(t.bytes_on(LinkClass::kSelf)).c_str(), bytes_text(t.bytes_on(LinkClass::kSameNode)).c_str(),
                bytes_text(t.bytes_on(LinkClass::kOtherNode)).c_str());
  return buf;
}

}  // namespace switchyard::launch
