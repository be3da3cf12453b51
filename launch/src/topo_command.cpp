// `switchyard topo`: the job's topology as the exchange sees it: nodes and
// their ranks, each rank's host, cores and NUMA node, and the cost of a
// message per link class (docs/topology.md).
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "cli_runner.hpp"
#include "commands.hpp"
#include "switchyard/comm/topology.hpp"

namespace switchyard::launch {

void add_topo_options(CLI::App& sub, TopoOptions* o) {
  add_topology_options(sub, &o->topology);
  sub.add_flag("--json", o->json, "Print the topology file (JSON) that --topology FILE reads back");
  sub.add_flag("--no-probe", o->no_probe, "Nodes and placement only: measure no link costs");
}

namespace {

// Ascending distinct ids as compact ranges, as `taskset -c` lists them: "0-3,8".
std::string compact_ranges(const std::vector<int>& ids) {
  std::string out;
  for (std::size_t i = 0; i < ids.size();) {
    std::size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    out += (out.empty() ? "" : ",") + std::to_string(ids[i]);
    if (j > i) out += "-" + std::to_string(ids[j]);
    i = j + 1;
  }
  return out;
}

void print_placement(const comm::Topology& t) {
  for (int node = 0; node < t.num_nodes(); ++node)
    std::printf("  node %d: ranks %s\n", node, compact_ranges(t.ranks_on_node(node)).c_str());
  std::printf("\n  %4s %4s  %-24s %-16s %s\n", "rank", "node", "host", "cores", "numa");
  for (int r = 0; r < t.num_ranks(); ++r) {
    const comm::RankPlacement& p = t.ranks[static_cast<std::size_t>(r)];
    const std::string cores = p.cores.empty() ? "?" : compact_ranges(p.cores);
    const std::string numa = p.numa_node < 0 ? "?" : std::to_string(p.numa_node);
    std::printf("  %4d %4d  %-24s %-16s %s\n", r, p.node, p.host.empty() ? "?" : p.host.c_str(), cores.c_str(),
                numa.c_str());
  }
}

// The probe's points as "8 B 1.23, 64 KiB 4.56, ..." (microseconds).
std::string probe_text(const std::vector<comm::ProbePoint>& points) {
  std::string out;
  char buf[64];
  for (const comm::ProbePoint& p : points) {
    const long long b = static_cast<long long>(p.bytes);
    if (b >= (1 << 20) && b % (1 << 20) == 0)
      std::snprintf(buf, sizeof(buf), "%lld MiB %.3f", b >> 20, p.seconds * 1e6);
    else if (b >= (1 << 10) && b % (1 << 10) == 0)
      std::snprintf(buf, sizeof(buf), "%lld KiB %.3f", b >> 10, p.seconds * 1e6);
    else
      std::snprintf(buf, sizeof(buf), "%lld B %.3f", b, p.seconds * 1e6);
    out += (out.empty() ? "" : ", ") + std::string(buf);
  }
  return out.empty() ? "(given, not probed)" : out;
}

void print_costs(const comm::Topology& t) {
  std::printf("\n  link costs, one message: seconds = latency + bytes / bandwidth\n");
  std::printf("  %-11s %12s %16s  %s\n", "class", "latency_us", "bandwidth_GB/s", "probe (bytes us, one way)");
  for (const comm::LinkClass c : comm::kAllLinkClasses) {
    const auto& cost = t.cost(c);
    if (!cost) {
      std::printf("  %-11s %12s %16s  no cost (no pair of ranks on this link, or not probed)\n",
                  comm::link_class_name(c), "-", "-");
      continue;
    }
    std::printf("  %-11s %12.3f %16.3f  %s\n", comm::link_class_name(c), cost->latency_s * 1e6,
                cost->bandwidth_bytes_per_s / 1e9, probe_text(cost->probe).c_str());
  }
}

}  // namespace

void run_topo(const TopoOptions& o, comm::Communicator& comm) {
  const auto t0 = std::chrono::steady_clock::now();
  const comm::Topology topology = resolve_topology(o.topology, comm, !o.no_probe);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (comm.rank() != 0) return;
  if (o.json) {
    std::printf("%s", comm::write_topology_json(topology).c_str());
    std::fflush(stdout);
    return;
  }
  std::printf("switchyard topo: %d rank%s on %d node%s (%s), resolved in %.3f s\n", topology.num_ranks(),
              topology.num_ranks() == 1 ? "" : "s", topology.num_nodes(), topology.num_nodes() == 1 ? "" : "s",
              topology_source(o.topology).c_str(), seconds);
  print_placement(topology);
  print_costs(topology);
  std::fflush(stdout);
}

}  // namespace switchyard::launch
