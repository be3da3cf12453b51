// The placement model and its minimiser (docs/placement.md).
#include "switchyard/layers/placement_plan.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <optional>
#include <string>

#include "switchyard/runtime/error.hpp"

namespace switchyard::layers {

std::vector<std::int64_t> ExpertHolders::experts_per_rank() const {
  std::vector<std::int64_t> held(static_cast<std::size_t>(num_ranks), 0);
  for (const std::vector<int>& ranks : ranks_of_expert)
    for (int r : ranks) ++held[static_cast<std::size_t>(r)];
  return held;
}

std::int64_t ExpertHolders::total_copies() const {
  std::int64_t n = 0;
  for (const std::vector<int>& ranks : ranks_of_expert) n += static_cast<std::int64_t>(ranks.size());
  return n;
}

bool ExpertHolders::holds(std::int64_t expert, int rank) const {
  const std::vector<int>& ranks = ranks_of_expert[static_cast<std::size_t>(expert)];
  return std::binary_search(ranks.begin(), ranks.end(), rank);
}

void check_expert_holders(const ExpertHolders& h, const std::string& what) {
  check_arg(h.num_ranks >= 1, what + ": " + std::to_string(h.num_ranks) + " ranks; expected >= 1");
  check_arg(h.num_experts >= 1, what + ": " + std::to_string(h.num_experts) + " experts; expected >= 1");
  check_arg(static_cast<std::int64_t>(h.ranks_of_expert.size()) == h.num_experts,
            what + ": " + std::to_string(h.ranks_of_expert.size()) + " lists; expected one per expert (" +
                std::to_string(h.num_experts) + ")");
  for (std::size_t e = 0; e < h.ranks_of_expert.size(); ++e) {
    const std::vector<int>& ranks = h.ranks_of_expert[e];
    const std::string where = what + "[" + std::to_string(e) + "]";
    check_arg(!ranks.empty(), where + ": expert " + std::to_string(e) + " has no holder; expected at least one rank");
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      check_arg(ranks[i] >= 0 && ranks[i] < h.num_ranks,
                where + ": rank " + std::to_string(ranks[i]) + " is outside 0.." + std::to_string(h.num_ranks - 1));
      check_arg(i == 0 || ranks[i] != ranks[i - 1],
                where + ": rank " + std::to_string(ranks[i]) + " is listed twice; expected distinct ranks");
      check_arg(i == 0 || ranks[i] > ranks[i - 1], where + ": ranks are not ascending; expected them sorted");
    }
  }
}

ExpertHolders single_holders(std::span<const int> owner_of_expert, int num_ranks) {
  ExpertHolders h{
      .num_ranks = num_ranks, .num_experts = static_cast<std::int64_t>(owner_of_expert.size()), .ranks_of_expert = {}};
  for (int owner : owner_of_expert) h.ranks_of_expert.push_back({owner});
  check_expert_holders(h, "expert owners");
  return h;
}

namespace {

enum LinkRank { kSelfLink = 0, kSameNodeLink = 1, kOtherNodeLink = 2 };

int link_rank(int from, int to, std::span<const int> node_of_rank) {
  if (from == to) return kSelfLink;
  if (node_of_rank.empty()) return kSameNodeLink;
  return node_of_rank[static_cast<std::size_t>(from)] == node_of_rank[static_cast<std::size_t>(to)] ? kSameNodeLink
                                                                                                    : kOtherNodeLink;
}

}  // namespace

std::vector<int> cheapest_holders(const ExpertHolders& h, std::int64_t expert, int rank,
                                  std::span<const int> node_of_rank) {
  const std::vector<int>& ranks = h.ranks_of_expert.at(static_cast<std::size_t>(expert));
  int best = kOtherNodeLink;
  for (int r : ranks) best = std::min(best, link_rank(rank, r, node_of_rank));
  std::vector<int> chosen;
  for (int r : ranks)
    if (link_rank(rank, r, node_of_rank) == best) chosen.push_back(r);
  return chosen;
}

int holder_for_token(const ExpertHolders& h, std::int64_t expert, int rank, std::int64_t token_idx,
                     std::span<const int> node_of_rank) {
  return pick_holder(h.ranks_of_expert.at(static_cast<std::size_t>(expert)), rank, token_idx, node_of_rank);
}

int pick_holder(std::span<const int> holders, int rank, std::int64_t token_idx, std::span<const int> node_of_rank) {
  if (holders.size() == 1) return holders.front();
  int best = kOtherNodeLink;
  std::int64_t n = 0;
  for (int r : holders) {
    const int link = link_rank(rank, r, node_of_rank);
    if (link < best) best = link, n = 0;
    n += link == best ? 1 : 0;
  }
  std::int64_t pick = token_idx % n;
  for (int r : holders)
    if (link_rank(rank, r, node_of_rank) == best && pick-- == 0) return r;
  return holders.front();
}

std::vector<double> RoutingCounts::expert_loads() const {
  std::vector<double> loads(static_cast<std::size_t>(num_experts), 0.0);
  for (int r = 0; r < num_ranks; ++r)
    for (std::int64_t e = 0; e < num_experts; ++e) loads[static_cast<std::size_t>(e)] += at(r, e);
  return loads;
}

void check_cost_model(const PlacementCostModel& m, int num_ranks) {
  check_arg(static_cast<int>(m.node_of_rank.size()) == num_ranks,
            "node_of_rank has " + std::to_string(m.node_of_rank.size()) + " entries; expected one per rank (" +
                std::to_string(num_ranks) + ")");
  for (int node : m.node_of_rank)
    check_arg(node >= 0, "node_of_rank holds " + std::to_string(node) + "; expected >= 0");
  const std::array<std::pair<const char*, double>, 3> costs = {
      {{"row_seconds", m.row_seconds},
       {"same_node_seconds_per_byte", m.same_node_seconds_per_byte},
       {"other_node_seconds_per_byte", m.other_node_seconds_per_byte}}};
  for (const auto& [name, value] : costs)
    check_arg(std::isfinite(value) && value >= 0,
              std::string(name) + " is " + std::to_string(value) + "; expected a finite number >= 0");
  check_arg(m.row_bytes >= 0, "row_bytes is " + std::to_string(m.row_bytes) + "; expected >= 0");
  check_arg(m.expert_bytes >= 0, "expert_bytes is " + std::to_string(m.expert_bytes) + "; expected >= 0");
  check_arg(m.migration_steps >= 1, "migration_steps is " + std::to_string(m.migration_steps) + "; expected >= 1");
}

namespace {

void check_shapes(const RoutingCounts& counts, const ExpertHolders& a, const ExpertHolders& b) {
  check_arg(counts.num_ranks >= 1 && counts.num_experts >= 1 &&
                counts.copies.size() == static_cast<std::size_t>(counts.num_ranks * counts.num_experts),
            "routing counts: " + std::to_string(counts.copies.size()) + " entries for " +
                std::to_string(counts.num_ranks) + " ranks x " + std::to_string(counts.num_experts) + " experts");
  for (const ExpertHolders* h : {&a, &b})
    check_arg(h->num_ranks == counts.num_ranks && h->num_experts == counts.num_experts,
              "placement of " + std::to_string(h->num_experts) + " experts on " + std::to_string(h->num_ranks) +
                  " ranks; expected " + std::to_string(counts.num_experts) + " on " + std::to_string(counts.num_ranks) +
                  ", as the routing counts");
}

// Per rank: rows computed, and rows sent plus received over each link class
// by the dispatch (the combine sends the same rows back).
struct RankTraffic {
  std::vector<double> rows;
  std::vector<std::array<double, 3>> rows_in_out;
  std::array<double, 3> rows_sent{};  // the job's dispatch rows per class
};

RankTraffic route(const RoutingCounts& counts, const ExpertHolders& placement, std::span<const int> node_of_rank) {
  const int R = counts.num_ranks;
  RankTraffic t{.rows = std::vector<double>(static_cast<std::size_t>(R), 0.0),
                .rows_in_out = std::vector<std::array<double, 3>>(static_cast<std::size_t>(R))};
  std::vector<int> chosen;
  for (std::int64_t e = 0; e < counts.num_experts; ++e) {
    const std::vector<int>& ranks = placement.ranks_of_expert[static_cast<std::size_t>(e)];
    for (int r = 0; r < R; ++r) {
      const double copies = counts.at(r, e);
      if (copies == 0) continue;
      int best = kOtherNodeLink;
      for (int h : ranks) best = std::min(best, link_rank(r, h, node_of_rank));
      chosen.clear();
      for (int h : ranks)
        if (link_rank(r, h, node_of_rank) == best) chosen.push_back(h);
      const double share = copies / static_cast<double>(chosen.size());
      for (int h : chosen) {
        t.rows[static_cast<std::size_t>(h)] += share;
        if (h == r) continue;
        t.rows_in_out[static_cast<std::size_t>(r)][best] += share;
        t.rows_in_out[static_cast<std::size_t>(h)][best] += share;
        t.rows_sent[best] += share;
      }
    }
  }
  return t;
}

std::int64_t migration_copies(const ExpertHolders& placement, const ExpertHolders& current) {
  std::int64_t n = 0;
  for (std::int64_t e = 0; e < placement.num_experts; ++e)
    for (int r : placement.ranks_of_expert[static_cast<std::size_t>(e)]) n += current.holds(e, r) ? 0 : 1;
  return n;
}

}  // namespace

namespace {

// The figures, and the spread the search breaks ties by: Σ over ranks of
// (compute seconds)² + (exchange seconds)². Many placements share the
// busiest rank's time; among them the one with the lower spread leaves the
// next step room to lower it.
PlacementFigures figures(const RoutingCounts& counts, const ExpertHolders& placement, const ExpertHolders& current,
                         const PlacementCostModel& model, double* spread) {
  const RankTraffic t = route(counts, placement, model.node_of_rank);
  // Each dispatched row comes back in the combine: bytes on a link are twice the rows.
  const double row_bytes = static_cast<double>(model.row_bytes);
  PlacementFigures f;
  f.max_load_rows = *std::max_element(t.rows.begin(), t.rows.end());
  f.mean_load_rows = std::accumulate(t.rows.begin(), t.rows.end(), 0.0) / counts.num_ranks;
  f.same_node_bytes = 2 * t.rows_sent[kSameNodeLink] * row_bytes;
  f.other_node_bytes = 2 * t.rows_sent[kOtherNodeLink] * row_bytes;
  f.migration_bytes = migration_copies(placement, current) * model.expert_bytes;
  f.compute_seconds = f.max_load_rows * model.row_seconds;
  *spread = 0;
  for (int r = 0; r < counts.num_ranks; ++r) {
    const std::array<double, 3>& in_out = t.rows_in_out[static_cast<std::size_t>(r)];
    const double exchange = 2 * row_bytes *
                            (in_out[kSameNodeLink] * model.same_node_seconds_per_byte +
                             in_out[kOtherNodeLink] * model.other_node_seconds_per_byte);
    const double compute = t.rows[static_cast<std::size_t>(r)] * model.row_seconds;
    f.exchange_seconds = std::max(f.exchange_seconds, exchange);
    *spread += compute * compute + exchange * exchange;
  }
  f.migration_seconds = static_cast<double>(f.migration_bytes) * model.other_node_seconds_per_byte /
                        static_cast<double>(model.migration_steps);
  f.step_seconds = f.compute_seconds + f.exchange_seconds + f.migration_seconds;
  return f;
}

}  // namespace

PlacementFigures model_placement(const RoutingCounts& counts, const ExpertHolders& placement,
                                 const ExpertHolders& current, const PlacementCostModel& model) {
  check_expert_holders(placement, "placement");
  check_expert_holders(current, "current placement");
  check_shapes(counts, placement, current);
  check_cost_model(model, counts.num_ranks);
  double spread = 0;
  return figures(counts, placement, current, model, &spread);
}

std::int64_t max_experts_per_rank(std::int64_t num_experts, int num_ranks, std::int64_t replicas) {
  return (num_experts + replicas + num_ranks - 1) / num_ranks;
}

namespace {

void add_holder(ExpertHolders* h, std::int64_t expert, int rank) {
  std::vector<int>& ranks = h->ranks_of_expert[static_cast<std::size_t>(expert)];
  ranks.insert(std::upper_bound(ranks.begin(), ranks.end(), rank), rank);
}

void remove_holder(ExpertHolders* h, std::int64_t expert, int rank) {
  std::vector<int>& ranks = h->ranks_of_expert[static_cast<std::size_t>(expert)];
  ranks.erase(std::find(ranks.begin(), ranks.end(), rank));
}

// The search state: the placement, copies per rank and its modelled time.
class Search {
 public:
  // `per_node`: also try a copy in every node at once when adding replicas.
  Search(const RoutingCounts& counts, const ExpertHolders& current, const PlacementOptions& options, bool per_node)
      : per_node_(per_node),
        counts_(counts),
        current_(current),
        options_(options),
        cap_(max_experts_per_rank(counts.num_experts, counts.num_ranks, options.replicas)) {}

  // What the search minimises: the modelled step, then the spread.
  struct Score {
    double step = INFINITY, spread = INFINITY;
    bool better_than(const Score& o) const {
      if (step < o.step * (1 - kMinGain)) return true;
      return step <= o.step * (1 + kMinGain) && spread < o.spread * (1 - kMinGain);
    }
  };

  void start() {
    // One copy per expert, on the first of its current holders; a rank over
    // the limit gives its last experts to the emptiest ranks.
    placement_ = current_;
    for (std::vector<int>& ranks : placement_.ranks_of_expert) ranks.resize(1);
    held_ = placement_.experts_per_rank();
    for (std::int64_t e = counts_.num_experts - 1; e >= 0; --e) {
      const int r = placement_.ranks_of_expert[static_cast<std::size_t>(e)][0];
      if (held(r) <= cap_) continue;
      const int to = static_cast<int>(std::min_element(held_.begin(), held_.end()) - held_.begin());
      move(e, r, to);
    }
    // An empty rank takes the last expert of the fullest one, while that has two.
    for (auto empty = std::find(held_.begin(), held_.end(), 0); empty != held_.end();
         empty = std::find(held_.begin(), held_.end(), 0)) {
      const int from = static_cast<int>(std::max_element(held_.begin(), held_.end()) - held_.begin());
      if (held(from) < 2) break;
      std::int64_t e = counts_.num_experts - 1;
      while (!placement_.holds(e, from)) --e;
      move(e, from, static_cast<int>(empty - held_.begin()));
    }
    score_ = evaluate();
  }

  // Up to `replicas` extra copies, each step where it shortens the model
  // most: one copy on one rank, or (under the replica rule a node's tokens
  // stay with the node's copy, so one copy seldom unloads the busiest rank)
  // one copy in every node that has none yet.
  void add_replicas() {
    for (std::int64_t left = options_.replicas; left > 0;) {
      const bool must_fill = std::find(held_.begin(), held_.end(), 0) != held_.end();
      std::vector<std::pair<std::int64_t, int>> best_step;
      Score best = must_fill ? Score{} : score_;
      const auto consider = [&](const std::vector<std::pair<std::int64_t, int>>& step) {
        for (const auto& [e, r] : step) add_holder(&placement_, e, r);
        const Score s = evaluate();
        for (const auto& [e, r] : step) remove_holder(&placement_, e, r);
        if (s.better_than(best) || (must_fill && best_step.empty())) best = s, best_step = step;
      };
      for (std::int64_t e = 0; e < counts_.num_experts; ++e) {
        for (int r = 0; r < counts_.num_ranks; ++r)
          if (!placement_.holds(e, r) && held(r) < cap_ && (!must_fill || held(r) == 0)) consider({{e, r}});
        const std::vector<std::pair<std::int64_t, int>> spread = copy_per_node(e);
        if (per_node_ && !must_fill && spread.size() > 1 && static_cast<std::int64_t>(spread.size()) <= left)
          consider(spread);
      }
      if (best_step.empty()) return;
      for (const auto& [e, r] : best_step) {
        add_holder(&placement_, e, r);
        ++held_[static_cast<std::size_t>(r)];
      }
      left -= static_cast<std::int64_t>(best_step.size());
      score_ = best;
    }
  }

  // For every node without a copy of `e`: its rank with the fewest copies
  // (below the limit), or nothing when some such node has no room.
  std::vector<std::pair<std::int64_t, int>> copy_per_node(std::int64_t e) const {
    const std::vector<int>& node = options_.model.node_of_rank;
    const int N = node.empty() ? 1 : *std::max_element(node.begin(), node.end()) + 1;
    std::vector<char> has(static_cast<std::size_t>(N), 0);
    for (int r : placement_.ranks_of_expert[static_cast<std::size_t>(e)]) has[node_at(r)] = 1;
    std::vector<std::pair<std::int64_t, int>> out;
    for (int n = 0; n < N; ++n) {
      if (has[static_cast<std::size_t>(n)]) continue;
      int pick = -1;
      for (int r = 0; r < counts_.num_ranks; ++r)
        if (static_cast<int>(node_at(r)) == n && held(r) < cap_ && (pick < 0 || held(r) < held(pick))) pick = r;
      if (pick < 0) return {};
      out.emplace_back(e, pick);
    }
    return out;
  }

  std::size_t node_at(int r) const {
    const std::vector<int>& node = options_.model.node_of_rank;
    return node.empty() ? 0 : static_cast<std::size_t>(node[static_cast<std::size_t>(r)]);
  }

  // Steepest descent over moves (a copy to a rank without it) and swaps
  // (two copies trade ranks), until no step shortens the model.
  void improve() {
    for (int round = 0; round < kMaxRounds; ++round) {
      Step best{.score = score_};
      for (std::int64_t e = 0; e < counts_.num_experts; ++e)
        for (int a : std::vector<int>(placement_.ranks_of_expert[static_cast<std::size_t>(e)])) {
          consider_moves(e, a, &best);
          consider_swaps(e, a, &best);
        }
      if (best.e < 0) return;
      move(best.e, best.a, best.b);
      if (best.f >= 0) move(best.f, best.b, best.a);
      score_ = best.score;
    }
  }

  const ExpertHolders& placement() const { return placement_; }
  const Score& score() const { return score_; }

 private:
  static constexpr double kMinGain = 1e-9;  // relative: ignores rounding noise
  static constexpr int kMaxRounds = 1000;

  struct Step {
    Score score;
    std::int64_t e = -1, f = -1;  // e moves a -> b; f (when >= 0) moves b -> a
    int a = -1, b = -1;
  };

  std::int64_t held(int r) const { return held_[static_cast<std::size_t>(r)]; }

  void move(std::int64_t e, int from, int to) {
    remove_holder(&placement_, e, from);
    add_holder(&placement_, e, to);
    --held_[static_cast<std::size_t>(from)];
    ++held_[static_cast<std::size_t>(to)];
  }

  Score evaluate() const {
    Score s;
    s.step = figures(counts_, placement_, current_, options_.model, &s.spread).step_seconds;
    return s;
  }

  void consider_moves(std::int64_t e, int a, Step* best) {
    if (held(a) <= 1) return;
    for (int b = 0; b < counts_.num_ranks; ++b) {
      if (placement_.holds(e, b) || held(b) >= cap_) continue;
      move(e, a, b);
      const Score s = evaluate();
      move(e, b, a);
      if (s.better_than(best->score)) *best = Step{.score = s, .e = e, .a = a, .b = b};
    }
  }

  void consider_swaps(std::int64_t e, int a, Step* best) {
    for (std::int64_t f = e + 1; f < counts_.num_experts; ++f)
      for (int b : std::vector<int>(placement_.ranks_of_expert[static_cast<std::size_t>(f)])) {
        if (b == a || placement_.holds(e, b) || placement_.holds(f, a)) continue;
        move(e, a, b);
        move(f, b, a);
        const Score s = evaluate();
        move(f, a, b);
        move(e, b, a);
        if (s.better_than(best->score)) *best = Step{.score = s, .e = e, .f = f, .a = a, .b = b};
      }
  }

  bool per_node_ = false;
  const RoutingCounts& counts_;
  const ExpertHolders& current_;
  const PlacementOptions& options_;
  const std::int64_t cap_;
  ExpertHolders placement_;
  std::vector<std::int64_t> held_;
  Score score_;
};

}  // namespace

void check_replicas(std::int64_t num_experts, int num_ranks, std::int64_t replicas) {
  check_arg(replicas >= 0, "replicas is " + std::to_string(replicas) + "; expected >= 0");
  check_arg(num_experts + replicas >= num_ranks,
            "replicas is " + std::to_string(replicas) + ": " + std::to_string(num_experts + replicas) +
                " copies cannot give each of " + std::to_string(num_ranks) +
                " ranks one; expected >= " + std::to_string(num_ranks - num_experts));
  check_arg(replicas <= num_experts * (num_ranks - 1),
            "replicas is " + std::to_string(replicas) + "; expected at most " +
                std::to_string(num_experts * (num_ranks - 1)) + " (every expert on every rank)");
}

ExpertHolders plan_placement(const RoutingCounts& counts, const ExpertHolders& current,
                             const PlacementOptions& options) {
  check_expert_holders(current, "current placement");
  check_shapes(counts, current, current);
  check_cost_model(options.model, counts.num_ranks);
  check_replicas(counts.num_experts, counts.num_ranks, options.replicas);
  // Two searches, the replicas added one by one or also a node at a time:
  // neither greedy order wins on every trace, so the better result is kept.
  std::optional<Search> best;
  for (bool per_node : {false, true}) {
    Search search(counts, current, options, per_node);
    search.start();
    search.add_replicas();
    search.improve();
    if (!best || search.score().better_than(best->score())) best.emplace(std::move(search));
  }
  return best->placement();
}

}  // namespace switchyard::layers
