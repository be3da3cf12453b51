// The files of placement planning: routing statistics in (what
// `--routing-stats` writes) and placements out. Layouts in docs/placement.md.
#include <cerrno>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "switchyard/layers/placement_plan.hpp"
#include "switchyard/runtime/atomic_file.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {
namespace {

using nlohmann::json;

constexpr const char* kStatsFormat = "switchyard-routing-stats";
constexpr const char* kPlacementFormat = "switchyard-placement";
constexpr int kVersion = 1;
constexpr std::int64_t kMaxInt = std::numeric_limits<int>::max();

// A JSON value of the file and its path in it ("blocks[2].copies"), for
// errors that name the file and the field.
class Field {
 public:
  Field(const json& j, std::string source, std::string path)
      : j_(j), source_(std::move(source)), path_(std::move(path)) {}

  std::string where() const { return source_ + ": field '" + path_ + "'"; }
  const std::string& source() const { return source_; }
  const json& value() const { return j_; }

  Field at(const std::string& key) const {
    check_arg(j_.is_object(), where() + " expected a JSON object, got " + j_.dump());
    const std::string name = path_.empty() ? key : path_ + "." + key;
    check_arg(j_.contains(key), source_ + ": missing field '" + name + "'");
    return Field(j_.at(key), source_, name);
  }
  Field operator[](std::size_t i) const { return Field(j_.at(i), source_, path_ + "[" + std::to_string(i) + "]"); }
  std::int64_t integer(std::int64_t lo, std::int64_t hi) const {
    check_arg(j_.is_number_integer(), where() + " expected an integer, got " + j_.dump());
    const bool too_big = j_.is_number_unsigned() && j_.get<std::uint64_t>() > static_cast<std::uint64_t>(hi);
    const auto x = j_.get<std::int64_t>();
    check_arg(!too_big && x >= lo && x <= hi,
              where() + " is " + j_.dump() + "; expected " + std::to_string(lo) + ".." + std::to_string(hi));
    return x;
  }
  std::string string() const {
    check_arg(j_.is_string(), where() + " expected a string, got " + j_.dump());
    return j_.get<std::string>();
  }
  std::size_t list(std::size_t expected_size) const {
    check_arg(j_.is_array(), where() + " expected a list, got " + j_.dump());
    check_arg(expected_size == kAnySize || j_.size() == expected_size,
              where() + " has " + std::to_string(j_.size()) + " entries; expected " + std::to_string(expected_size));
    return j_.size();
  }
  static constexpr std::size_t kAnySize = std::numeric_limits<std::size_t>::max();

 private:
  const json& j_;
  std::string source_;
  std::string path_;
};

json parse_json(const std::string& text, const std::string& source, const char* expected) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 3, ...": keep what follows the tag.
    // NOTE: json::exception, not only parse_error: a number too large for a
    // double ("1e400") is an out_of_range.406 thrown by the parser.
    std::string what = e.what();
    what = what.substr(what.find(']') == std::string::npos ? 0 : what.find(']') + 2);
    throw Error(ErrorCode::kInvalidArgument, source + ": not valid JSON (" + what + "); expected " + expected);
  }
}

// The format and version first: a file of another kind gets that said, not a list of its fields.
Field check_header(const json& j, const std::string& source, const char* format) {
  const Field root(j, source, "");
  check_arg(j.is_object(), source + ": expected a JSON object, got " + j.dump().substr(0, 40));
  check_arg(j.contains("format"),
            source + ": missing field 'format'; expected \"" + format + "\" (not a " + format + " file?)");
  check_arg(root.at("format").string() == format,
            root.at("format").where() + " is " + j.at("format").dump() + "; expected \"" + format + "\"");
  check_arg(root.at("version").integer(0, kMaxInt) == kVersion,
            root.at("version").where() + " is " + j.at("version").dump() + "; expected " + std::to_string(kVersion) +
                " (the version this build reads)");
  return root;
}

std::string read_text(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  check(in.is_open(), ErrorCode::kIo, path + ": cannot open " + what + " (" + std::strerror(errno) + ")");
  std::stringstream text;
  text << in.rdbuf();
  check(!in.bad() && !text.fail(), ErrorCode::kIo, path + ": cannot read " + what + " (" + std::strerror(errno) + ")");
  return text.str();
}

std::vector<int> int_list(const Field& f, std::size_t size, std::int64_t lo, std::int64_t hi) {
  f.list(size);
  std::vector<int> out;
  for (std::size_t i = 0; i < size; ++i) out.push_back(static_cast<int>(f[i].integer(lo, hi)));
  return out;
}

// Block `b`'s copies: [ranks][experts] integers >= 0, flattened rank-major.
std::vector<std::int64_t> read_copies(const Field& block, std::size_t b, int R, std::int64_t E) {
  check_arg(block.at("block").integer(0, kMaxInt) == static_cast<std::int64_t>(b),
            block.at("block").where() + " is " + block.at("block").value().dump() + "; expected " + std::to_string(b) +
                " (blocks are listed in order, each once)");
  const Field rows = block.at("copies");
  rows.list(static_cast<std::size_t>(R));
  std::vector<std::int64_t> copies;
  for (std::size_t r = 0; r < static_cast<std::size_t>(R); ++r) {
    rows[r].list(static_cast<std::size_t>(E));
    for (std::size_t e = 0; e < static_cast<std::size_t>(E); ++e)
      copies.push_back(rows[r][e].integer(0, std::numeric_limits<std::int64_t>::max()));
  }
  return copies;
}

}  // namespace

RoutingCounts RoutingStatsFile::counts(std::int64_t block) const {
  check_arg(block >= 0 && block < num_blocks(),
            "routing statistics: no block " + std::to_string(block) + "; they have " + std::to_string(num_blocks()));
  RoutingCounts c{.num_ranks = num_ranks, .num_experts = num_experts, .copies = {}};
  const double per_step = steps > 0 ? 1.0 / static_cast<double>(steps) : 0.0;
  for (std::int64_t n : copies[static_cast<std::size_t>(block)]) c.copies.push_back(static_cast<double>(n) * per_step);
  return c;
}

RoutingStatsFile parse_routing_stats_json(const std::string& text, const std::string& source) {
  const json j = parse_json(text, source, "a routing-statistics file");
  const Field root = check_header(j, source, kStatsFormat);
  RoutingStatsFile s;
  s.command = root.at("command").string();
  s.num_ranks = static_cast<int>(root.at("ranks").integer(1, kMaxInt));
  s.num_experts = root.at("experts").integer(1, kMaxInt);
  s.steps = root.at("steps").integer(1, std::numeric_limits<std::int64_t>::max());
  s.node_of_rank = int_list(root.at("node_of_rank"), static_cast<std::size_t>(s.num_ranks), 0, s.num_ranks - 1);
  s.expert_owner = int_list(root.at("expert_owner"), static_cast<std::size_t>(s.num_experts), 0, s.num_ranks - 1);
  const Field blocks = root.at("blocks");
  check_arg(blocks.list(Field::kAnySize) >= 1, blocks.where() + " is empty; expected at least one block");
  for (std::size_t b = 0; b < blocks.value().size(); ++b)
    s.copies.push_back(read_copies(blocks[b], b, s.num_ranks, s.num_experts));
  return s;
}

RoutingStatsFile read_routing_stats_file(const std::string& path) {
  return parse_routing_stats_json(read_text(path, "routing-statistics file"), path);
}

std::string write_placement_json(const PlacementFile& file) {
  check_arg(!file.blocks.empty(), "placement file: no blocks");
  const ExpertHolders& first = file.blocks.front().holders;
  nlohmann::ordered_json blocks = nlohmann::ordered_json::array(), figures = nlohmann::ordered_json::array();
  for (std::size_t b = 0; b < file.blocks.size(); ++b) {
    const BlockPlacement& block = file.blocks[b];
    check_expert_holders(block.holders, "placement file: blocks[" + std::to_string(b) + "].expert_ranks");
    check_arg(block.holders.num_ranks == first.num_ranks && block.holders.num_experts == first.num_experts,
              "placement file: blocks[" + std::to_string(b) + "] differs from block 0 in ranks or experts");
    blocks.push_back({{"block", b}, {"expert_ranks", block.holders.ranks_of_expert}});
    if (!block.has_figures) continue;
    const PlacementFigures& f = block.figures;
    figures.push_back({{"block", b},
                       {"max_load_rows", f.max_load_rows},
                       {"mean_load_rows", f.mean_load_rows},
                       {"same_node_bytes", f.same_node_bytes},
                       {"other_node_bytes", f.other_node_bytes},
                       {"migration_bytes", f.migration_bytes},
                       {"compute_seconds", f.compute_seconds},
                       {"exchange_seconds", f.exchange_seconds},
                       {"migration_seconds", f.migration_seconds},
                       {"step_seconds", f.step_seconds}});
  }
  // One block a line: a file of many experts stays readable and diffable.
  std::string out = std::string("{\n  \"format\": \"") + kPlacementFormat +
                    "\",\n  \"version\": " + std::to_string(kVersion) +
                    ",\n  \"ranks\": " + std::to_string(first.num_ranks) +
                    ",\n  \"experts\": " + std::to_string(first.num_experts) + ",\n  \"blocks\": [\n";
  for (std::size_t b = 0; b < blocks.size(); ++b)
    out += "    " + blocks[b].dump() + (b + 1 < blocks.size() ? ",\n" : "\n");
  const nlohmann::ordered_json model = {{"method", file.method}, {"replicas", file.replicas}, {"blocks", figures}};
  return out + "  ],\n  \"model\": " + model.dump() + "\n}\n";
}

void write_placement_file(const std::string& path, const PlacementFile& file) {
  const std::string text = write_placement_json(file);
  write_file_atomically(path, text.data(), text.size());
}

std::vector<ExpertHolders> parse_placement_json(const std::string& text, const std::string& source,
                                                std::int64_t num_experts, int num_ranks) {
  const json j = parse_json(text, source, "a placement file");
  const Field root = check_header(j, source, kPlacementFormat);
  const Field ranks = root.at("ranks"), experts = root.at("experts");
  check_arg(ranks.integer(1, kMaxInt) == num_ranks,
            ranks.where() + " is " + ranks.value().dump() + "; expected " + std::to_string(num_ranks) + " (the job's)");
  check_arg(
      experts.integer(1, kMaxInt) == num_experts,
      experts.where() + " is " + experts.value().dump() + "; expected " + std::to_string(num_experts) + " (the job's)");
  const Field blocks = root.at("blocks");
  check_arg(blocks.list(Field::kAnySize) >= 1, blocks.where() + " is empty; expected at least one block");
  std::vector<ExpertHolders> out;
  for (std::size_t b = 0; b < blocks.value().size(); ++b) {
    const Field block = blocks[b];
    check_arg(block.at("block").integer(0, kMaxInt) == static_cast<std::int64_t>(b),
              block.at("block").where() + " is " + block.at("block").value().dump() + "; expected " +
                  std::to_string(b) + " (blocks are listed in order, each once)");
    const Field lists = block.at("expert_ranks");
    lists.list(static_cast<std::size_t>(num_experts));
    ExpertHolders h{.num_ranks = num_ranks, .num_experts = num_experts, .ranks_of_expert = {}};
    for (std::size_t e = 0; e < static_cast<std::size_t>(num_experts); ++e) {
      const Field list = lists[e];
      list.list(Field::kAnySize);
      std::vector<int> holders;
      for (std::size_t i = 0; i < list.value().size(); ++i)
        holders.push_back(static_cast<int>(list[i].integer(std::numeric_limits<int>::min(), kMaxInt)));
      h.ranks_of_expert.push_back(std::move(holders));
    }
    check_expert_holders(h, source + ": blocks[" + std::to_string(b) + "].expert_ranks");
    out.push_back(std::move(h));
  }
  return out;
}

ExpertHolders read_placement_file(const std::string& path, std::int64_t num_experts, int num_ranks,
                                  std::int64_t block) {
  std::vector<ExpertHolders> blocks =
      parse_placement_json(read_text(path, "placement file"), path, num_experts, num_ranks);
  check_arg(block >= 0 && block < static_cast<std::int64_t>(blocks.size()),
            path + ": field 'blocks' has no block " + std::to_string(block) + " (it lists " +
                std::to_string(blocks.size()) + "); expected one placement per block of the model");
  return std::move(blocks[static_cast<std::size_t>(block)]);
}

}  // namespace switchyard::layers
