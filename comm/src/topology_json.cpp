// The topology file: write_topology_json and its inverse. The layout is in
// docs/topology.md; the invariants of what it holds in check_topology.
#include <cerrno>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "switchyard/comm/topology.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::comm {
namespace {

using nlohmann::json;

constexpr const char* kFormat = "switchyard-topology";
constexpr int kVersion = 1;

// One JSON object of the file and its path in it ("ranks[2]"), for errors
// that name the file and the field.
class Object {
 public:
  Object(const json& j, std::string source, std::string path)
      : j_(j), source_(std::move(source)), path_(std::move(path)) {
    check_arg(j.is_object(), (path_.empty() ? source_ + ":" : where()) + " expected a JSON object, got " + j.dump());
  }

  // Refuses fields other than `known`, to catch misspelt names.
  void only(std::initializer_list<const char*> known) const {
    for (const auto& [key, value] : j_.items()) {
      bool ok = false;
      std::string list;
      for (const char* k : known) {
        ok = ok || key == k;
        list += list.empty() ? k : std::string(", ") + k;
      }
      check_arg(ok, where(key) + " is not a field of this object; expected one of " + list);
    }
  }
  const json& at(const char* key) const {
    check_arg(j_.contains(key), source_ + ": missing field '" + name(key) + "'");
    return j_.at(key);
  }
  std::int64_t integer(const char* key, std::int64_t lo, std::int64_t hi) const {
    const json& v = at(key);
    check_arg(v.is_number_integer(), where(key) + " expected an integer, got " + v.dump());
    const auto x = v.get<std::int64_t>();
    check_arg(x >= lo && x <= hi && !(v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(hi)),
              where(key) + " is " + v.dump() + "; expected " + std::to_string(lo) + ".." + std::to_string(hi));
    return x;
  }
  double number(const char* key) const {
    const json& v = at(key);
    check_arg(v.is_number(), where(key) + " expected a number, got " + v.dump());
    return v.get<double>();
  }
  std::string string(const char* key) const {
    const json& v = at(key);
    check_arg(v.is_string(), where(key) + " expected a string, got " + v.dump());
    return v.get<std::string>();
  }
  const json& array(const char* key) const {
    const json& v = at(key);
    check_arg(v.is_array(), where(key) + " expected a list, got " + v.dump());
    return v;
  }
  std::string name(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  std::string where(const std::string& key) const { return source_ + ": field '" + name(key) + "'"; }
  std::string where() const { return source_ + ": field '" + path_ + "'"; }
  const std::string& source() const { return source_; }
  const json& value() const { return j_; }

 private:
  const json& j_;
  std::string source_;
  std::string path_;
};

// Entry `rank_idx` of "ranks", which must describe rank `rank_idx`.
RankPlacement read_rank(const Object& o, int rank_idx, int num_ranks) {
  o.only({"rank", "node", "host", "cores", "numa_node"});
  const auto rank = o.integer("rank", 0, num_ranks - 1);
  check_arg(rank >= rank_idx, o.where("rank") + " is " + std::to_string(rank) +
                                  ", listed twice; expected each rank once, in order (" + std::to_string(rank_idx) +
                                  ")");
  check_arg(rank == rank_idx, o.where("rank") + " is " + std::to_string(rank) + "; expected " +
                                  std::to_string(rank_idx) + " (ranks are listed in order, each once)");
  RankPlacement p;
  p.node = static_cast<int>(o.integer("node", 0, std::numeric_limits<int>::max()));  // order: check_topology
  p.host = o.string("host");
  const json& cores = o.array("cores");
  for (std::size_t i = 0; i < cores.size(); ++i) {
    check_arg(cores[i].is_number_integer() && cores[i].get<std::int64_t>() >= 0 &&
                  cores[i].get<std::int64_t>() <= std::numeric_limits<int>::max(),
              o.where("cores") + " holds " + cores[i].dump() + "; expected OS processor ids (integers >= 0)");
    p.cores.push_back(cores[i].get<int>());
  }
  const json& numa = o.at("numa_node");
  check_arg(numa.is_null() || numa.is_number_integer(),
            o.where("numa_node") + " expected an integer or null (unknown), got " + numa.dump());
  p.numa_node = numa.is_null() ? -1 : static_cast<int>(o.integer("numa_node", 0, std::numeric_limits<int>::max()));
  return p;
}

std::vector<RankPlacement> read_ranks(const json& list, const std::string& source) {
  check_arg(!list.empty(), source + ": field 'ranks' is empty; expected at least one rank");
  const int num_ranks = static_cast<int>(list.size());
  std::vector<RankPlacement> ranks;
  for (std::size_t i = 0; i < list.size(); ++i)
    ranks.push_back(
        read_rank(Object(list[i], source, "ranks[" + std::to_string(i) + "]"), static_cast<int>(i), num_ranks));
  return ranks;
}

LinkCost read_cost(const Object& o) {
  o.only({"latency_s", "bandwidth_bytes_per_s", "probe"});
  LinkCost cost;
  cost.latency_s = o.number("latency_s");
  cost.bandwidth_bytes_per_s = o.number("bandwidth_bytes_per_s");
  const json& probe = o.array("probe");
  for (std::size_t i = 0; i < probe.size(); ++i) {
    const Object point(probe[i], o.source(), o.name("probe") + "[" + std::to_string(i) + "]");
    point.only({"bytes", "seconds"});
    cost.probe.push_back(
        {point.integer("bytes", 0, std::numeric_limits<std::int64_t>::max()), point.number("seconds")});
  }
  return cost;
}

void read_links(const Object& o, Topology* t) {
  for (const auto& [key, value] : o.value().items()) {
    const auto link = parse_link_class(key);
    check_arg(link.has_value(), o.where(key) + " is not a link class; expected self, same_node or other_node");
    t->cost(*link) = read_cost(Object(value, o.source(), o.name(key)));
  }
}

json parse_json(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 3, ...": keep what follows the tag.
    // NOTE: json::exception, not only parse_error: a number too large for a
    // double ("1e400") is an out_of_range.406 thrown by the parser.
    std::string what = e.what();
    what = what.substr(what.find(']') == std::string::npos ? 0 : what.find(']') + 2);
    throw Error(ErrorCode::kInvalidArgument, source + ": not valid JSON (" + what + "); expected a topology file");
  }
}

std::string one_line(const LinkCost& cost) {
  nlohmann::ordered_json probe = nlohmann::ordered_json::array();
  for (const ProbePoint& p : cost.probe) probe.push_back({{"bytes", p.bytes}, {"seconds", p.seconds}});
  nlohmann::ordered_json j = {
      {"latency_s", cost.latency_s}, {"bandwidth_bytes_per_s", cost.bandwidth_bytes_per_s}, {"probe", probe}};
  return j.dump();
}

}  // namespace

std::string write_topology_json(const Topology& topology) {
  check_topology(topology, "topology");
  std::string out = std::string("{\n  \"format\": \"") + kFormat + "\",\n  \"version\": " + std::to_string(kVersion) +
                    ",\n  \"ranks\": [\n";
  for (int r = 0; r < topology.num_ranks(); ++r) {
    const RankPlacement& p = topology.ranks[static_cast<std::size_t>(r)];
    nlohmann::ordered_json j = {{"rank", r},
                                {"node", p.node},
                                {"host", p.host},
                                {"cores", p.cores},
                                {"numa_node", p.numa_node < 0 ? json(nullptr) : json(p.numa_node)}};
    out += "    " + j.dump() + (r + 1 < topology.num_ranks() ? ",\n" : "\n");
  }
  out += "  ],\n  \"links\": {";
  const char* separator = "\n";
  for (LinkClass link : kAllLinkClasses) {
    if (!topology.cost(link)) continue;
    out += separator + std::string("    \"") + link_class_name(link) + "\": " + one_line(*topology.cost(link));
    separator = ",\n";
  }
  out += std::string(separator[0] == ',' ? "\n  " : "") + "}";
  if (topology.round_s) out += ",\n  \"round_s\": " + json(*topology.round_s).dump();
  return out + "\n}\n";
}

Topology parse_topology_json(const std::string& text, const std::string& source) {
  const json j = parse_json(text, source);
  const Object root(j, source, "");
  // The format first: a file of another kind gets that said, not a list of its fields.
  check_arg(j.contains("format"),
            source + ": missing field 'format'; expected \"" + kFormat + "\" (not a topology file?)");
  check_arg(root.string("format") == kFormat,
            root.where("format") + " is " + j.at("format").dump() + "; expected \"" + kFormat + "\"");
  check_arg(root.integer("version", 0, std::numeric_limits<int>::max()) == kVersion,
            root.where("version") + " is " + j.at("version").dump() + "; expected " + std::to_string(kVersion) +
                " (the version this build reads)");
  root.only({"format", "version", "ranks", "links", "round_s"});
  Topology t;
  t.ranks = read_ranks(root.array("ranks"), source);
  if (j.contains("links")) read_links(Object(j.at("links"), source, "links"), &t);
  if (j.contains("round_s")) t.round_s = root.number("round_s");
  check_topology(t, source);
  return t;
}

Topology read_topology_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.is_open(), ErrorCode::kIo, path + ": cannot open topology file (" + std::strerror(errno) + ")");
  std::stringstream text;
  text << in.rdbuf();
  check(!in.bad() && !text.fail(), ErrorCode::kIo, path + ": cannot read topology file (" + std::strerror(errno) + ")");
  return parse_topology_json(text.str(), path);
}

}  // namespace switchyard::comm
