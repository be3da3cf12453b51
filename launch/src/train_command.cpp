// `switchyard train`: trains the MoE character language model of
// layers/trainer.hpp; rank 0 prints progress and writes JSON lines.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_runner.hpp"
#include "commands.hpp"
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
  sub.add_flag("--quiet", o->quiet, "Print only the final line");
  add_schedule_options(sub, &o->schedule);
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

}  // namespace

void run_train(const TrainOptions& o, comm::Communicator& comm) {
  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();
  const bool lead = comm.rank() == 0;
  const bool talk = lead && !o.quiet;
  std::unique_ptr<train::Trainer> trainer;
  JsonLog log;
  collective_step(comm, [&] {
    check_arg(o.save_every == 0 || !o.save.empty(), "--save-every needs --save DIR");
    check_schedule_options(o.schedule);
    train::TrainConfig config = train::load_train_config(o.config);
    if (o.steps > 0) {
      config.steps = o.steps;
      config.optimizer.total_steps = o.steps;
    }
    if (!o.dtype.empty()) config.dtype = o.dtype;
    if (lead && !o.json.empty()) log.open(o.json);
    // NOTE: the corpus directory is checked here, where the configuration's
    // field name and the hint about the default corpus belong.
    check_arg(std::filesystem::is_directory(config.data_dir),
              "data.dir " + config.data_dir +
                  ": not a directory (the default corpus ships with the Debian package 'fortunes': apt-get install "
                  "fortunes)");
    trainer = std::make_unique<train::Trainer>(config, comm);
  });
  std::unique_ptr<StepRunner> runner;
  collective_step(comm, [&] {
    runner = std::make_unique<StepRunner>(o.schedule, comm, trainer->config().batch_tokens);
    trainer->model().set_schedule(runner->schedule());
  });
  if (!o.resume.empty()) collective_step(comm, [&] { with_flag("--resume", [&] { trainer->resume(o.resume); }); });

  const train::TrainConfig& c = trainer->config();
  const train::TextCorpus& corpus = trainer->corpus();
  const std::int64_t last = o.stop_after > 0 ? std::min(o.stop_after, c.steps) : c.steps;
  const auto baselines = train::ngram_baselines(corpus);
  if (talk) {
    std::printf(
        "switchyard train: %s, %s router, %lld ranks, %lld experts (top-%lld), %lld blocks, hidden %lld, "
        "ffn %lld, context %lld\n",
        o.config.c_str(), formats::architecture_name(c.model.arch), static_cast<long long>(comm.size()),
        static_cast<long long>(c.model.num_experts), static_cast<long long>(c.model.top_k),
        static_cast<long long>(c.model.num_layers), static_cast<long long>(c.model.hidden_size),
        static_cast<long long>(c.model.expert_intermediate_size), static_cast<long long>(c.context));
    std::printf(
        "  corpus %s: %zu files, %lld characters (%lld held out), vocabulary %lld; baselines on held-out "
        "text: unigram %.4f, bigram %.4f nats/char\n",
        corpus.dir.c_str(), corpus.files.size(), static_cast<long long>(corpus.size()),
        static_cast<long long>(corpus.size() - corpus.val_begin), static_cast<long long>(corpus.vocab_size()),
        baselines.unigram, baselines.bigram);
    if (trainer->step() > 0)
      std::printf("  resumed from %s at step %lld\n", o.resume.c_str(), (long long)trainer->step());
    std::fflush(stdout);
  }

  // Training loop.
  const std::int64_t first = trainer->step();
  const auto t_train = Clock::now();
  auto t_window = t_train;
  std::int64_t window_tokens = 0, window_steps = 0;
  double window_loss = 0.0, last_train_loss = NAN;
  while (trainer->step() < last) {
    runner->restart_trace();  // --trace shows the last training step
    const train::StepReport rep = trainer->train_step();
    window_tokens += rep.tokens;
    window_loss += rep.loss;
    ++window_steps;
    const std::int64_t s = rep.step;
    if (s % c.log_interval == 0 || s == last) {
      const auto now = Clock::now();
      const double dt = std::chrono::duration<double>(now - t_window).count();
      const double elapsed = std::chrono::duration<double>(now - t_train).count();
      const double eta = elapsed / static_cast<double>(s - first) * static_cast<double>(last - s);
      const double tps = dt > 0 ? static_cast<double>(window_tokens) / dt : 0.0;
      last_train_loss = window_loss / static_cast<double>(window_steps);
      if (talk) {
        std::printf(
            "step %6lld/%lld  loss %.4f  aux %.4f  lr %.2e  |g| %.3f  %8.0f tok/s  load max/mean %.2f  eta %s\n",
            static_cast<long long>(s), static_cast<long long>(c.steps), rep.loss, rep.aux_loss, rep.lr, rep.grad_norm,
            tps, max_of(rep.load_imbalance), duration(eta).c_str());
        std::fflush(stdout);
      }
      if (lead)
        log.write({{"event", "step"},
                   {"step", s},
                   {"loss", rep.loss},
                   {"loss_window", last_train_loss},
                   {"aux_loss", rep.aux_loss},
                   {"lr", rep.lr},
                   {"grad_norm", rep.grad_norm},
                   {"tokens_per_s", tps},
                   {"load_max_over_mean", rep.load_imbalance},
                   {"expert_load", rep.expert_load},
                   {"elapsed_s", elapsed},
                   {"eta_s", eta}});
      t_window = now;
      window_tokens = window_steps = 0;
      window_loss = 0.0;
    }
    if (c.eval_interval > 0 && s % c.eval_interval == 0 && s != last) {
      const train::EvalResult ev = trainer->evaluate(c.eval_tokens, false);
      if (talk) {
        std::printf("eval  step %lld: val_loss %.4f on %lld held-out characters\n", static_cast<long long>(s), ev.loss,
                    static_cast<long long>(ev.tokens));
        std::fflush(stdout);
      }
      if (lead) log.write({{"event", "eval"}, {"step", s}, {"val_loss", ev.loss}, {"val_tokens", ev.tokens}});
    }
    if (o.save_every > 0 && s % o.save_every == 0 && s != last) {
      collective_step(comm, [&] { with_flag("--save", [&] { trainer->save(o.save); }); });
      if (talk) std::printf("saved %s at step %lld\n", o.save.c_str(), static_cast<long long>(s));
    }
  }
  const double train_s = std::chrono::duration<double>(Clock::now() - t_train).count();
  collective_step(comm, [&] { runner->write_outputs(comm, trainer->model().moe(0), true); });
  if (!o.save.empty()) {
    collective_step(comm, [&] { with_flag("--save", [&] { trainer->save(o.save); }); });
    if (talk) std::printf("saved %s at step %lld\n", o.save.c_str(), static_cast<long long>(trainer->step()));
  }

  const train::EvalResult ev = trainer->evaluate(c.final_eval_tokens, true);
  const double wall = std::chrono::duration<double>(Clock::now() - t_start).count();
  if (!lead) return;
  const std::int64_t trained = trainer->step() - first;
  json final_line = {
      {"event", "final"},
      {"step", trainer->step()},
      {"val_loss", ev.loss},
      {"unigram_val_loss", baselines.unigram},
      {"bigram_val_loss", baselines.bigram},
      {"val_tokens", ev.tokens},
      {"train_loss", last_train_loss},
      {"ranks", comm.size()},
      {"tokens_per_s", train_s > 0 ? static_cast<double>(trained * c.batch_tokens * comm.size()) / train_s : 0.0},
      {"train_s", train_s},
      {"wall_s", wall},
      {"experts", experts_json(ev, corpus)}};
  log.write(final_line);
  if (!o.quiet) print_specialisation(ev, corpus);
  final_line.erase("experts");
  std::printf("%s\n", final_line.dump().c_str());
  std::fflush(stdout);
}

}  // namespace switchyard::launch
