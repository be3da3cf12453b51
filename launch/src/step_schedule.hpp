#pragma once
// The command-line side of a step's schedule, shared by forward, bench and
// train: --overlap, --chunks, --workers, --trace and --dot, the executor and
// the trace they need, and the library-thread rule (docs/task-graph.md).
#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/layers/moe_layer.hpp"
#include "switchyard/runtime/task_graph.hpp"

namespace switchyard::launch {

struct ScheduleOptions {
  std::string overlap = "on";   // on | off
  std::string chunks = "auto";  // N >= 1 | auto
  int workers = 1;              // compute workers of the executor
  std::string wire = "f32";     // f32 | bf16: the precision of exchanged rows
  std::string trace;            // Chrome trace of every rank, written by rank 0
  std::string dot;              // the step's task graphs as Graphviz DOT, written by rank 0
};

void add_schedule_options(CLI::App& sub, ScheduleOptions* o);

/// Checks the flags (chunk count, output directories) before any work or
/// output starts. Throws Error(kInvalidArgument) naming the flag.
void check_schedule_options(const ScheduleOptions& options);

/// --chunks auto: one chunk on one node (shared memory moves the rows in a
/// few percent of the expert time: nothing worth hiding, and bigger GEMMs
/// run faster), else about 256 tokens per chunk (measured best across 2
/// emulated nodes at 1024 and 2048 tokens per rank, docs/task-graph.md), at
/// most 8. `mean_tokens` is the mean over
/// ranks (the same on all).
int auto_chunks(std::int64_t mean_tokens, int nodes);

/// Owns what running a schedule needs. Collective to construct (agrees on
/// the chunk count, aligns the trace clocks with a barrier).
class StepRunner {
 public:
  /// `local_tokens`: this rank's tokens per step (for --chunks auto).
  /// Throws Error(kInvalidArgument) naming the flag on a bad value.
  StepRunner(const ScheduleOptions& options, comm::Communicator& comm, std::int64_t local_tokens);
  ~StepRunner();

  /// The schedule the options ask for (`overlap` overrides --overlap).
  layers::StepSchedule schedule() const { return schedule(overlap_); }
  layers::StepSchedule schedule(bool overlap) const;
  int chunks() const { return chunks_; }
  bool overlap() const { return overlap_; }

  /// Forgets the spans recorded so far: the trace shows what follows.
  void restart_trace();
  /// Writes --trace (one process per rank) and --dot if asked. Collective.
  void write_outputs(comm::Communicator& comm, layers::MoeLayer& layer, bool backward) const;

 private:
  ScheduleOptions options_;
  int chunks_ = 1;
  bool overlap_ = true;
  std::unique_ptr<Executor> executor_;
  std::shared_ptr<ChromeTraceObserver> trace_;
};

}  // namespace switchyard::launch
