// `switchyard train`: trains the MoE character language model of
// layers/trainer.hpp; rank 0 prints progress and writes JSON lines.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "cli_runner.hpp"
#include "commands.hpp"
#include "routing_stats.hpp"
#include "switchyard/comm/watchdog.hpp"
#include "switchyard/layers/link_traffic.hpp"
#include "switchyard/runtime/error.hpp"
#include "switchyard/train/trainer.hpp"

namespace switchyard::launch {

// NOTE: ordered, so every line starts with "event" and reads in a fixed order.
using json = nlohmann::ordered_json;

void add_train_options(CLI::App& sub, TrainOptions* o) {
  sub.add_option("--config", o->config, "Training configuration (JSON), e.g. examples/train_small.json")->required();
  sub.add_option("--steps", o->steps, "Total optimizer steps (overrides the config's 'steps')")
      ->check(CLI::PositiveNumber);
  sub.add_option("--stop-after", o->stop_after,
                 "Stop after this step as if preempted (the schedule still spans --steps); saves if --save is given")
      ->check(CLI::PositiveNumber);
  sub.add_option("--json", o->json, "Write JSON lines here: one per logged step and evaluation, one final");
  sub.add_option("--save", o->save, "Checkpoint directory (safetensors), written atomically at the end");
  sub.add_option("--save-every", o->save_every, "Also checkpoint every K steps (needs --save)")
      ->check(CLI::PositiveNumber);
  sub.add_option("--resume", o->resume, "Continue from this checkpoint directory");
  sub.add_option("--dtype", o->dtype,
                 "Expert GEMMs in f32 or bf16 (bf16 operands, float32 accumulation and master weights); overrides "
                 "the configuration's model.dtype")
      ->check(CLI::IsMember({"f32", "bf16"}));
  add_router_options(sub, &o->router, /*training=*/true);
  sub.add_option("--entropy-loss-coef", o->entropy_loss_coef,
                 "Coefficient of the mean router entropy in the loss (sharpens top-p routing); overrides "
                 "entropy_loss_coef")
      ->check(CLI::NonNegativeNumber);
  sub.add_flag("--quiet", o->quiet, "Print only the final line");
  add_schedule_options(sub, &o->schedule);
  add_topology_options(sub, &o->topology);
  add_routing_options(sub, &o->topology_routing);
  add_routing_stats_option(sub, &o->routing_stats);
  add_placement_option(sub, &o->placement);
}

namespace {

std::string duration(double s) {
  char buf[32];
  const long t = std::lround(std::max(0.0, s));
  if (t >= 60)
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof(buf), "%lds", t);
  return buf;
}

double max_of(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); }
double mean_of(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

// Rank 0's JSON-lines sink; a no-op elsewhere or without --json.
class JsonLog {
 public:
  void open(const std::string& path) {
    out_ = std::make_unique<std::ofstream>(path, std::ios::trunc);
    check_arg(out_->good(), "--json " + path + ": cannot open for writing");
  }
  void write(const json& j) {
    if (!out_) return;
    *out_ << j.dump() << "\n";
    out_->flush();
  }

 private:
  std::unique_ptr<std::ofstream> out_;
};

json experts_json(const train::EvalResult& r, const train::TextCorpus& corpus) {
  json out = json::array();
  for (const auto& e : r.experts) {
    json inputs = json::array();
    for (const auto& in : e.top_inputs)
      inputs.push_back({{"char", corpus.token_names[static_cast<std::size_t>(in.token)]},
                        {"count", in.count},
                        {"share_of_char", in.share_of_char}});
    out.push_back({{"layer", e.block}, {"expert", e.expert}, {"token_share", e.token_share}, {"top_inputs", inputs}});
  }
  return out;
}

void print_specialisation(const train::EvalResult& r, const train::TextCorpus& corpus) {
  std::printf(
      "expert specialisation on held-out text: share of routed slots | the input characters whose\n"
      "next-character predictions it serves most, with the share of that character's tokens routed to it:\n");
  for (const auto& e : r.experts) {
    std::printf("  layer %lld expert %2lld  %5.1f%% |", static_cast<long long>(e.block),
                static_cast<long long>(e.expert), 100.0 * e.token_share);
    for (const auto& in : e.top_inputs)
      std::printf("  '%s' %.0f%%", corpus.token_names[static_cast<std::size_t>(in.token)].c_str(),
                  100.0 * in.share_of_char);
    std::printf("\n");
  }
}

using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// --router, --top-p, --max-k, --entropy-loss-coef over the configuration.
// The model's fields among them go into model_json too, which checkpoints
// keep: a resume must route as the run it continues.
void apply_router_flags(const TrainOptions& t, train::TrainConfig* c) {
  const RouterOptions& o = t.router;
  nlohmann::json model = nlohmann::json::parse(c->model_json);
  if (!o.router.empty()) c->router = model["router"] = o.router;
  const bool top_p = c->router == "top-p";
  check_arg(o.top_p < 0 || top_p, "--top-p needs --router top-p (or model.router \"top-p\")");
  check_arg(o.max_k < 0 || top_p, "--max-k needs --router top-p (or model.router \"top-p\")");
  if (o.top_p >= 0) c->top_p = model["top_p"] = o.top_p;
  if (!top_p) c->top_p = 0.0;
  check_arg(!top_p || c->top_p > 0.0, "--router top-p needs --top-p P in (0, 1] (or model.top_p)");
  if (o.max_k > 0) {
    check_max_k(o.max_k, c->model.num_experts);
    c->model.top_k = model["top_k"] = o.max_k;
  }
  if (!o.router.empty() || o.top_p >= 0 || o.max_k > 0) c->model_json = model.dump();
  if (t.entropy_loss_coef >= 0) c->entropy_loss_coef = t.entropy_loss_coef;
}

// Reads --config with the command line's overrides; rank 0 opens --json.
// Collective.
train::TrainConfig read_config(const TrainOptions& o, comm::Communicator& comm, JsonLog& log) {
  train::TrainConfig config;
  collective_step(comm, [&] {
    check_arg(o.save_every == 0 || !o.save.empty(), "--save-every needs --save DIR");
    check_schedule_options(o.schedule);
    config = train::load_train_config(o.config);
    if (o.steps > 0) {
      config.steps = o.steps;
      config.optimizer.total_steps = o.steps;
    }
    if (!o.dtype.empty()) config.dtype = o.dtype;
    config.routing = o.topology_routing.over(config.routing);
    apply_router_flags(o, &config);
    if (comm.rank() == 0 && !o.json.empty()) log.open(o.json);
    // NOTE: the corpus directory is checked here, where the configuration's
    // field name and the hint about the default corpus belong.
    check_arg(std::filesystem::is_directory(config.data_dir),
              "data.dir " + config.data_dir +
                  ": not a directory (the default corpus ships with the Debian package 'fortunes': apt-get install "
                  "fortunes)");
  });
  return config;
}

// Where each routing field was set: its flag, or the configuration file's
// field when the flag was not given.
RoutingLabels routing_labels(const TrainOptions& o) {
  RoutingLabels labels;
  const auto field = [&](const std::string& key) { return o.config + ": field 'routing." + key + "'"; };
  if (!o.topology_routing.max_nodes) labels.max_nodes = field("max_nodes");
  if (!o.topology_routing.node_score_experts) labels.node_score_experts = field("node_score_experts");
  if (!o.topology_routing.link_penalty) labels.link_penalty = field("link_penalty");
  if (!o.topology_routing.topology_loss) labels.topology_loss = field("topology_loss");
  return labels;
}

// Builds the trainer, every block routed as `config.routing` asks on
// `topology`. Collective.
std::unique_ptr<train::Trainer> make_trainer(const TrainOptions& o, const train::TrainConfig& config,
                                             const comm::Topology& topology, comm::Communicator& comm) {
  std::unique_ptr<train::Trainer> trainer;
  collective_step(comm, [&] {
    with_routing_labels(routing_labels(o), topology_source(o.topology), [&] {
      const bool bf16 = o.schedule.wire == "bf16";
      // NOTE: a model the job cannot place is left to the trainer, whose
      // error names the config field.
      const bool placeable = config.model.num_experts >= comm.size() && config.model.top_k >= 1 &&
                             config.model.top_k <= config.model.num_experts;
      const layers::ExchangeKind exchange =
          placeable
              ? resolve_exchange(o.topology, topology, layers::ExpertPlacement(config.model.num_experts, comm.size()),
                                 config.batch_tokens, config.model.top_k,
                                 layers::wire_row_bytes(config.model.hidden_size, bf16))
              : layers::ExchangeKind::kFlat;
      std::vector<layers::ExpertPlacement> placements;
      if (!o.placement.empty() && placeable)
        for (std::int64_t b = 0; b < config.model.num_layers; ++b)
          placements.push_back(placement_of(o.placement, config.model.num_experts, comm.size(), b));
      trainer = std::make_unique<train::Trainer>(
          config, comm,
          train::TrainTopology{
              .topology = topology, .wire_bf16 = bf16, .exchange = exchange, .placements = std::move(placements)});
    });
  });
  return trainer;
}

// One run of `switchyard train` once the trainer is built: the header, the
// training loop with its progress, evaluations and checkpoints, and the end.
// Rank 0 prints (unless --quiet) and writes the JSON lines.
class TrainRun {
 public:
  TrainRun(const TrainOptions& o, comm::Communicator& comm, train::Trainer& trainer, StepRunner& runner, JsonLog& log,
           const comm::Topology& topology)
      : o_(o),
        comm_(comm),
        trainer_(trainer),
        runner_(runner),
        log_(log),
        topology_(topology),
        c_(trainer.config()),
        lead_(comm.rank() == 0),
        talk_(lead_ && !o.quiet),
        last_(o.stop_after > 0 ? std::min(o.stop_after, c_.steps) : c_.steps),
        baselines_(train::ngram_baselines(trainer.corpus())),
        routing_stats_(o.routing_stats, "train", trainer.model().num_blocks(), c_.model.num_experts) {}

  void print_header() const;
  // Trains up to --stop-after or the last step. Collective.
  void train();
  // Writes --trace/--dot, saves, evaluates on held-out text and prints the
  // final line. Collective.
  void finish(Clock::time_point t_start);

 private:
  void log_progress(const train::StepReport& rep);
  layers::LinkTraffic link_traffic(const train::StepReport& rep);
  layers::LinkTraffic eval_link_traffic(const train::EvalResult& ev);
  // Bytes of one row on the wire.
  std::int64_t row_bytes() const { return layers::wire_row_bytes(c_.model.hidden_size, runner_.schedule().wire_bf16); }
  void evaluate(std::int64_t step);
  void save();

  const TrainOptions& o_;
  comm::Communicator& comm_;
  train::Trainer& trainer_;
  StepRunner& runner_;
  JsonLog& log_;
  const comm::Topology& topology_;
  const train::TrainConfig& c_;
  const bool lead_, talk_;
  const std::int64_t last_;
  const train::NgramBaselines baselines_;
  RoutingStats routing_stats_;  // --routing-stats: the training steps' routing
  std::int64_t first_ = 0;      // the step training started from
  Clock::time_point t_train_;
  double train_s_ = 0.0;
  // The steps since the last progress line.
  Clock::time_point t_window_;
  std::int64_t window_tokens_ = 0, window_steps_ = 0;
  double window_loss_ = 0.0, last_train_loss_ = NAN;
};

// "top-2", "noisy top-2", or "top-p 0.5, at most 4".
std::string expert_choice(const train::TrainConfig& c) {
  char buf[64];
  if (c.top_p > 0)
    std::snprintf(buf, sizeof(buf), "top-p %g, at most %lld", c.top_p, static_cast<long long>(c.model.top_k));
  else
    std::snprintf(buf, sizeof(buf), "%stop-%lld", c.router == "noisy-top-k" ? "noisy " : "",
                  static_cast<long long>(c.model.top_k));
  return buf;
}

void TrainRun::print_header() const {
  if (!talk_) return;
  const train::TextCorpus& corpus = trainer_.corpus();
  std::printf(
      "switchyard train: %s, %s router, %lld ranks, %lld experts (%s), %lld blocks, hidden %lld, "
      "ffn %lld, context %lld\n",
      o_.config.c_str(), formats::architecture_name(c_.model.arch), static_cast<long long>(comm_.size()),
      static_cast<long long>(c_.model.num_experts), expert_choice(c_).c_str(),
      static_cast<long long>(c_.model.num_layers), static_cast<long long>(c_.model.hidden_size),
      static_cast<long long>(c_.model.expert_intermediate_size), static_cast<long long>(c_.context));
  std::printf(
      "  corpus %s: %zu files, %lld characters (%lld held out), vocabulary %lld; baselines on held-out "
      "text: unigram %.4f, bigram %.4f nats/char\n",
      corpus.dir.c_str(), corpus.files.size(), static_cast<long long>(corpus.size()),
      static_cast<long long>(corpus.size() - corpus.val_begin), static_cast<long long>(corpus.vocab_size()),
      baselines_.unigram, baselines_.bigram);
  std::printf("  %s\n", routing_summary(c_.routing).c_str());
  if (trainer_.step() > 0)
    std::printf("  resumed from %s at step %lld\n", o_.resume.c_str(), (long long)trainer_.step());
  std::fflush(stdout);
}

void TrainRun::train() {
  first_ = trainer_.step();
  t_train_ = Clock::now();
  t_window_ = t_train_;
  while (trainer_.step() < last_) {
    runner_.restart_trace();  // --trace shows the last training step
    comm::set_activity("train step " + std::to_string(trainer_.step() + 1));
    const train::StepReport rep = trainer_.train_step();
    for (std::size_t b = 0; b < rep.traffic.size(); ++b)
      routing_stats_.add(static_cast<std::int64_t>(b), rep.traffic[b]);
    routing_stats_.end_step();
    window_tokens_ += rep.tokens;
    window_loss_ += rep.loss;
    ++window_steps_;
    const std::int64_t s = rep.step;
    if (s % c_.log_interval == 0 || s == last_) log_progress(rep);
    if (c_.eval_interval > 0 && s % c_.eval_interval == 0 && s != last_) {
      comm::set_activity("evaluation after step " + std::to_string(s));
      evaluate(s);
    }
    if (o_.save_every > 0 && s % o_.save_every == 0 && s != last_) {
      comm::set_activity("checkpoint save after step " + std::to_string(s));
      save();
    }
  }
  comm::set_activity("the end of training (final evaluation, checkpoint and summary)");
  train_s_ = seconds(Clock::now() - t_train_);
}

// The step's traffic per link class, every block's forward and backward
// exchanges, all ranks. Collective.
layers::LinkTraffic TrainRun::link_traffic(const train::StepReport& rep) {
  layers::StepTraffic all;
  for (const layers::StepTraffic& block : rep.traffic) all += block;
  return layers::job_link_traffic(comm_, all, topology_, row_bytes(), 2);
}

void TrainRun::log_progress(const train::StepReport& rep) {
  const std::int64_t s = rep.step;
  const layers::LinkTraffic traffic = link_traffic(rep);
  const auto now = Clock::now();
  const double dt = seconds(now - t_window_);
  const double elapsed = seconds(now - t_train_);
  const double eta = elapsed / static_cast<double>(s - first_) * static_cast<double>(last_ - s);
  const double tps = dt > 0 ? static_cast<double>(window_tokens_) / dt : 0.0;
  last_train_loss_ = window_loss_ / static_cast<double>(window_steps_);
  if (talk_) {
    char experts[48] = "";
    if (c_.top_p > 0) std::snprintf(experts, sizeof(experts), "  experts/token %.2f", mean_of(rep.experts_per_token));
    std::printf("step %6lld/%lld  loss %.4f  aux %.4f  lr %.2e  |g| %.3f  %8.0f tok/s  load max/mean %.2f%s  eta %s\n",
                static_cast<long long>(s), static_cast<long long>(c_.steps), rep.loss, rep.aux_loss, rep.lr,
                rep.grad_norm, tps, max_of(rep.load_imbalance), experts, duration(eta).c_str());
    std::fflush(stdout);
  }
  if (lead_) {
    json line = {{"event", "step"},
                 {"step", s},
                 {"loss", rep.loss},
                 {"loss_window", last_train_loss_},
                 {"aux_loss", rep.aux_loss},
                 {"topology_loss", rep.topology_loss},
                 {"lr", rep.lr},
                 {"grad_norm", rep.grad_norm},
                 {"tokens_per_s", tps},
                 {"load_max_over_mean", rep.load_imbalance},
                 {"expert_load", rep.expert_load},
                 {"elapsed_s", elapsed},
                 {"eta_s", eta}};
    add_expert_count_fields(line, rep.experts_histogram, c_.model.top_k);
    add_link_traffic_fields(line, topology_, traffic);
    add_routing_fields(line, c_.routing);
    log_.write(line);
  }
  t_window_ = now;
  window_tokens_ = window_steps_ = 0;
  window_loss_ = 0.0;
}

// The evaluation's forward exchanges (one pass), all ranks. Collective.
layers::LinkTraffic TrainRun::eval_link_traffic(const train::EvalResult& ev) {
  return layers::job_link_traffic(comm_, ev.traffic, topology_, row_bytes(), 1);
}

void TrainRun::evaluate(std::int64_t step) {
  const train::EvalResult ev = trainer_.evaluate(c_.eval_tokens, false);
  const layers::LinkTraffic traffic = eval_link_traffic(ev);
  if (talk_) {
    std::printf("eval  step %lld: val_loss %.4f on %lld held-out characters\n", static_cast<long long>(step), ev.loss,
                static_cast<long long>(ev.tokens));
    std::fflush(stdout);
  }
  if (!lead_) return;
  json line = {{"event", "eval"},
               {"step", step},
               {"val_loss", ev.loss},
               {"val_tokens", ev.tokens},
               {"gate_mass_kept", ev.gate_mass_kept}};
  add_expert_count_fields(line, ev.experts_histogram, c_.model.top_k);
  add_link_traffic_fields(line, topology_, traffic);
  log_.write(line);
}

void TrainRun::save() {
  collective_step(comm_, [&] { with_flag("--save", [&] { trainer_.save(o_.save); }); });
  if (talk_) std::printf("saved %s at step %lld\n", o_.save.c_str(), static_cast<long long>(trainer_.step()));
}

void TrainRun::finish(Clock::time_point t_start) {
  collective_step(comm_, [&] { runner_.write_outputs(comm_, trainer_.model().moe(0), true); });
  routing_stats_.write(comm_, topology_, trainer_.model().moe(0).placement());
  if (!o_.save.empty()) save();

  const train::EvalResult ev = trainer_.evaluate(c_.final_eval_tokens, true);
  const layers::LinkTraffic traffic = eval_link_traffic(ev);
  const double wall = seconds(Clock::now() - t_start);
  if (!lead_) return;
  const std::int64_t trained = trainer_.step() - first_;
  json final_line = {
      {"event", "final"},
      {"step", trainer_.step()},
      {"val_loss", ev.loss},
      {"gate_mass_kept", ev.gate_mass_kept},
      {"unigram_val_loss", baselines_.unigram},
      {"bigram_val_loss", baselines_.bigram},
      {"val_tokens", ev.tokens},
      {"train_loss", last_train_loss_},
      {"ranks", comm_.size()},
      {"tokens_per_s", train_s_ > 0 ? static_cast<double>(trained * c_.batch_tokens * comm_.size()) / train_s_ : 0.0},
      {"train_s", train_s_},
      {"wall_s", wall},
      {"experts", experts_json(ev, trainer_.corpus())}};
  add_expert_count_fields(final_line, ev.experts_histogram, c_.model.top_k);
  add_link_traffic_fields(final_line, topology_, traffic);
  add_routing_fields(final_line, c_.routing);
  log_.write(final_line);
  if (!o_.quiet) print_specialisation(ev, trainer_.corpus());
  final_line.erase("experts");
  std::printf("%s\n", final_line.dump().c_str());
  std::fflush(stdout);
}

}  // namespace

void run_train(const TrainOptions& o, comm::Communicator& comm) {
  const auto t_start = Clock::now();
  comm::set_activity("train start-up (configuration, topology, model, checkpoint)");
  JsonLog log;
  const train::TrainConfig config = read_config(o, comm, log);
  // The link costs only when routing prices links: otherwise train reports
  // traffic per link class, and prices nothing.
  const comm::Topology topology = resolve_topology(o.topology, comm, needs_link_costs(config.routing));
  std::unique_ptr<train::Trainer> trainer = make_trainer(o, config, topology, comm);
  std::unique_ptr<StepRunner> runner;
  collective_step(comm, [&] {
    runner = std::make_unique<StepRunner>(o.schedule, comm, trainer->config().batch_tokens);
    trainer->model().set_schedule(runner->schedule());
  });
  if (!o.resume.empty()) collective_step(comm, [&] { with_flag("--resume", [&] { trainer->resume(o.resume); }); });
  TrainRun run(o, comm, *trainer, *runner, log, topology);
  run.print_header();
  run.train();
  run.finish(t_start);
}

}  // namespace switchyard::launch
