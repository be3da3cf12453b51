#include "step_schedule.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_runner.hpp"
#include "switchyard/comm/gather.hpp"
#include "switchyard/kernels/threads.hpp"
#include "switchyard/runtime/atomic_file.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {

void add_schedule_options(CLI::App& sub, ScheduleOptions* o) {
  sub.add_option("--overlap", o->overlap,
                 "on: the step's exchanges overlap expert compute (a task graph on worker threads); off: the same "
                 "graph in sequence")
      ->check(CLI::IsMember({"on", "off"}));
  sub.add_option("--chunks", o->chunks, "Token chunks per step: N >= 1, or auto");
  sub.add_option("--workers", o->workers, "Compute worker threads per rank")->check(CLI::Range(1, 64));
  sub.add_option("--wire", o->wire,
                 "Precision of the rows the exchanges carry: f32, or bf16 (half the bytes; compute stays float32)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  sub.add_option("--trace", o->trace, "Write a Chrome trace (Perfetto) of every rank's tasks to this JSON file");
  sub.add_option("--dot", o->dot, "Write the step's task graphs as Graphviz DOT to this file");
}

int auto_chunks(std::int64_t mean_tokens, int nodes) {
  if (nodes <= 1) return 1;
  return static_cast<int>(std::clamp<std::int64_t>(mean_tokens / 256, 1, 8));
}

namespace {

int parse_chunks(const std::string& value) {
  if (value == "auto") return 0;
  std::size_t used = 0;
  int n = 0;
  try {
    n = std::stoi(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check_arg(used == value.size() && n >= 1 && n <= 64,
            "--chunks: expected an integer in [1, 64] or 'auto', got '" + value + "'");
  return n;
}

}  // namespace

void check_schedule_options(const ScheduleOptions& options) {
  parse_chunks(options.chunks);
  check_output_dir("--trace", options.trace);
  check_output_dir("--dot", options.dot);
}

StepRunner::StepRunner(const ScheduleOptions& options, comm::Communicator& comm, std::int64_t local_tokens)
    : options_(options), overlap_(options.overlap == "on") {
  check_schedule_options(options);
  chunks_ = parse_chunks(options.chunks);
  if (chunks_ == 0) {
    std::int64_t total[1] = {local_tokens};
    comm.allreduce_sum(total, 1);
    chunks_ = auto_chunks(total[0] / comm.size(), comm.num_nodes());
  }
  // One chunk has nothing to overlap: run it in sequence, without the
  // executor's thread hand-offs (its observers still see it).
  if (chunks_ == 1) overlap_ = false;
  // Library threads: the rank's threads (OMP_NUM_THREADS, else all cores)
  // are split among the compute workers, so GEMMs running side by side on
  // different workers never oversubscribe the cores.
  const int threads_per_worker = std::max(1, kernels::num_threads() / options.workers);
  executor_ = std::make_unique<Executor>(static_cast<std::size_t>(options.workers), [threads_per_worker](std::size_t) {
    kernels::set_num_threads(threads_per_worker);
  });
  if (!options.trace.empty()) {
    comm.barrier();  // NOTE: every rank's trace clock starts here, so the tracks line up
    trace_ = std::make_shared<ChromeTraceObserver>(comm.rank());
    executor_->add_observer(trace_);
  }
}

StepRunner::~StepRunner() = default;

layers::StepSchedule StepRunner::schedule(bool overlap) const {
  return layers::StepSchedule{
      .chunks = chunks_, .overlap = overlap, .executor = executor_.get(), .wire_bf16 = options_.wire == "bf16"};
}

void StepRunner::restart_trace() {
  if (trace_) trace_->clear();
}

void StepRunner::write_outputs(comm::Communicator& comm, layers::MoeLayer& layer, bool backward) const {
  const int R = comm.size(), me = comm.rank();
  if (!options_.dot.empty() && me == 0) {
    std::ostringstream dot;
    layer.dump_graph(dot, chunks_, false);
    if (backward) layer.dump_graph(dot, chunks_, true);
    const std::string text = dot.str();
    write_file_atomically(options_.dot, text.data(), text.size());
  }
  if (!trace_) return;
  // Every rank's events to rank 0, which merges them into one file.
  const std::string mine = trace_->to_json();
  const comm::GatheredBytes all = comm::gather_to_root(comm, mine.data(), mine.size(), 0);
  if (me != 0) return;
  nlohmann::json merged = {{"traceEvents", nlohmann::json::array()}, {"displayTimeUnit", "ms"}};
  for (int r = 0; r < R; ++r) {
    auto part = nlohmann::json::parse(all.part(r));
    for (auto& event : part["traceEvents"]) merged["traceEvents"].push_back(std::move(event));
  }
  const std::string text = merged.dump();
  write_file_atomically(options_.trace, text.data(), text.size());
}

}  // namespace switchyard::launch
