#include "switchyard/runtime/task_graph.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <new>
#include <queue>
#include <utility>

#include "switchyard/runtime/error.hpp"

namespace switchyard {

const char* task_kind_name(TaskKind kind) { return kind == TaskKind::kComm ? "comm" : "compute"; }

// ---- Task / TaskGraph -------------------------------------------------------

const TaskInfo& Task::info() const {
  check_arg(graph_ != nullptr, "empty task handle");
  return graph_->nodes_[id_].info;
}

void Task::add_edge(const Task& from, const Task& to) {
  check_arg(from.graph_ != nullptr && to.graph_ != nullptr, "task edge with an empty task handle");
  check_arg(from.graph_ == to.graph_,
            "task edge between tasks of different graphs ('" + from.name() + "' -> '" + to.name() + "')");
  TaskGraph& g = *from.graph_;
  g.nodes_[from.id_].successors.push_back(to.id_);
  ++g.nodes_[to.id_].in_degree;
  g.validated_ = false;
}

Task TaskGraph::emplace(std::string name, std::function<void()> fn, TaskKind kind, std::size_t bytes) {
  check_arg(static_cast<bool>(fn), "task '" + name + "' has no function");
  Node node;
  node.info = TaskInfo{std::move(name), kind, bytes, nodes_.size()};
  node.fn = std::move(fn);
  nodes_.push_back(std::move(node));
  validated_ = false;
  return Task(this, nodes_.size() - 1);
}

void TaskGraph::set_bytes(std::size_t id, std::size_t bytes) {
  check_arg(id < nodes_.size(), "task id " + std::to_string(id) + " out of range");
  nodes_[id].info.bytes = bytes;
}

double TaskGraph::seconds(std::size_t id) const {
  check_arg(id < nodes_.size(), "task id " + std::to_string(id) + " out of range");
  return nodes_[id].seconds;
}

Task TaskGraph::task(std::size_t id) {
  check_arg(id < nodes_.size(),
            "task id " + std::to_string(id) + " out of range (graph has " + std::to_string(nodes_.size()) + " tasks)");
  return Task(this, id);
}

void TaskGraph::validate() {
  if (validated_) return;
  const std::size_t n = nodes_.size();
  // Kahn's algorithm, smallest id first, so the order is deterministic.
  std::vector<std::size_t> in(n);
  for (std::size_t i = 0; i < n; ++i) in[i] = nodes_[i].in_degree;
  std::priority_queue<std::size_t, std::vector<std::size_t>, std::greater<>> ready;
  for (std::size_t i = 0; i < n; ++i)
    if (in[i] == 0) ready.push(i);
  std::vector<std::size_t> comm, order;
  order.reserve(n);
  std::size_t visited = 0;
  while (!ready.empty()) {
    std::size_t t = ready.top();
    ready.pop();
    ++visited;
    order.push_back(t);
    if (nodes_[t].info.kind == TaskKind::kComm) comm.push_back(t);
    for (std::size_t s : nodes_[t].successors)
      if (--in[s] == 0) ready.push(s);
  }
  if (visited != n) {
    // Every task left over has a left-over predecessor, so walking
    // predecessors from any of them must come back to a task seen before:
    // that walk closes a cycle. (Walking successors could end downstream of
    // the cycle instead.)
    std::vector<std::size_t> pred(n, n);
    for (std::size_t i = 0; i < n; ++i) {
      if (in[i] == 0) continue;
      for (std::size_t s : nodes_[i].successors) pred[s] = i;
    }
    std::size_t start = 0;
    while (in[start] == 0) ++start;
    std::vector<std::size_t> pos(n, n), path;
    std::size_t t = start;
    while (pos[t] == n) {
      pos[t] = path.size();
      path.push_back(t);
      t = pred[t];
    }
    // path[pos[t]..] is the cycle, walked backwards.
    std::string msg = "task graph has a cycle: '" + nodes_[t].info.name + "'";
    for (std::size_t i = path.size(); i-- > pos[t];) msg += " -> '" + nodes_[path[i]].info.name + "'";
    throw Error(ErrorCode::kInvalidArgument, msg);
  }
  comm_order_ = std::move(comm);
  order_ = std::move(order);
  validated_ = true;
}

const std::vector<std::size_t>& TaskGraph::comm_order() {
  validate();
  return comm_order_;
}

namespace {
std::string dot_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}
}  // namespace

void TaskGraph::dump_dot(std::ostream& out) const {
  out << "digraph taskgraph {\n";
  for (const Node& node : nodes_)
    out << "  task" << node.info.id << " [label=\"" << dot_escape(node.info.name)
        << "\" shape=" << (node.info.kind == TaskKind::kComm ? "ellipse" : "box") << "];\n";
  for (const Node& node : nodes_)
    for (std::size_t s : node.successors) out << "  task" << node.info.id << " -> task" << s << ";\n";
  out << "}\n";
}

// ---- Executor ---------------------------------------------------------------

namespace {

// A switchyard::Error unchanged; std::bad_alloc as Error(kOutOfMemory) and
// anything else as Error(kInternal), both naming the task.
[[noreturn]] void rethrow_task_failure(std::exception_ptr failure, const std::string& name) {
  try {
    std::rethrow_exception(failure);
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    // NOTE: an allocation failing is not a broken invariant: as its own code
    // it is agreed across ranks and reported like any other error.
    throw Error(ErrorCode::kOutOfMemory, "task '" + name + "' failed: out of memory");
  } catch (const std::exception& e) {
    throw Error(ErrorCode::kInternal, "task '" + name + "' failed: " + e.what());
  } catch (...) {
    throw Error(ErrorCode::kInternal, "task '" + name + "' failed with a non-standard exception");
  }
}

}  // namespace

Executor::Executor(std::size_t num_workers, std::function<void(std::size_t)> on_worker_start) {
  check_arg(num_workers > 0, "executor needs at least one compute worker");
  workers_.reserve(num_workers);
  for (std::size_t w = 0; w < num_workers; ++w)
    workers_.emplace_back([this, w, on_worker_start] {
      if (on_worker_start) on_worker_start(w);
      compute_loop(w);
    });
  comm_thread_ = std::thread([this] { comm_loop(); });
}

Executor::~Executor() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  comm_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  comm_thread_.join();
}

void Executor::add_observer(std::shared_ptr<TaskObserver> observer) {
  check_arg(observer != nullptr, "null task observer");
  observer->set_up(num_workers());
  observers_.push_back(std::move(observer));
}

bool Executor::comm_ready() const {
  const auto& order = graph_->comm_order_;
  return comm_next_ < order.size() && pending_[order[comm_next_]] == 0;
}

void Executor::compute_loop(std::size_t worker_id) {
  std::unique_lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || (active_ && !halted_ && !ready_.empty()); });
    if (stop_) return;
    // Smallest id first: graphs list the pieces that feed exchanges (and so
    // unblock peers) before the long compute that can wait.
    std::pop_heap(ready_.begin(), ready_.end(), std::greater<>());
    std::size_t t = ready_.back();
    ready_.pop_back();
    ++running_;
    const bool skip = failed_;  // after a failure compute tasks only pass their turn on
    lock.unlock();
    if (!skip) execute(worker_id, t);
    lock.lock();
    finish(t);
  }
}

void Executor::comm_loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    comm_cv_.wait(lock, [&] { return stop_ || (active_ && !halted_ && comm_ready()); });
    if (stop_) return;
    std::size_t t = graph_->comm_order_[comm_next_++];
    ++running_;
    lock.unlock();
    execute(comm_worker_id(), t);
    lock.lock();
    finish(t);
  }
}

std::exception_ptr TaskGraph::run_observed(Node& node, const std::vector<std::shared_ptr<TaskObserver>>& observers,
                                           std::size_t worker_id) {
  std::exception_ptr failure;
  try {
    for (const auto& o : observers) o->on_entry(worker_id, node.info);
    const auto start = std::chrono::steady_clock::now();
    try {
      node.fn();
    } catch (...) {
      failure = std::current_exception();
    }
    node.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (const auto& o : observers) o->on_exit(worker_id, node.info);
  } catch (...) {
    if (!failure) failure = std::current_exception();
  }
  return failure;
}

void Executor::execute(std::size_t worker_id, std::size_t task) {
  // NOTE: graph_ and observers_ are only changed between runs, so reading
  // them without mu_ is safe here.
  const std::exception_ptr failure = TaskGraph::run_observed(graph_->nodes_[task], observers_, worker_id);
  if (failure) {
    std::lock_guard lock(mu_);
    record_failure(failure, task);
  }
}

void Executor::record_failure(std::exception_ptr failure, std::size_t task) {
  if (!failed_) {
    failed_ = true;
    error_ = failure;
    error_task_ = task;
  }
  // NOTE: a failed exchange leaves the communicator in an unknown state, so
  // nothing runs after it; after a compute failure the exchanges still run
  // so that peers waiting in them finish the step too.
  if (graph_->nodes_[task].info.kind == TaskKind::kComm) halted_ = true;
}

void Executor::finish(std::size_t task) {
  --running_;
  ++finished_;
  bool new_compute = false, new_comm = false;
  if (!halted_) {
    for (std::size_t s : graph_->nodes_[task].successors) {
      if (--pending_[s] != 0) continue;
      if (graph_->nodes_[s].info.kind == TaskKind::kComm) {
        new_comm = true;
      } else {
        ready_.push_back(s);  // NOTE: never reallocates: capacity >= graph size (run)
        std::push_heap(ready_.begin(), ready_.end(), std::greater<>());
        new_compute = true;
      }
    }
  }
  if (new_compute) work_cv_.notify_all();
  if (new_comm) comm_cv_.notify_one();
  if (finished_ == graph_->nodes_.size() || (halted_ && running_ == 0)) done_cv_.notify_all();
}

void Executor::run(TaskGraph& graph) {
  std::lock_guard run_lock(run_mu_);
  graph.validate();
  const std::size_t n = graph.nodes_.size();
  if (n == 0) return;
  {
    std::unique_lock lock(mu_);
    graph_ = &graph;
    pending_.resize(n);  // allocates only when a graph is larger than any before
    ready_.clear();
    ready_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      pending_[i] = graph.nodes_[i].in_degree;
      graph.nodes_[i].seconds = 0.0;
      // NOTE: pushed in increasing id order, the list is already a min-heap.
      if (pending_[i] == 0 && graph.nodes_[i].info.kind == TaskKind::kCompute) ready_.push_back(i);
    }
    comm_next_ = finished_ = running_ = 0;
    failed_ = halted_ = false;
    error_ = nullptr;
    active_ = true;
    work_cv_.notify_all();
    comm_cv_.notify_all();
    done_cv_.wait(lock, [&] { return finished_ == n || (halted_ && running_ == 0); });
    active_ = false;
    ready_.clear();
    graph_ = nullptr;
  }
  rethrow_failure(graph);
}

void Executor::run_in_sequence(TaskGraph& graph) {
  std::lock_guard run_lock(run_mu_);
  switchyard::run_in_sequence(graph, observers_, comm_worker_id());
}

void run_in_sequence(TaskGraph& graph, const std::vector<std::shared_ptr<TaskObserver>>& observers,
                     std::size_t comm_worker_id) {
  graph.validate();
  std::exception_ptr error;
  std::size_t error_task = 0;
  bool halted = false;
  for (std::size_t t : graph.order_) {
    TaskGraph::Node& node = graph.nodes_[t];
    const bool comm = node.info.kind == TaskKind::kComm;
    node.seconds = 0.0;
    if (halted || (error && !comm)) continue;  // the failure rules of Executor::run
    const std::exception_ptr failure = TaskGraph::run_observed(node, observers, comm ? comm_worker_id : 0);
    if (!failure) continue;
    if (!error) {
      error = failure;
      error_task = t;
    }
    halted = halted || comm;
  }
  if (error) rethrow_task_failure(error, graph.nodes_[error_task].info.name);
}

void Executor::rethrow_failure(const TaskGraph& graph) {
  if (!error_) return;
  rethrow_task_failure(std::exchange(error_, nullptr), graph.nodes_[error_task_].info.name);
}

}  // namespace switchyard
