#pragma once
// A declarative task graph (what runs after what) and the executor that runs
// it: a pool of compute workers plus one dedicated communication thread.
// See docs/task-graph.md.
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

namespace switchyard {

/// Where a task runs: kCompute on the worker pool, kComm on the one
/// communication thread (one at a time, in a fixed topological order).
enum class TaskKind { kCompute, kComm };

/// Name of a task kind: "compute" or "comm".
const char* task_kind_name(TaskKind kind);

/// What an observer sees of a task. Stable for the lifetime of its graph.
struct TaskInfo {
  std::string name;
  TaskKind kind = TaskKind::kCompute;
  std::size_t bytes = 0;  // payload size for tracing (e.g. bytes sent); 0 if none
  std::size_t id = 0;     // index in insertion order, 0..graph.size()-1
};

class TaskGraph;
class TaskObserver;

/// A lightweight handle to a task inside a TaskGraph (a graph pointer and an
/// index); copyable, valid while its graph lives. Not thread-safe: like the
/// graph, it must not be used while the graph is running.
class Task {
 public:
  Task() = default;

  /// Adds edges this -> each of `others`: they start only after this task
  /// finished. Returns *this. Throws Error(kInvalidArgument) for an empty
  /// handle or a task of another graph. Cycles are reported by
  /// TaskGraph::validate() / Executor::run(), not here.
  template <typename... Ts>
  Task& precede(const Ts&... others) {
    (add_edge(*this, others), ...);
    return *this;
  }
  /// Adds edges each of `others` -> this. Returns *this. Errors as precede().
  template <typename... Ts>
  Task& succeed(const Ts&... others) {
    (add_edge(others, *this), ...);
    return *this;
  }

  /// The task's name, kind, byte count and id. Throws Error(kInvalidArgument) on an empty handle.
  const TaskInfo& info() const;
  const std::string& name() const { return info().name; }
  bool empty() const { return graph_ == nullptr; }

 private:
  friend class TaskGraph;
  Task(TaskGraph* graph, std::size_t id) : graph_(graph), id_(id) {}
  static void add_edge(const Task& from, const Task& to);

  TaskGraph* graph_ = nullptr;
  std::size_t id_ = 0;
};

/// A DAG of named tasks. Building it is single-threaded; it must not be
/// changed while an executor runs it, and one graph is run by one executor
/// at a time. Running it does not change it, so it can be run many times.
class TaskGraph {
 public:
  TaskGraph() = default;
  TaskGraph(const TaskGraph&) = delete;  // handles point into the graph
  TaskGraph& operator=(const TaskGraph&) = delete;

  /// Adds a task that calls `fn` once per run. `bytes` is only reported to
  /// observers (tracing). Throws Error(kInvalidArgument) if `fn` is empty.
  /// Names need not be unique, but unique names make errors and traces readable.
  Task emplace(std::string name, std::function<void()> fn, TaskKind kind = TaskKind::kCompute, std::size_t bytes = 0);

  /// Number of tasks.
  std::size_t size() const { return nodes_.size(); }
  /// Sets the byte count observers see for task `id`. Safe to call from
  /// inside that task while it runs (observers read it after it returns),
  /// for payloads only known then. Throws Error(kInvalidArgument) on a bad id.
  void set_bytes(std::size_t id, std::size_t bytes);
  /// Wall time in seconds of task `id`'s function in the last run of the
  /// graph (0 if that run skipped it after a failure, or before any run).
  /// Read it between runs. Throws Error(kInvalidArgument) on a bad id.
  double seconds(std::size_t id) const;
  /// The task with id `id` (0 <= id < size(), else Error(kInvalidArgument)).
  Task task(std::size_t id);

  /// Checks the graph is acyclic and precomputes what the executor needs
  /// (in-degrees, the order of communication tasks). Throws
  /// Error(kInvalidArgument) naming the tasks of one cycle, e.g.
  /// "task graph has a cycle: 'a' -> 'b' -> 'a'". Cheap when nothing changed
  /// since the last call. Executor::run() calls it.
  void validate();

  /// Ids of the communication tasks in the order the communication thread
  /// runs them: the smallest-id-first topological order of the whole graph,
  /// restricted to kComm tasks. Calls validate() (and throws as it does).
  const std::vector<std::size_t>& comm_order();

  /// Writes the graph in Graphviz DOT: one node per task (`task<id>`,
  /// labelled with its name; compute tasks are boxes, communication tasks
  /// ellipses) and one `task<a> -> task<b>` line per edge. Does not validate.
  void dump_dot(std::ostream& out) const;

 private:
  friend class Task;
  friend class Executor;
  friend void run_in_sequence(TaskGraph&, const std::vector<std::shared_ptr<TaskObserver>>&, std::size_t);
  struct Node {
    TaskInfo info;
    std::function<void()> fn;
    std::vector<std::size_t> successors;
    std::size_t in_degree = 0;
    double seconds = 0.0;  // its function's wall time in the last run
  };
  // Runs one task between its observers' calls and records its time; returns
  // what it (or an observer) threw.
  static std::exception_ptr run_observed(Node& node, const std::vector<std::shared_ptr<TaskObserver>>& observers,
                                         std::size_t worker_id);

  std::vector<Node> nodes_;
  std::vector<std::size_t> comm_order_;
  std::vector<std::size_t> order_;  // smallest-id-first topological order of all tasks
  bool validated_ = false;
};

/// Called by the executor around every task, on the thread that runs it.
/// Implementations must be thread-safe across different worker ids; calls
/// with one worker id never overlap.
class TaskObserver {
 public:
  virtual ~TaskObserver() = default;
  /// Called once when the observer is added: worker ids are 0..num_workers-1
  /// for compute workers and num_workers for the communication thread.
  virtual void set_up(std::size_t num_workers) {}
  /// Just before the task's function runs.
  virtual void on_entry(std::size_t worker_id, const TaskInfo& task) = 0;
  /// Just after it returned or threw.
  virtual void on_exit(std::size_t worker_id, const TaskInfo& task) = 0;
};

/// Runs every task of `graph` strictly in sequence on the calling thread, in
/// the smallest-id-first topological order (so communication tasks in the
/// order Executor::run uses), telling `observers` (compute tasks as worker 0,
/// communication tasks as `comm_worker_id`). Failures as Executor::run.
void run_in_sequence(TaskGraph& graph, const std::vector<std::shared_ptr<TaskObserver>>& observers = {},
                     std::size_t comm_worker_id = 1);

/// Runs task graphs: `num_workers` threads for compute tasks and one thread
/// for communication tasks, all started in the constructor and kept until
/// destruction. Destruction must not race with run().
class Executor {
 public:
  /// Starts the threads; each compute worker first calls `on_worker_start`
  /// (if given) with its id, e.g. to set its math library's thread count.
  /// Throws Error(kInvalidArgument) if num_workers == 0.
  explicit Executor(std::size_t num_workers, std::function<void(std::size_t)> on_worker_start = {});
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  /// Number of compute workers; also the worker id of the communication thread.
  std::size_t num_workers() const { return workers_.size(); }
  std::size_t comm_worker_id() const { return workers_.size(); }

  /// Adds an observer called around every task of later runs. Not
  /// thread-safe: call it between runs. Throws Error(kInvalidArgument) if null.
  void add_observer(std::shared_ptr<TaskObserver> observer);

  /// Runs every task of `graph` once, each after all its predecessors, and
  /// blocks until all finished; an idle worker takes the ready compute task
  /// with the smallest id. Validates first (Error(kInvalidArgument) on a
  /// cycle). If a task (or an observer) throws, the running tasks finish and
  /// run() rethrows the first failure on the calling thread: a
  /// switchyard::Error unchanged, std::bad_alloc as Error(kOutOfMemory), any
  /// other exception as Error(kInternal) naming the task. After a compute task failed, later compute tasks are
  /// skipped but communication tasks still run in their order, so peers in
  /// the same collective exchanges are not left waiting; after a
  /// communication task failed nothing else starts. The executor stays
  /// usable. Thread-safe: concurrent calls are serialized. Must not be
  /// called from inside a task of this executor (it would deadlock).
  void run(TaskGraph& graph);
  /// The same graph strictly in sequence on the calling thread
  /// (switchyard::run_in_sequence) with this executor's observers: the
  /// baseline that overlap is measured against.
  void run_in_sequence(TaskGraph& graph);

 private:
  void compute_loop(std::size_t worker_id);
  void comm_loop();
  void execute(std::size_t worker_id, std::size_t task);  // runs one task, records a failure
  void finish(std::size_t task);                          // under mu_: release successors
  bool comm_ready() const;
  void record_failure(std::exception_ptr failure, std::size_t task);  // under mu_
  void rethrow_failure(const TaskGraph& graph);

  std::vector<std::thread> workers_;
  std::thread comm_thread_;
  std::vector<std::shared_ptr<TaskObserver>> observers_;

  std::mutex run_mu_;  // serializes run()
  std::mutex mu_;      // guards everything below
  std::condition_variable work_cv_, comm_cv_, done_cv_;
  bool stop_ = false;
  bool active_ = false;  // a run is in progress
  bool failed_ = false;  // a task failed: compute tasks are skipped
  bool halted_ = false;  // a communication task failed: nothing more starts
  TaskGraph* graph_ = nullptr;
  std::vector<std::size_t> pending_;  // unfinished predecessors per task
  std::vector<std::size_t> ready_;    // runnable compute tasks, a min-heap by id (capacity kept across runs)
  std::size_t comm_next_ = 0;         // index into graph_->comm_order_
  std::size_t finished_ = 0;
  std::size_t running_ = 0;
  std::exception_ptr error_;
  std::size_t error_task_ = 0;
};

/// Records one span per task and writes Chrome trace JSON (chrome://tracing,
/// Perfetto): one track (tid) per compute worker and one for the
/// communication thread, all under process id `pid` (the rank).
/// on_entry/on_exit are thread-safe across workers and do not lock; the
/// other members must not be called while a run is in progress.
class ChromeTraceObserver : public TaskObserver {
 public:
  /// `pid` labels every event; `reserve_per_worker` spans are preallocated
  /// per track so that recording does not allocate until they are used up.
  explicit ChromeTraceObserver(int pid, std::size_t reserve_per_worker = 4096);

  void set_up(std::size_t num_workers) override;
  void on_entry(std::size_t worker_id, const TaskInfo& task) override;
  void on_exit(std::size_t worker_id, const TaskInfo& task) override;

  /// Total spans recorded so far.
  std::size_t num_events() const;
  /// Drops recorded spans (keeps the tracks and their capacity).
  void clear();
  /// The trace as JSON: {"traceEvents": [...]} with "X" events (name, cat =
  /// task kind, ts and dur in microseconds since construction, pid, tid,
  /// args.bytes) and "M" thread_name / process_name metadata events.
  std::string to_json() const;
  /// Writes to_json() to `path` through a temporary file and a rename.
  /// Throws Error(kIo) naming `path` on failure.
  void write(const std::string& path) const;

 private:
  struct Span {
    std::string name;  // NOTE: a copy, so the trace outlives the graph (short names stay in SSO)
    TaskKind kind;
    std::size_t bytes;
    long long begin_ns, end_ns;
  };
  struct Track {
    long long open_ns = 0;
    std::vector<Span> spans;
  };
  long long now_ns() const;

  int pid_;
  std::size_t reserve_;
  std::size_t num_workers_ = 0;
  std::vector<Track> tracks_;
  std::chrono::steady_clock::time_point origin_;
};

}  // namespace switchyard
