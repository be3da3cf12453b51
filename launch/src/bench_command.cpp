// `switchyard bench`: the MoE layer on synthetic data, timed per phase and
// reported beside limits measured in the same run, with a correctness column
// (the output checked against a float64 computation on a sample of tokens).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>

#include "bench_baselines.hpp"
#include "cli_runner.hpp"
#include "commands.hpp"
#include "routing_stats.hpp"
#include "switchyard/comm/watchdog.hpp"
#include "switchyard/formats/model_config.hpp"
#include "switchyard/layers/link_traffic.hpp"
#include "switchyard/layers/moe_layer.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {

void add_bench_options(CLI::App& sub, BenchOptions* o) {
  sub.add_option("--hidden", o->hidden, "Hidden size")->check(CLI::PositiveNumber);
  sub.add_option("--ffn", o->ffn, "Expert intermediate size")->check(CLI::PositiveNumber);
  sub.add_option("--experts", o->experts, "Routed experts")->check(CLI::PositiveNumber);
  sub.add_option("--top-k", o->top_k, "Experts per token")->check(CLI::PositiveNumber);
  sub.add_option("--tokens", o->tokens, "Tokens per rank")->check(CLI::Range(0, 1 << 30));
  sub.add_option("--arch", o->arch, "Router kind (a config.json model_type)")
      ->check(CLI::IsMember({"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "olmoe", "granitemoe", "glm4_moe",
                             "qwen3_5_moe_text", "llama4_text"}));
  sub.add_option("--pass", o->pass, "fwd | fwd_bwd")->check(CLI::IsMember({"fwd", "fwd_bwd"}));
  sub.add_option("--dtype", o->dtype, "Expert weights: f32 | bf16")->check(CLI::IsMember({"f32", "bf16"}));
  sub.add_option("--iters", o->iters, "Timed iterations")->check(CLI::PositiveNumber);
  sub.add_option("--warmup", o->warmup, "Untimed iterations first")->check(CLI::Range(0, 1 << 30));
  sub.add_option("--routing", o->routing, "uniform | skewed")->check(CLI::IsMember({"uniform", "skewed"}));
  sub.add_option("--seed", o->seed, "Seed of the synthetic weights and inputs");
  sub.add_option("--json", o->json, "Append one JSON line per run to this file (rank 0)");
  add_schedule_options(sub, &o->schedule);
  add_topology_options(sub, &o->topology);
  add_routing_options(sub, &o->topology_routing);
  add_routing_stats_option(sub, &o->routing_stats);
  add_placement_option(sub, &o->placement);
  sub.add_option("--corrupt-expert", o->corrupt_expert,
                 "Scale this expert's weights after the reference is fixed (checks that `correct` can fail)");
}

namespace {

using nlohmann::json;

// Synthetic weights are a function of (seed, tensor id), so any rank can
// rebuild any expert for the reference check.
std::vector<float> uniform(std::uint64_t seed, std::uint64_t id, std::int64_t n, float scale) {
  std::mt19937_64 rng(seed * 1000003u + id);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

layers::MlpWeights mlp(std::uint64_t seed, std::uint64_t id, std::int64_t H, std::int64_t I) {
  return {.hidden = H,
          .inter = I,
          .gate_up = uniform(seed, 2 * id, 2 * I * H, 1.0f / std::sqrt(static_cast<float>(H))),
          .down = uniform(seed, 2 * id + 1, H * I, 1.0f / std::sqrt(static_cast<float>(I)))};
}

constexpr std::uint64_t kRouterId = 1u << 20, kSharedId = (1u << 20) + 1, kSkewId = (1u << 20) + 2;

formats::ModelConfig bench_config(const BenchOptions& o) {
  json c = {{"model_type", o.arch},
            {"hidden_size", o.hidden},
            {"num_experts_per_tok", o.top_k},
            {"num_hidden_layers", 1},
            {"hidden_act", "silu"}};
  // Every architecture's names for the sizes; each reads its own.
  const std::int64_t groups = o.experts % 4 == 0 && o.experts >= 8 ? 4 : 1;
  c.update({{"intermediate_size", o.ffn},
            {"moe_intermediate_size", o.ffn},
            {"num_local_experts", o.experts},
            {"num_experts", o.experts},
            {"n_routed_experts", o.experts},
            {"norm_topk_prob", true},
            {"shared_expert_intermediate_size", o.ffn},
            {"n_shared_experts", 1},
            {"n_group", groups},
            {"topk_group", groups == 4 ? 2 : 1},
            {"first_k_dense_replace", 0}});
  return formats::parse_model_config(c.dump(), "bench configuration");
}

// Skewed routing: inputs share a direction u that the router rows favour by
// expert index, so low-numbered experts get most tokens.
std::vector<float> router_weights(const BenchOptions& o) {
  auto w = uniform(o.seed, kRouterId, o.experts * o.hidden, 1.0f / std::sqrt(static_cast<float>(o.hidden)));
  if (o.routing == "skewed") {
    const auto u = uniform(o.seed, kSkewId, o.hidden, 1.0f);
    for (std::int64_t e = 0; e < o.experts; ++e)
      for (std::int64_t h = 0; h < o.hidden; ++h)
        w[e * o.hidden + h] += 0.5f * static_cast<float>(o.experts - e) / static_cast<float>(o.experts) * u[h] /
                               static_cast<float>(o.hidden);
  }
  return w;
}

std::vector<float> inputs(const BenchOptions& o, int rank) {
  auto x = uniform(o.seed + 17 + rank, 0, o.tokens * o.hidden, 1.0f);
  if (o.routing == "skewed") {
    const auto u = uniform(o.seed, kSkewId, o.hidden, 1.0f);
    for (std::int64_t t = 0; t < o.tokens; ++t)
      for (std::int64_t h = 0; h < o.hidden; ++h) x[t * o.hidden + h] += 4.0f * u[h];
  }
  return x;
}

void mlp_ref(const layers::MlpWeights& w, const float* x, kernels::Activation act, std::vector<double>* y) {
  const std::int64_t H = w.hidden, I = w.inter;
  std::vector<double> h(static_cast<std::size_t>(I));
  std::vector<float> gu(static_cast<std::size_t>(2 * I)), a(static_cast<std::size_t>(I));
  for (std::int64_t i = 0; i < 2 * I; ++i) {
    double s = 0;
    for (std::int64_t c = 0; c < H; ++c) s += static_cast<double>(w.gate_up[i * H + c]) * x[c];
    gu[i] = static_cast<float>(s);
  }
  kernels::gated_activation(act, gu.data(), 1, I, a.data());
  y->assign(static_cast<std::size_t>(H), 0.0);
  for (std::int64_t c = 0; c < H; ++c)
    for (std::int64_t i = 0; i < I; ++i) (*y)[c] += static_cast<double>(w.down[c * I + i]) * a[i];
}

// Largest relative error of `y` on a sample of this rank's tokens against a
// float64 evaluation of the same layer (same routing decisions).
double sample_error(const BenchOptions& o, const formats::ModelConfig& config, const std::vector<float>& x,
                    const std::vector<float>& y, const layers::MoeForwardContext& ctx) {
  const std::int64_t H = o.hidden, samples = std::min<std::int64_t>(o.tokens, 4);
  double err = 0, scale = 1e-30;
  std::vector<double> out;
  const std::vector<std::int32_t> experts = ctx.expert_idx();
  const std::vector<float> weights = ctx.routing_weights();
  for (std::int64_t t = 0; t < samples; ++t) {
    std::vector<double> ref(static_cast<std::size_t>(H), 0.0);
    for (std::int64_t j = t * o.top_k; j < (t + 1) * o.top_k; ++j) {
      // Llama 4 weighs the expert's input, E(w x); the others its output, w E(x).
      const bool scale_input = config.weight_scales_input;
      std::vector<float> in(&x[t * H], &x[t * H] + H);
      if (scale_input)
        for (float& v : in) v *= weights[j];
      mlp_ref(mlp(o.seed, static_cast<std::uint64_t>(experts[j]), H, o.ffn), in.data(), config.activation, &out);
      for (std::int64_t h = 0; h < H; ++h) ref[h] += (scale_input ? 1.0f : weights[j]) * out[h];
    }
    if (config.shared_intermediate_size > 0) {
      mlp_ref(mlp(o.seed, kSharedId, H, config.shared_intermediate_size), &x[t * H], config.activation, &out);
      for (std::int64_t h = 0; h < H; ++h) ref[h] += out[h];  // ungated: the bench's shared gate is absent
    }
    for (std::int64_t h = 0; h < H; ++h) {
      err = std::max(err, std::abs(y[t * H + h] - ref[h]));
      scale = std::max(scale, std::abs(ref[h]));
    }
  }
  return err / scale;
}

kernels::WeightType weight_type(const BenchOptions& o) {
  return o.dtype == "bf16" ? kernels::WeightType::kBF16 : kernels::WeightType::kF32;
}

// The layer under test with this rank's experts, and the buffers of one step.
struct BenchStep {
  formats::ModelConfig config;
  std::unique_ptr<layers::MoeLayer> layer;
  std::vector<float> x, y, dx;
  layers::MoeForwardContext ctx;
  layers::ForwardStats stats;
};

// Builds the layer from the synthetic weights and this rank's inputs, routed
// as the routing flags ask on `topology`. Collective.
void set_up_layer(const BenchOptions& o, comm::Communicator& comm, const comm::Topology& topology, BenchStep* s) {
  const int R = comm.size(), me = comm.rank();
  collective_step(comm, [&] {
    check_schedule_options(o.schedule);
    check_arg(o.top_k <= o.experts,
              "--top-k " + std::to_string(o.top_k) + " exceeds --experts " + std::to_string(o.experts));
    s->config = bench_config(o);
    s->config.shared_expert_gated = false;
    const layers::ExpertPlacement placement = placement_of(o.placement, o.experts, R, 0);
    layers::MoeConfig moe = formats::moe_config(s->config);
    apply_routing_flags(o.topology_routing.over(), placement, topology, o.topology, me,
                        layers::wire_row_bytes(o.hidden, o.schedule.wire == "bf16"), &moe.router);
    layers::MoeWeights w;
    w.router = router_weights(o);
    if (s->config.has_selection_bias) w.selection_bias.assign(static_cast<std::size_t>(o.experts), 0.0f);
    w.first_expert = placement.first_expert(me);
    w.expert_ids = placement.local_experts(me);
    for (const std::int64_t e : w.expert_ids) {
      w.experts.push_back(mlp(o.seed, static_cast<std::uint64_t>(e), o.hidden, o.ffn));
      if (e == o.corrupt_expert)
        for (auto& v : w.experts.back().down) v *= 1.5f;
    }
    if (s->config.shared_intermediate_size > 0)
      w.shared = mlp(o.seed, kSharedId, o.hidden, s->config.shared_intermediate_size);
    s->layer = std::make_unique<layers::MoeLayer>(
        moe, std::move(w), placement, me,
        layers::MoeLayerOptions{.experts = {.inference_only = o.pass != "fwd_bwd", .weight_type = weight_type(o)},
                                .topology_loss_coef = o.topology_routing.over().topology_loss,
                                .exchange = layers::exchange_layout(
                                    resolve_exchange(o.topology, topology, placement, o.tokens, o.top_k,
                                                     layers::wire_row_bytes(o.hidden, o.schedule.wire == "bf16")),
                                    topology)});
    s->x = inputs(o, me);
  });
}

// One timed run of the layer: step times and per-phase busy times (p50 of
// the slowest rank), with the given overlap.
struct Run {
  Percentiles step;
  std::map<std::string, double> phase_p50;
  std::vector<std::string> phase_order;
  double phase(const std::string& name) const { return phase_p50.count(name) ? phase_p50.at(name) : 0.0; }
};

Run timed_run(const BenchOptions& o, comm::Communicator& comm, StepRunner& runner, BenchStep& s, bool overlap,
              bool traced) {
  const bool backward = o.pass == "fwd_bwd";
  const layers::StepSchedule schedule = runner.schedule(overlap);
  // NOTE: every forward keeps its context (the error check reads its routing),
  // so the workspace is sized for training even when no backward runs.
  s.layer->initialize(comm, {o.tokens, schedule.chunks, true, schedule.wire_bf16}, &s.ctx);
  std::vector<double> steps;
  std::map<std::string, std::vector<double>> phases;
  Run run;
  for (int it = 0; it < o.warmup + o.iters; ++it) {
    if (traced && it == o.warmup + o.iters - 1) runner.restart_trace();  // trace the last step only
    comm::set_activity("bench iteration " + std::to_string(it + 1));
    PhaseTimer timer;
    double t[1];
    comm.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    s.layer->run(comm, {.x = s.x.data(),
                        .num_tokens = o.tokens,
                        .y = s.y.data(),
                        .context = &s.ctx,
                        .stats = &s.stats,
                        .timer = &timer,
                        .schedule = schedule});
    if (backward)
      s.layer->run(
          comm,
          layers::MoeBackwardArguments{
              .context = &s.ctx, .grad_y = s.y.data(), .grad_x = s.dx.data(), .timer = &timer, .schedule = schedule});
    t[0] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    comm.allreduce_max(t, 1);
    std::vector<double> ph;
    for (auto& e : timer.entries()) ph.push_back(e.seconds);
    comm.allreduce_max(ph.data(), ph.size());
    if (it < o.warmup) continue;
    steps.push_back(t[0]);
    for (std::size_t i = 0; i < ph.size(); ++i) {
      const auto& name = timer.entries()[i].phase;
      if (!phases.count(name)) run.phase_order.push_back(name);
      phases[name].push_back(ph[i]);
    }
  }
  run.step = percentiles(steps);
  for (auto& [name, v] : phases) run.phase_p50[name] = percentiles(v).p50;
  return run;
}

// What a bench run reports, every value agreed over the ranks.
struct BenchResults {
  // The same graph in sequence is the baseline, and its phases are clean
  // busy times (no task shares the core with another).
  Run sequence, overlapped;  // overlapped: with overlap on only
  Percentiles step;          // of the run the options ask for
  layers::ExchangeKind exchange = layers::ExchangeKind::kFlat;
  std::vector<std::int64_t> rank_rows;  // [R] expert rows each rank computed in the measured step
  double gemm_gflops = 0, gemm_peak_gflops = 0;
  double exchange_gbps = 0, alltoallv_gbps = 0, exchange_in_step_gbps = 0;
  double t_comm = 0, t_compute = 0;               // seconds
  double exchange_s = 0, exchange_in_step_s = 0;  // the forward's dispatch + combine: alone, and in the step
  std::optional<double> exchange_predicted_s;     // the topology's model of the same exchange
  layers::LinkTraffic link;                       // the step's traffic per link class, all ranks
  double mem_bw_gbps = 0, expert_bytes_touched = 0, max_rss_mb = 0, max_rel_error = 0;
  std::vector<double> max_rss_mb_per_rank;
  bool correct = false;

  double phase_p50(const std::string& name) const { return sequence.phase(name); }
  // (t_comm + t_compute - t_step) / min(t_comm, t_compute): 1 when the exchange
  // hides completely behind the experts, 0 when nothing overlaps.
  double overlap_efficiency() const { return (t_comm + t_compute - step.p50) / std::min(t_comm, t_compute); }
  double floor_ratio() const { return step.p50 / std::max(t_comm, t_compute); }
};

// Expert GEMM rate on the slowest rank: this rank's rows x 6 H I flops,
// beside one large GEMM of the same weight type. Collective.
void measure_gemm(const BenchOptions& o, comm::Communicator& comm, const layers::StepTraffic& traffic,
                  BenchResults* r) {
  const std::int64_t rows =
      std::accumulate(traffic.local_expert_rows.begin(), traffic.local_expert_rows.end(), std::int64_t{0});
  double rate[1] = {-(static_cast<double>(rows) * 6.0 * o.hidden * o.ffn / r->phase_p50("experts") / 1e9)};
  comm.allreduce_max(rate, 1);
  r->gemm_gflops = -rate[0];
  r->gemm_peak_gflops = measure_gemm_peak_gflops(4096, o.hidden, o.ffn, weight_type(o), 5);
}

// The whole step's exchange counts, summed over chunks: rows per peer, with
// the offsets an alltoallv of whole rows takes.
struct Exchange {
  std::vector<std::int64_t> send_counts, send_offsets, recv_counts, recv_offsets;
};

Exchange exchange_of(const layers::StepTraffic& traffic) {
  const auto offsets = [](const std::vector<std::int64_t>& counts) {
    std::vector<std::int64_t> out(counts.size(), 0);
    std::exclusive_scan(counts.begin(), counts.end(), out.begin(), std::int64_t{0});
    return out;
  };
  Exchange p;
  p.send_counts = traffic.send_rows;
  p.recv_counts = traffic.recv_rows;
  p.send_offsets = offsets(p.send_counts);
  p.recv_offsets = offsets(p.recv_counts);
  return p;
}

// Exchange: the layer's own dispatch + combine (through the Communicator,
// with the plan's row counts) timed alone, beside a plain MPI_Alltoallv of
// the same byte counts; and as seen inside the step, where it also absorbs
// the ranks' skew in arriving (route, experts). Collective.
void measure_exchange(const BenchOptions& o, comm::Communicator& comm, const Exchange& p, BenchResults* r) {
  const std::int64_t H = o.hidden;
  const std::int64_t num_send = std::accumulate(p.send_counts.begin(), p.send_counts.end(), std::int64_t{0});
  const std::int64_t num_recv = std::accumulate(p.recv_counts.begin(), p.recv_counts.end(), std::int64_t{0});
  double bytes = 0;
  for (int peer = 0; peer < comm.size(); ++peer)
    bytes += static_cast<double>(p.send_counts[peer] + p.recv_counts[peer]);
  // Rows as the step sends them: float32, or bf16 with --wire bf16.
  const std::size_t row_bytes = H * (o.schedule.wire == "bf16" ? sizeof(std::uint16_t) : sizeof(float));
  bytes *= static_cast<double>(row_bytes);
  std::vector<float> send(static_cast<std::size_t>(num_send * H)), recv(static_cast<std::size_t>(num_recv * H));
  // Each exchange alone, barrier-aligned like the baseline.
  auto timed_exchange = [&](bool dispatch) {
    std::vector<double> times;
    for (int it = 0; it < o.iters + 1; ++it) {
      double t[1];
      comm.barrier();
      const auto t0 = std::chrono::steady_clock::now();
      if (dispatch) {
        comm.alltoallv(send.data(), p.send_counts.data(), p.send_offsets.data(), recv.data(), p.recv_counts.data(),
                       p.recv_offsets.data(), row_bytes);
      } else {
        comm.alltoallv(recv.data(), p.recv_counts.data(), p.recv_offsets.data(), send.data(), p.send_counts.data(),
                       p.send_offsets.data(), row_bytes);
      }
      t[0] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      comm.allreduce_max(t, 1);
      if (it > 0) times.push_back(t[0]);
    }
    return percentiles(times).p50;
  };
  const double exchange_s = timed_exchange(true) + timed_exchange(false);
  const double in_step_s = r->phase_p50("dispatch") + r->phase_p50("combine");
  r->exchange_s = exchange_s;
  r->exchange_in_step_s = in_step_s;
  // The step's exchanges alone (the backward repeats them with roles
  // swapped) and its expert compute alone: the floors overlap works against.
  r->t_comm = exchange_s * (o.pass == "fwd_bwd" ? 2.0 : 1.0);
  r->t_compute = r->phase_p50("experts") + r->phase_p50("experts_grad") + r->phase_p50("expert_weights_grad");
  const double plain_s = measure_alltoallv_seconds(comm, p.send_counts, p.recv_counts, row_bytes, o.iters) +
                         measure_alltoallv_seconds(comm, p.recv_counts, p.send_counts, row_bytes, o.iters);
  double gbps[3] = {-(bytes / exchange_s / 1e9), -(bytes / plain_s / 1e9), -(bytes / in_step_s / 1e9)};
  comm.allreduce_max(gbps, 3);
  r->exchange_gbps = -gbps[0];
  r->alltoallv_gbps = -gbps[1];
  r->exchange_in_step_gbps = -gbps[2];
}

// Memory: the streaming-read rate, the expert weights the step touched and
// every rank's peak RSS; and the correctness column. Collective.
void measure_memory_and_error(const BenchOptions& o, comm::Communicator& comm, const BenchStep& s,
                              const layers::StepTraffic& traffic, BenchResults* r) {
  const int R = comm.size(), me = comm.rank();
  const bool bf16 = o.dtype == "bf16";
  r->mem_bw_gbps = measure_memory_bandwidth_gbps(5);
  double touched = 0;
  for (auto c : traffic.local_expert_rows)
    if (c > 0) touched += static_cast<double>(3 * o.hidden * o.ffn) * (bf16 ? 2.0 : 4.0);
  std::vector<double> rss(static_cast<std::size_t>(R), 0.0);
  rss[static_cast<std::size_t>(me)] = max_rss_mib();
  comm.allreduce_sum(rss.data(), rss.size());  // every rank's own peak, in rank order
  double maxima[3] = {touched, rss[static_cast<std::size_t>(me)], sample_error(o, s.config, s.x, s.y, s.ctx)};
  comm.allreduce_max(maxima, 3);
  const double tolerance = bf16 || o.schedule.wire == "bf16" ? 3e-2 : 1e-4;  // bf16 rounding of operands or rows
  r->expert_bytes_touched = maxima[0];
  r->max_rss_mb = maxima[1];
  r->max_rel_error = maxima[2];
  r->max_rss_mb_per_rank = rss;
  r->correct = maxima[2] <= tolerance;
}

// The step's traffic per link class, and the topology's prediction of its
// forward exchange (dispatch + combine, the combine the transposed matrix)
// when every class that carries bytes has a cost. Collective.
void measure_link_traffic(const BenchOptions& o, comm::Communicator& comm, const comm::Topology& topology,
                          const layers::StepTraffic& traffic, BenchResults* r) {
  const std::int64_t row_bytes = layers::wire_row_bytes(o.hidden, o.schedule.wire == "bf16");
  r->link = layers::job_link_traffic(comm, traffic, topology, row_bytes, o.pass == "fwd_bwd" ? 2 : 1);
  const std::vector<std::int64_t> dispatch = layers::job_dispatch_bytes(comm, traffic, row_bytes);
  const int R = comm.size();
  for (int from = 0; from < R; ++from)
    for (int to = 0; to < R; ++to)
      if (dispatch[static_cast<std::size_t>(from) * R + to] > 0 && !topology.cost(comm::link_class(topology, from, to)))
        return;
  r->exchange_predicted_s = comm::predict_all_to_all_seconds(topology, dispatch) +
                            comm::predict_all_to_all_seconds(topology, layers::transpose_bytes(dispatch, R));
}

// The exchange against its prediction, the traffic per link class and the
// routing that made it.
void add_exchange_fields(json& line, const BenchOptions& o, const comm::Topology& topology, const BenchResults& r) {
  line["exchange"] = exchange_name(r.exchange);
  line["expert_rows_per_rank"] = r.rank_rows;
  line["exchange_ms"] = r.exchange_s * 1e3;
  line["exchange_in_step_ms"] = r.exchange_in_step_s * 1e3;
  line["exchange_predicted_ms"] = r.exchange_predicted_s ? json(*r.exchange_predicted_s * 1e3) : json(nullptr);
  add_link_traffic_fields(line, topology, r.link);
  add_routing_fields(line, o.topology_routing.over());
}

json result_line(const BenchOptions& o, int R, const StepRunner& runner, const BenchResults& r) {
  const Percentiles& step = r.step;
  json phase_ms = json::object();
  for (auto& name : r.sequence.phase_order) phase_ms[name] = r.phase_p50(name) * 1e3;
  json line = {{"ranks", R},
               {"hidden", o.hidden},
               {"ffn", o.ffn},
               {"experts", o.experts},
               {"top_k", o.top_k},
               {"tokens_per_rank", o.tokens},
               {"arch", o.arch},
               {"dtype", o.dtype},
               {"pass", o.pass},
               {"routing", o.routing},
               {"iters", o.iters},
               {"step_ms_p10", step.p10 * 1e3},
               {"step_ms_p50", step.p50 * 1e3},
               {"step_ms_p90", step.p90 * 1e3},
               {"tokens_per_s", static_cast<double>(o.tokens * R) / step.p50},
               {"phase_ms", phase_ms},
               {"gemm_gflops", r.gemm_gflops},
               {"gemm_peak_gflops", r.gemm_peak_gflops},
               {"exchange_gbps", r.exchange_gbps},
               {"alltoallv_gbps", r.alltoallv_gbps},
               {"exchange_in_step_gbps", r.exchange_in_step_gbps},
               {"t_comm_ms", r.t_comm * 1e3},
               {"t_compute_ms", r.t_compute * 1e3},
               {"floor_ratio", r.floor_ratio()},
               {"chunks", runner.chunks()},
               {"overlap", runner.overlap()},
               {"workers", o.schedule.workers},
               {"wire", o.schedule.wire},
               {"step_ms_p50_overlap_off", r.sequence.step.p50 * 1e3},
               {"overlap_efficiency", runner.overlap() ? json(r.overlap_efficiency()) : json(nullptr)},
               {"mem_bw_gbps", r.mem_bw_gbps},
               {"expert_bytes_touched", r.expert_bytes_touched},
               {"mem_floor_ms", r.expert_bytes_touched / (r.mem_bw_gbps * 1e9) * 1e3},
               {"max_rss_mb", r.max_rss_mb},
               {"max_rss_mb_per_rank", r.max_rss_mb_per_rank},
               {"max_rel_error", r.max_rel_error},
               {"correct", r.correct}};
  const double overlap_on_s = runner.overlap() ? r.overlapped.step.p50 : 0.0;
  if (overlap_on_s > 0) line["step_ms_p50_overlap_on"] = overlap_on_s * 1e3;
  return line;
}

void print_results(const BenchOptions& o, int R, const StepRunner& runner, const BenchResults& r) {
  const Percentiles& step = r.step;
  std::printf("%-8s %-5s %-7s %6s %8s | %9s %9s %9s | %9s %9s | %9s %9s | %8s %7s\n", "ranks", "dtype", "pass",
              "tokens", "experts", "step p50", "p10", "p90", "gemm GF/s", "peak", "xchg GB/s", "a2av", "tok/s",
              "correct");
  std::printf("%-8d %-5s %-7s %6lld %8lld | %7.2fms %7.2fms %7.2fms | %9.1f %9.1f | %9.2f %9.2f | %8.0f %7s\n", R,
              o.dtype.c_str(), o.pass.c_str(), static_cast<long long>(o.tokens), static_cast<long long>(o.experts),
              step.p50 * 1e3, step.p10 * 1e3, step.p90 * 1e3, r.gemm_gflops, r.gemm_peak_gflops, r.exchange_gbps,
              r.alltoallv_gbps, static_cast<double>(o.tokens * R) / step.p50, r.correct ? "yes" : "NO");
  std::printf("phases (ms, p50 of slowest rank):");
  for (auto& name : r.sequence.phase_order) std::printf(" %s %.3f", name.c_str(), r.phase_p50(name) * 1e3);
  std::printf("\nmemory: %.1f GB/s streaming read; expert weights touched %.1f MB -> floor %.3f ms; max RSS %.0f MB\n",
              r.mem_bw_gbps, r.expert_bytes_touched / 1e6, r.expert_bytes_touched / (r.mem_bw_gbps * 1e9) * 1e3,
              r.max_rss_mb);
  const std::string efficiency = runner.overlap() ? std::to_string(r.overlap_efficiency()).substr(0, 5) : "n/a";
  std::printf(
      "schedule: %d chunk%s, overlap %s, %d worker%s: step %.2f ms (same graph in sequence %.2f ms); t_comm %.2f ms, "
      "t_compute %.2f ms, overlap efficiency %s, step / max(floors) %.2f\n",
      runner.chunks(), runner.chunks() == 1 ? "" : "s", runner.overlap() ? "on" : "off", o.schedule.workers,
      o.schedule.workers == 1 ? "" : "s", step.p50 * 1e3, r.sequence.step.p50 * 1e3, r.t_comm * 1e3, r.t_compute * 1e3,
      efficiency.c_str(), r.floor_ratio());
  std::printf("%s\n", routing_summary(o.topology_routing.over()).c_str());
  std::printf("%s\n", link_traffic_summary(r.link).c_str());
  const std::string predicted =
      r.exchange_predicted_s ? std::to_string(*r.exchange_predicted_s * 1e3).substr(0, 6) + " ms" : "n/a";
  std::printf("exchange (forward dispatch + combine): %.3f ms alone, %.3f ms in the step; predicted %s\n",
              r.exchange_s * 1e3, r.exchange_in_step_s * 1e3, predicted.c_str());
}

}  // namespace

void run_bench(const BenchOptions& o, comm::Communicator& comm) {
  comm::set_activity("bench start-up (topology, layer)");
  const comm::Topology topology = resolve_topology(o.topology, comm, true);
  BenchStep s;
  set_up_layer(o, comm, topology, &s);
  std::unique_ptr<StepRunner> runner;
  collective_step(comm, [&] { runner = std::make_unique<StepRunner>(o.schedule, comm, o.tokens); });
  s.y.resize(s.x.size());
  s.dx.resize(s.x.size());

  BenchResults r;
  r.sequence = timed_run(o, comm, *runner, s, false, !runner->overlap());
  if (runner->overlap()) r.overlapped = timed_run(o, comm, *runner, s, true, true);
  r.step = (runner->overlap() ? r.overlapped : r.sequence).step;
  const layers::StepTraffic traffic = s.ctx.traffic();
  comm::set_activity("bench limits (GEMM peak, plain MPI_Alltoallv, memory bandwidth) and outputs");
  measure_gemm(o, comm, traffic, &r);
  measure_exchange(o, comm, exchange_of(traffic), &r);
  measure_memory_and_error(o, comm, s, traffic, &r);
  measure_link_traffic(o, comm, topology, traffic, &r);
  r.exchange = s.layer->exchange_kind();
  r.rank_rows.assign(static_cast<std::size_t>(comm.size()), 0);
  for (const std::int64_t rows : traffic.local_expert_rows) r.rank_rows[static_cast<std::size_t>(comm.rank())] += rows;
  comm.allreduce_sum(r.rank_rows.data(), r.rank_rows.size());  // each rank fills its own entry

  collective_step(comm, [&] { runner->write_outputs(comm, *s.layer, o.pass == "fwd_bwd"); });
  RoutingStats routing_stats(o.routing_stats, "bench", 1, o.experts);  // every step routes alike: one
  routing_stats.add(0, traffic);
  routing_stats.end_step();
  routing_stats.write(comm, topology, s.layer->placement());
  if (comm.rank() != 0) return;
  json line = result_line(o, comm.size(), *runner, r);
  add_exchange_fields(line, o, topology, r);
  print_results(o, comm.size(), *runner, r);
  if (!o.json.empty()) {
    std::ofstream out(o.json, std::ios::app);
    out << line.dump() << "\n";
    check(out.good(), ErrorCode::kIo, o.json + ": cannot append the JSON line");
  }
}

}  // namespace switchyard::launch
