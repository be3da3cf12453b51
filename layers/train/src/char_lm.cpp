#include "switchyard/train/char_lm.hpp"

#include <algorithm>
#include <cmath>

#include "dense_ops.hpp"
#include "seeded_rng.hpp"
#include "switchyard/layers/link_traffic.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::train {
namespace {

// Uniform values with standard deviation `std`, from a stream keyed by
// (seed, key): the key names the tensor (and the expert by its global
// index), so nothing depends on which rank builds it.
std::vector<float> init_uniform(std::uint64_t seed, const std::string& key, std::int64_t n, double std) {
  detail::SeededRng rng(detail::combine(seed, detail::hash_name(key)));
  const double a = std * std::sqrt(3.0);
  std::vector<float> out(static_cast<std::size_t>(n));
  for (auto& v : out) v = static_cast<float>((2.0 * rng.uniform() - 1.0) * a);
  return out;
}

layers::MlpWeights init_mlp(std::uint64_t seed, const std::string& key, std::int64_t H, std::int64_t I) {
  layers::MlpWeights w;
  w.hidden = H;
  w.inter = I;
  w.gate_up = init_uniform(seed, key + ".gate_up", 2 * I * H, 1.0 / std::sqrt(static_cast<double>(H)));
  // NOTE: a small down projection keeps each block's residual update small at
  // the start, so the stack begins close to the identity.
  w.down = init_uniform(seed, key + ".down", H * I, 0.5 / std::sqrt(static_cast<double>(I)));
  return w;
}

}  // namespace

struct CharLm::Activations {
  std::vector<float> x0;  // [T, C*D] concatenated embeddings
  std::vector<float> h;   // [T, H] residual stream, updated in place
  struct PerBlock {
    std::vector<float> h_in, u, inv_rms;
    layers::MoeForwardContext ctx;
  };
  std::vector<PerBlock> blocks;
  std::vector<float> h_final, u_final, inv_rms_final, logits;
};

namespace {

// Block `l`'s MoE layer with this rank's experts of `placement`, routed as
// `c.routing` asks on `topology`.
std::unique_ptr<layers::MoeLayer> make_moe_block(const CharLmConfig& c, std::int64_t l,
                                                 const layers::ExpertPlacement& placement,
                                                 const comm::Topology& topology, int rank) {
  const std::int64_t E = c.moe.num_experts, I = c.moe.expert_intermediate_size, H = c.moe.hidden_size;
  layers::MoeConfig moe = formats::moe_config(c.moe);
  moe.router.top_p = c.top_p;
  moe.router.validate();
  layers::apply_topology_routing(c.routing, placement, topology, rank,
                                 c.row_bytes > 0 ? c.row_bytes : layers::wire_row_bytes(H, false), &moe.router);
  layers::MoeLayerOptions options = c.moe_options;
  options.exchange = {.kind = c.exchange, .node_of_rank = layers::node_of_rank(topology)};
  const std::string p = "blocks." + std::to_string(l);
  layers::MoeWeights w;
  w.router = init_uniform(c.seed, p + ".router", E * H, 0.02);
  if (c.moe.has_selection_bias) w.selection_bias.assign(static_cast<std::size_t>(E), 0.0f);
  w.first_expert = placement.first_expert(rank);
  w.expert_ids = placement.local_experts(rank);
  // NOTE: a copy of a replicated expert starts from the same weights: they
  // come from the expert's name, not from the rank.
  for (const std::int64_t e : w.expert_ids)
    w.experts.push_back(init_mlp(c.seed, p + ".experts." + std::to_string(e), H, I));
  if (c.moe.shared_intermediate_size > 0) {
    w.shared = init_mlp(c.seed, p + ".shared", H, c.moe.shared_intermediate_size);
    if (c.moe.shared_expert_gated) w.shared_gate = init_uniform(c.seed, p + ".shared_gate", H, 0.02);
  }
  return std::make_unique<layers::MoeLayer>(moe, std::move(w), placement, rank, options);
}

}  // namespace

CharLm::CharLm(const CharLmConfig& c, const std::vector<layers::ExpertPlacement>& placements, int rank) : config_(c) {
  const std::int64_t V = c.vocab_size, C = c.context, D = c.embed_dim, H = c.moe.hidden_size;
  const std::int64_t L = c.moe.num_layers;
  check(V > 0 && C > 0 && D > 0 && H > 0 && L > 0, ErrorCode::kInternal, "CharLm: sizes must be positive");
  check(placements.size() == 1 || static_cast<std::int64_t>(placements.size()) == L, ErrorCode::kInternal,
        "CharLm: one placement, or one per block");
  const auto isd = [](std::int64_t fan_in) { return 1.0 / std::sqrt(static_cast<double>(fan_in)); };
  embed_ = Parameter("embed.weight", {V, D}, init_uniform(c.seed, "embed.weight", V * D, 1.0), true);
  in_proj_ =
      Parameter("in_proj.weight", {H, C * D}, init_uniform(c.seed, "in_proj.weight", H * C * D, isd(C * D)), true);
  in_bias_ = Parameter("in_proj.bias", {H}, std::vector<float>(H, 0.0f), true);
  final_norm_ = Parameter("final_norm.weight", {H}, std::vector<float>(H, 1.0f), true);
  head_ = Parameter("lm_head.weight", {V, H}, init_uniform(c.seed, "lm_head.weight", V * H, isd(H)), true);
  head_bias_ = Parameter("lm_head.bias", {V}, std::vector<float>(V, 0.0f), true);

  const int num_ranks = placements.front().num_ranks();
  const comm::Topology topology = c.topology ? *c.topology : comm::virtual_nodes(num_ranks, num_ranks);
  blocks_.resize(static_cast<std::size_t>(L));
  for (std::int64_t l = 0; l < L; ++l) {
    Block& b = blocks_[static_cast<std::size_t>(l)];
    b.norm = Parameter("blocks." + std::to_string(l) + ".norm.weight", {H}, std::vector<float>(H, 1.0f), true);
    b.moe = make_moe_block(c, l, placements[placements.size() == 1 ? 0 : static_cast<std::size_t>(l)], topology, rank);
  }

  for (Parameter* q : {&embed_, &in_proj_, &in_bias_}) params_.push_back({q->name, q});
  for (std::int64_t l = 0; l < L; ++l) {
    Block& b = blocks_[static_cast<std::size_t>(l)];
    params_.push_back({b.norm.name, &b.norm});
    const std::vector<Parameter*> reported = b.moe->reported_parameters();
    for (Parameter* q : b.moe->parameters())
      params_.push_back({"blocks." + std::to_string(l) + ".moe." + q->name, q,
                         std::find(reported.begin(), reported.end(), q) != reported.end()});
  }
  for (Parameter* q : {&final_norm_, &head_, &head_bias_}) params_.push_back({q->name, q});
}

CharLm::~CharLm() = default;

std::vector<Parameter*> CharLm::parameter_ptrs() const {
  std::vector<Parameter*> out;
  for (const auto& p : params_) out.push_back(p.param);
  return out;
}

void CharLm::zero_grad() {
  for (auto& p : params_) std::fill(p.param->grad.begin(), p.param->grad.end(), 0.0f);
}

double CharLm::forward(comm::Communicator& comm, const std::int32_t* contexts, const std::int32_t* targets,
                       std::int64_t T, float grad_scale, Activations* a, BatchResult* result,
                       const std::uint64_t* noise_step) {
  const std::int64_t V = config_.vocab_size, C = config_.context, D = config_.embed_dim;
  const std::int64_t H = config_.moe.hidden_size, CD = C * D;
  a->x0.resize(static_cast<std::size_t>(T * CD));
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t j = 0; j < C; ++j) {
      const std::int32_t tok = contexts[t * C + j];
      std::copy_n(embed_.value.data() + tok * D, D, a->x0.data() + t * CD + j * D);
    }
  a->h.resize(static_cast<std::size_t>(T * H));
  detail::linear_forward(a->x0.data(), T, CD, in_proj_.value.data(), in_bias_.value.data(), H, a->h.data());

  a->blocks.resize(blocks_.size());
  result->stats.assign(blocks_.size(), layers::ForwardStats{});
  result->traffic.clear();
  std::vector<float> m(static_cast<std::size_t>(T * H));
  for (std::size_t l = 0; l < blocks_.size(); ++l) {
    auto& ab = a->blocks[l];
    ab.h_in = a->h;
    ab.u.resize(a->h.size());
    ab.inv_rms.resize(static_cast<std::size_t>(T));
    detail::rmsnorm_forward(ab.h_in.data(), T, H, blocks_[l].norm.value.data(), config_.rms_eps, ab.u.data(),
                            ab.inv_rms.data());
    layers::MoeLayer& moe = *blocks_[l].moe;
    moe.initialize(comm,
                   {.max_tokens = T, .chunks = schedule_.chunks, .training = true, .wire_bf16 = schedule_.wire_bf16},
                   &ab.ctx);
    moe.run(comm, {.x = ab.u.data(),
                   .num_tokens = T,
                   .y = m.data(),
                   .context = &ab.ctx,
                   .stats = &result->stats[l],
                   .schedule = schedule_,
                   .gating_noise = noise_step != nullptr,
                   .noise_key = noise_step ? *noise_step * blocks_.size() + l : 0});
    result->traffic.push_back(ab.ctx.traffic());
    for (std::size_t i = 0; i < m.size(); ++i) a->h[i] += m[i];
  }
  a->h_final = a->h;
  a->u_final.resize(a->h.size());
  a->inv_rms_final.resize(static_cast<std::size_t>(T));
  detail::rmsnorm_forward(a->h_final.data(), T, H, final_norm_.value.data(), config_.rms_eps, a->u_final.data(),
                          a->inv_rms_final.data());
  a->logits.resize(static_cast<std::size_t>(T * V));
  detail::linear_forward(a->u_final.data(), T, H, head_.value.data(), head_bias_.value.data(), V, a->logits.data());
  return detail::softmax_xent(a->logits.data(), T, V, targets, grad_scale);
}

BatchResult CharLm::forward_backward(comm::Communicator& comm, const std::int32_t* contexts,
                                     const std::int32_t* targets, std::int64_t T, float grad_scale,
                                     std::uint64_t step) {
  const std::int64_t V = config_.vocab_size, C = config_.context, D = config_.embed_dim;
  const std::int64_t H = config_.moe.hidden_size, CD = C * D;
  Activations a;
  BatchResult result;
  result.loss_sum = forward(comm, contexts, targets, T, grad_scale, &a, &result, &step);

  // Head: logits now hold dL/dlogits.
  std::vector<float> du(static_cast<std::size_t>(T * H)), dh(static_cast<std::size_t>(T * H), 0.0f);
  detail::linear_backward(a.u_final.data(), T, H, head_.value.data(), V, a.logits.data(),
                          {.dw = head_.grad.data(), .db = head_bias_.grad.data(), .dx = du.data()});
  detail::rmsnorm_backward(a.h_final.data(), T, H, final_norm_.value.data(), a.inv_rms_final.data(), du.data(),
                           dh.data(), final_norm_.grad.data());

  // Blocks in reverse: dh flows through the residual unchanged, and the MoE
  // branch adds RMSNorm'(MoE'(dh)).
  std::vector<float> dnorm_in(static_cast<std::size_t>(T * H));
  for (std::size_t l = blocks_.size(); l-- > 0;) {
    auto& ab = a.blocks[l];
    blocks_[l].moe->run(comm, layers::MoeBackwardArguments{
                                  .context = &ab.ctx, .grad_y = dh.data(), .grad_x = du.data(), .schedule = schedule_});
    detail::rmsnorm_backward(ab.h_in.data(), T, H, blocks_[l].norm.value.data(), ab.inv_rms.data(), du.data(),
                             dh.data(), blocks_[l].norm.grad.data());
  }

  // Input projection and embeddings; rows are added in token order, so the
  // embedding gradient does not depend on anything but the batch.
  std::vector<float> dx0(static_cast<std::size_t>(T * CD));
  detail::linear_backward(a.x0.data(), T, CD, in_proj_.value.data(), H, dh.data(),
                          {.dw = in_proj_.grad.data(), .db = in_bias_.grad.data(), .dx = dx0.data()});
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t j = 0; j < C; ++j) {
      float* g = embed_.grad.data() + contexts[t * C + j] * D;
      const float* src = dx0.data() + t * CD + j * D;
      for (std::int64_t d = 0; d < D; ++d) g[d] += src[d];
    }
  return result;
}

BatchResult CharLm::evaluate(comm::Communicator& comm, const std::int32_t* contexts, const std::int32_t* targets,
                             std::int64_t T, bool keep_routing) {
  Activations a;
  BatchResult result;
  result.loss_sum = forward(comm, contexts, targets, T, 1.0f, &a, &result, nullptr);
  if (keep_routing)
    for (auto& ab : a.blocks) result.expert_idx.push_back(ab.ctx.expert_idx());
  return result;
}

}  // namespace switchyard::train
