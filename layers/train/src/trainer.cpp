#include "switchyard/train/trainer.hpp"

#include <algorithm>
#include <numeric>
#include <utility>

#include "switchyard/layers/link_traffic.hpp"
#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/partition.hpp"
#include "switchyard/train/train_checkpoint.hpp"

namespace switchyard::train {
namespace {

constexpr std::int64_t kEvalChunk = 2048;  // examples per forward during evaluation

// Sizes of the routing counts of an evaluation: counts[(l * E + e) * V + v]
// is how many slots of block l went to expert e for input character v, and
// char_tokens[v] how many tokens had input character v.
struct RouteCounts {
  const std::vector<std::int64_t>& counts;
  const std::vector<std::int64_t>& char_tokens;
  std::int64_t num_blocks, num_experts, vocab_size;
};

// Expert e of block l: its share of the block's routed slots and its
// `top_inputs` most specialised input characters. `per_char` counts the
// block's slots per character, `all` every slot of the block.
ExpertSpecialisation specialisation_of(const RouteCounts& rc, std::int64_t l, std::int64_t e,
                                       const std::vector<std::int64_t>& per_char, std::int64_t all, int top_inputs) {
  const std::int64_t E = rc.num_experts, V = rc.vocab_size;
  ExpertSpecialisation s;
  s.block = l;
  s.expert = e;
  const std::int64_t* row = rc.counts.data() + (l * E + e) * V;
  std::vector<std::int32_t> order(static_cast<std::size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  const std::int64_t mine = std::accumulate(row, row + V, std::int64_t{0});
  s.token_share = all > 0 ? static_cast<double>(mine) / static_cast<double>(all) : 0.0;
  // NOTE: ranked by the share of a character's slots this expert takes, not
  // by raw count, which would list the common letters for every expert.
  // Characters under 0.5% of the expert's slots are left out as noise.
  const auto share = [&](std::int32_t v) {
    return static_cast<double>(row[v]) / static_cast<double>(std::max<std::int64_t>(1, per_char[v]));
  };
  const std::int64_t support = std::max<std::int64_t>(1, mine / 200);
  std::erase_if(order, [&](std::int32_t v) { return row[v] < support; });
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return share(a) > share(b); });
  for (int i = 0; i < top_inputs && i < static_cast<int>(order.size()); ++i) {
    const std::int32_t v = order[static_cast<std::size_t>(i)];
    // Over the character's tokens (not slots, which top-p varies per token),
    // so an expert serving every occurrence of a character shows 100%.
    s.top_inputs.push_back({v, row[v],
                            static_cast<double>(row[v]) / static_cast<double>(std::max<std::int64_t>(
                                                              1, rc.char_tokens[static_cast<std::size_t>(v)]))});
  }
  return s;
}

// Every expert's specialisation, block by block, from the summed counts.
std::vector<ExpertSpecialisation> specialisations(const RouteCounts& rc, int top_inputs) {
  const std::int64_t L = rc.num_blocks, E = rc.num_experts, V = rc.vocab_size;
  std::vector<ExpertSpecialisation> out;
  for (std::int64_t l = 0; l < L; ++l) {
    std::vector<std::int64_t> per_char(static_cast<std::size_t>(V), 0);
    std::int64_t all = 0;
    for (std::int64_t e = 0; e < E; ++e)
      for (std::int64_t v = 0; v < V; ++v) {
        per_char[static_cast<std::size_t>(v)] += rc.counts[static_cast<std::size_t>((l * E + e) * V + v)];
        all += rc.counts[static_cast<std::size_t>((l * E + e) * V + v)];
      }
    for (std::int64_t e = 0; e < E; ++e) out.push_back(specialisation_of(rc, l, e, per_char, all, top_inputs));
  }
  return out;
}

// Adds `v` to `sum` elementwise, sizing `sum` on first use.
void add_to(const std::vector<std::int64_t>& v, std::vector<std::int64_t>* sum) {
  if (sum->size() < v.size()) sum->resize(v.size(), 0);
  for (std::size_t i = 0; i < v.size(); ++i) (*sum)[i] += v[i];
}

}  // namespace

Trainer::Trainer(const TrainConfig& config, comm::Communicator& comm, const TrainTopology& where)
    : config_(config), comm_(comm) {
  check_router(config_);
  const formats::ModelConfig& m = config_.model;
  check_arg(m.num_experts >= comm.size(),
            config_.source + ": field 'model.experts' (" + std::to_string(m.num_experts) +
                ") must be at least the number of ranks (" + std::to_string(comm.size()) +
                "): experts are sharded over ranks (run a dense, 1-expert model on one rank)");
  corpus_ = load_text_corpus(config_.data_dir, config_.val_fraction, config_.min_bytes);
  check_arg(corpus_.val_begin > 2 * config_.context, config_.source + ": field 'model.context' (" +
                                                         std::to_string(config_.context) +
                                                         ") is too long for the training text");
  placements_ = where.placements;
  if (placements_.empty()) placements_.emplace_back(m.num_experts, comm.size());
  CharLmConfig lm{.moe = m,
                  .vocab_size = corpus_.vocab_size(),
                  .context = config_.context,
                  .embed_dim = config_.embed_dim,
                  .seed = config_.seed,
                  .moe_options = {.capacity = {config_.capacity_factor},
                                  .experts = {.weight_type = config_.dtype == "bf16" ? kernels::WeightType::kBF16
                                                                                     : kernels::WeightType::kF32},
                                  .aux_loss_coef = config_.aux_loss_coef,
                                  .z_loss_coef = config_.z_loss_coef,
                                  .topology_loss_coef = config_.routing.topology_loss,
                                  .entropy_loss_coef = config_.entropy_loss_coef,
                                  .noisy_gating = {.enabled = config_.router == "noisy-top-k",
                                                   .importance_coef = config_.importance_loss_coef,
                                                   .load_coef = config_.load_loss_coef},
                                  .exchange = {}},
                  .top_p = static_cast<float>(config_.top_p),
                  .routing = config_.routing,
                  .topology = where.topology,
                  .exchange = where.exchange,
                  .row_bytes = layers::wire_row_bytes(m.hidden_size, where.wire_bf16)};
  model_ = std::make_unique<CharLm>(lm, placements_, comm.rank());
  optimizer_ = std::make_unique<Optimizer>(config_.optimizer, model_->parameter_ptrs());
}

Trainer::~Trainer() = default;

StepReport Trainer::train_step() {
  const std::int64_t B = config_.batch_tokens, C = config_.context;
  const std::vector<std::int64_t> pos = sample_positions(corpus_, C, config_.seed, step_, comm_.rank(), B);
  std::vector<std::int32_t> contexts(static_cast<std::size_t>(B * C)), targets(static_cast<std::size_t>(B));
  gather_examples(corpus_, pos.data(), B, C, contexts.data(), targets.data());

  // Every rank has B tokens, so the mean over all ranks' tokens scales each
  // local gradient by 1 / (B * R).
  const std::int64_t global = B * comm_.size();
  model_->zero_grad();
  BatchResult r = model_->forward_backward(comm_, contexts.data(), targets.data(), B,
                                           static_cast<float>(1.0 / static_cast<double>(global)),
                                           static_cast<std::uint64_t>(step_));
  const std::vector<Parameter*> params = model_->parameter_ptrs();
  allreduce_replicated_grads(comm_, params);

  StepReport rep;
  rep.grad_norm = global_grad_norm(comm_, params);
  clip_grads(params, rep.grad_norm, config_.grad_clip);
  rep.lr = learning_rate(config_.optimizer, step_);
  optimizer_->step(rep.lr);
  for (std::int64_t l = 0; l < model_->num_blocks(); ++l) {
    const layers::ForwardStats& s = r.stats[static_cast<std::size_t>(l)];
    if (config_.bias_update_speed > 0) model_->moe(l).update_selection_bias(s, config_.bias_update_speed);
    rep.aux_loss += config_.aux_loss_coef * s.aux_loss + config_.z_loss_coef * s.z_loss +
                    config_.routing.topology_loss * s.topology_loss + config_.entropy_loss_coef * s.entropy_loss +
                    config_.importance_loss_coef * s.importance_loss + config_.load_loss_coef * s.load_loss;
    rep.experts_per_token.push_back(s.mean_experts_per_token());
    add_to(s.experts_per_token, &rep.experts_histogram);
    rep.topology_loss += s.topology_loss;
    const double total = static_cast<double>(std::accumulate(s.expert_load.begin(), s.expert_load.end(), 0LL));
    const double mx = static_cast<double>(*std::max_element(s.expert_load.begin(), s.expert_load.end()));
    const double mean = total / static_cast<double>(s.expert_load.size());
    rep.load_imbalance.push_back(mean > 0 ? mx / mean : 0.0);
    rep.expert_load.push_back(s.expert_load);
  }
  double loss = r.loss_sum;
  comm_.allreduce_sum(&loss, 1);
  ++step_;
  rep.step = step_;
  rep.loss = loss / static_cast<double>(global);
  rep.tokens = global;
  rep.traffic = std::move(r.traffic);
  return rep;
}

EvalResult Trainer::evaluate(std::int64_t max_tokens, bool specialisation, int top_inputs) {
  const std::int64_t C = config_.context, V = corpus_.vocab_size();
  const std::int64_t E = config_.model.num_experts, K = config_.model.top_k, L = model_->num_blocks();
  const std::int64_t num_val = corpus_.size() - corpus_.val_begin;
  const std::int64_t n = max_tokens > 0 ? std::min(max_tokens, num_val) : num_val;
  const int R = comm_.size(), me = comm_.rank();
  // Evenly spaced held-out positions; each rank takes a contiguous block.
  const BlockPartition blocks(n, R);
  const std::int64_t begin = blocks.first(me), end = begin + blocks.count(me);
  std::vector<std::int64_t> pos;
  for (std::int64_t i = begin; i < end; ++i) pos.push_back(corpus_.val_begin + (i * num_val) / n);
  const std::int64_t most = blocks.max_count();
  const std::int64_t num_chunks = (most + kEvalChunk - 1) / kEvalChunk;

  std::vector<std::int64_t> counts(specialisation ? static_cast<std::size_t>(L * E * V) : 0, 0);
  std::vector<std::int64_t> char_tokens(specialisation ? static_cast<std::size_t>(V) : 0, 0);
  double loss = 0.0, gate_mass = 0.0, gate_mass_top_k = 0.0;  // stats: sums over all ranks already
  EvalResult out;
  out.traffic.send_rows.assign(static_cast<std::size_t>(R), 0);  // sized even when no chunk ran
  out.traffic.recv_rows.assign(static_cast<std::size_t>(R), 0);
  std::vector<std::int32_t> contexts, targets;
  for (std::int64_t chunk = 0; chunk < num_chunks; ++chunk) {
    // NOTE: every rank runs every chunk (some with zero rows): the MoE
    // forward is collective.
    const std::int64_t lo = std::min<std::int64_t>(chunk * kEvalChunk, end - begin);
    const std::int64_t hi = std::min<std::int64_t>(lo + kEvalChunk, end - begin);
    const std::int64_t T = hi - lo;
    contexts.resize(static_cast<std::size_t>(T * C));
    targets.resize(static_cast<std::size_t>(T));
    gather_examples(corpus_, pos.data() + lo, T, C, contexts.data(), targets.data());
    BatchResult r = model_->evaluate(comm_, contexts.data(), targets.data(), T, specialisation);
    loss += r.loss_sum;
    for (const layers::ForwardStats& b : r.stats) {
      gate_mass += b.gate_mass;
      gate_mass_top_k += b.gate_mass_top_k;
      add_to(b.experts_per_token, &out.experts_histogram);
    }
    for (const layers::StepTraffic& b : r.traffic) out.traffic += b;
    if (!specialisation) continue;
    for (std::int64_t t = 0; t < T; ++t)
      ++char_tokens[static_cast<std::size_t>(contexts[static_cast<std::size_t>(t * C + C - 1)])];
    for (std::int64_t l = 0; l < L; ++l)
      for (std::int64_t t = 0; t < T; ++t)
        for (std::int64_t j = 0; j < K; ++j) {
          const std::int32_t e = r.expert_idx[static_cast<std::size_t>(l)][static_cast<std::size_t>(t * K + j)];
          if (e < 0) continue;  // a top-p token's unused slot
          ++counts[static_cast<std::size_t>((l * E + e) * V + contexts[static_cast<std::size_t>(t * C + C - 1)])];
        }
  }
  comm_.allreduce_sum(&loss, 1);
  out.tokens = n;
  out.loss = loss / static_cast<double>(n);
  out.gate_mass_kept = gate_mass_top_k > 0 ? gate_mass / gate_mass_top_k : 1.0;
  if (!specialisation) return out;

  comm_.allreduce_sum(counts.data(), counts.size());
  comm_.allreduce_sum(char_tokens.data(), char_tokens.size());
  out.experts = specialisations(
      {.counts = counts, .char_tokens = char_tokens, .num_blocks = L, .num_experts = E, .vocab_size = V}, top_inputs);
  return out;
}

void Trainer::save(const std::string& dir) {
  save_train_checkpoint(comm_, dir, *model_, *optimizer_,
                        TrainState{.step = step_, .model_json = config_.model_json, .config_text = config_.text});
}

void Trainer::resume(const std::string& dir) {
  step_ = load_train_checkpoint(dir, *model_, *optimizer_,
                                TrainState{.step = 0, .model_json = config_.model_json, .config_text = config_.text});
}

}  // namespace switchyard::train
