// The task graph and its executor: dependencies under random timing, the
// communication thread's order, failure propagation, cycles, DOT and trace.
#include "switchyard/runtime/task_graph.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "switchyard/runtime/error.hpp"

namespace {

namespace fs = std::filesystem;
using switchyard::ChromeTraceObserver;
using switchyard::Error;
using switchyard::ErrorCode;
using switchyard::Executor;
using switchyard::Task;
using switchyard::TaskGraph;
using switchyard::TaskKind;

// A random DAG: task ids are in random order relative to the dependency
// order (a hidden rank), each task has up to 3 predecessors of lower rank,
// about one in five tasks is a communication task, and each sleeps 0-200 us.
struct RandomDag {
  std::vector<std::vector<std::size_t>> preds;
  std::vector<TaskKind> kinds;
  std::vector<int> sleep_us;
  std::vector<std::size_t> bytes;
};

RandomDag make_random_dag(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::size_t> by_rank(n);  // by_rank[r] = id of the task with rank r
  std::iota(by_rank.begin(), by_rank.end(), 0);
  std::shuffle(by_rank.begin(), by_rank.end(), rng);
  RandomDag dag;
  dag.preds.resize(n);
  dag.kinds.resize(n);
  dag.sleep_us.resize(n);
  dag.bytes.resize(n);
  for (std::size_t r = 0; r < n; ++r) {
    std::size_t id = by_rank[r];
    int fan_in = r == 0 ? 0 : static_cast<int>(rng() % 4);
    for (int k = 0; k < fan_in; ++k) {
      std::size_t p = by_rank[rng() % r];
      if (std::find(dag.preds[id].begin(), dag.preds[id].end(), p) == dag.preds[id].end()) dag.preds[id].push_back(p);
    }
    dag.kinds[id] = rng() % 5 == 0 ? TaskKind::kComm : TaskKind::kCompute;
    dag.sleep_us[id] = static_cast<int>(rng() % 201);
    dag.bytes[id] = rng() % 100000;
  }
  return dag;
}

// Records, per run, how often each task ran, dependency violations, the
// communication tasks' order and how many communication tasks overlapped.
struct Recorder {
  explicit Recorder(std::size_t n) : done(n), runs(n) {}
  std::vector<std::atomic<bool>> done;
  std::vector<std::atomic<int>> runs;
  std::atomic<int> violations{0};
  std::atomic<int> comm_active{0};
  std::atomic<int> comm_max{0};
  std::mutex mu;
  std::vector<std::size_t> comm_sequence;

  void reset() {
    for (auto& d : done) d = false;
    for (auto& r : runs) r = 0;
    violations = 0;
    comm_active = 0;
    comm_max = 0;
    comm_sequence.clear();
  }
};

void build(TaskGraph& g, const RandomDag& dag, Recorder& rec) {
  const std::size_t n = dag.preds.size();
  for (std::size_t i = 0; i < n; ++i) {
    std::string name = "t";  // NOTE: not "t" + to_string(i): GCC 12 warns falsely (-Wrestrict)
    name += std::to_string(i);
    g.emplace(
        name,
        [&dag, &rec, i] {
          const bool comm = dag.kinds[i] == TaskKind::kComm;
          if (comm) {
            int active = ++rec.comm_active;
            int seen = rec.comm_max.load();
            while (active > seen && !rec.comm_max.compare_exchange_weak(seen, active)) {
            }
            std::lock_guard lock(rec.mu);
            rec.comm_sequence.push_back(i);
          }
          for (std::size_t p : dag.preds[i])
            if (!rec.done[p]) ++rec.violations;
          std::this_thread::sleep_for(std::chrono::microseconds(dag.sleep_us[i]));
          ++rec.runs[i];
          rec.done[i] = true;
          if (comm) --rec.comm_active;
        },
        dag.kinds[i], dag.bytes[i]);
  }
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t p : dag.preds[i]) g.task(p).precede(g.task(i));
}

TEST(TaskGraph, RandomDagRunsEveryTaskOnceAfterItsPredecessors) {
  constexpr std::size_t kTasks = 200;
  for (std::size_t workers : {1, 2, 3}) {
    Executor executor(workers);
    for (unsigned seed : {1u, 2u, 3u}) {
      SCOPED_TRACE("workers " + std::to_string(workers) + " seed " + std::to_string(seed));
      RandomDag dag = make_random_dag(kTasks, seed);
      Recorder rec(kTasks);
      TaskGraph g;
      build(g, dag, rec);
      const std::vector<std::size_t> expected_comm = g.comm_order();
      ASSERT_FALSE(expected_comm.empty());
      for (int run = 0; run < 3; ++run) {  // the same graph, reused
        rec.reset();
        executor.run(g);
        EXPECT_EQ(rec.violations.load(), 0);
        for (std::size_t i = 0; i < kTasks; ++i) ASSERT_EQ(rec.runs[i].load(), 1) << "task t" << i;
        EXPECT_EQ(rec.comm_max.load(), 1) << "communication tasks overlapped";
        EXPECT_EQ(rec.comm_sequence, expected_comm);
      }
    }
  }
}

TEST(TaskGraph, CommTasksRunOneAtATimeInSmallestIdFirstTopologicalOrder) {
  // ids: 0 c_late (comm, after c_mid), 1 prep (compute, 2 ms), 2 c_first
  // (comm), 3 c_mid (comm, after prep). Smallest-id-first topological order:
  // prep, c_first, c_mid, c_late -> the comm thread runs c_first, c_mid,
  // c_late, and c_mid waits for prep although c_late has the smaller id.
  TaskGraph g;
  std::mutex mu;
  std::vector<std::string> order;
  std::atomic<bool> prep_done{false};
  auto comm = [&](const std::string& name) {
    return [&, name] {
      std::lock_guard lock(mu);
      order.push_back(name);
    };
  };
  Task c_late = g.emplace("c_late", comm("c_late"), TaskKind::kComm);
  Task prep = g.emplace("prep", [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    prep_done = true;
  });
  Task c_first = g.emplace("c_first", comm("c_first"), TaskKind::kComm);
  Task c_mid = g.emplace(
      "c_mid",
      [&] {
        EXPECT_TRUE(prep_done.load());
        comm("c_mid")();
      },
      TaskKind::kComm);
  prep.precede(c_mid);
  c_mid.precede(c_late);
  EXPECT_EQ(g.comm_order(), (std::vector<std::size_t>{2, 3, 0}));
  (void)c_first;
  Executor executor(3);
  for (int run = 0; run < 5; ++run) {
    order.clear();
    prep_done = false;
    executor.run(g);
    EXPECT_EQ(order, (std::vector<std::string>{"c_first", "c_mid", "c_late"}));
  }
}

TEST(TaskGraph, FailingTaskSkipsComputeKeepsCommAndRunRethrowsIt) {
  Executor executor(2);
  std::atomic<int> a_runs{0}, c_runs{0}, d_runs{0};
  TaskGraph g;
  Task a = g.emplace("a", [&] { ++a_runs; });
  Task b = g.emplace("b", [] { throw Error(ErrorCode::kIo, "disk full"); });
  Task c = g.emplace("c", [&] { ++c_runs; });
  Task d = g.emplace(
      "d", [&] { ++d_runs; }, TaskKind::kComm);
  a.precede(b);
  b.precede(c, d);
  for (int run = 1; run <= 2; ++run) {  // fails the same way again: the executor recovered
    try {
      executor.run(g);
      FAIL() << "run did not throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kIo);
      EXPECT_STREQ(e.what(), "disk full");
    }
    EXPECT_EQ(a_runs.load(), run);
    EXPECT_EQ(c_runs.load(), 0);    // compute after a failure is skipped
    EXPECT_EQ(d_runs.load(), run);  // exchanges still run: peers wait in them
  }

  // A foreign exception in a communication task becomes Error(kInternal) naming it.
  TaskGraph h;
  h.emplace(
      "send-to-rank-1", [] { throw std::runtime_error("peer gone"); }, TaskKind::kComm);
  try {
    executor.run(h);
    FAIL() << "run did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInternal);
    EXPECT_NE(std::string(e.what()).find("send-to-rank-1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("peer gone"), std::string::npos) << e.what();
  }

  // And a healthy graph still runs completely afterwards.
  TaskGraph ok;
  std::atomic<int> runs{0};
  Task x = ok.emplace("x", [&] { ++runs; });
  Task y = ok.emplace(
      "y", [&] { ++runs; }, TaskKind::kComm);
  Task z = ok.emplace("z", [&] { ++runs; });
  x.precede(y);
  y.precede(z);
  executor.run(ok);
  EXPECT_EQ(runs.load(), 3);
}

// The graph times each task's function itself (PhaseTimer sums these): a
// task that sleeps reports at least its sleep, a skipped one 0, both from
// the executor and from run_in_sequence.
TEST(TaskGraph, RecordsEachTasksTimeInTheLastRun) {
  using namespace std::chrono_literals;
  Executor executor(2);
  bool fail = false;
  TaskGraph g;
  Task slow = g.emplace("slow", [&] {
    std::this_thread::sleep_for(30ms);
    if (fail) throw Error(ErrorCode::kIo, "disk full");
  });
  Task after = g.emplace("after", [] { std::this_thread::sleep_for(20ms); });
  slow.precede(after);
  for (int sequential = 0; sequential < 2; ++sequential) {
    fail = false;
    sequential ? executor.run_in_sequence(g) : executor.run(g);
    EXPECT_GE(g.seconds(slow.info().id), 0.030);
    EXPECT_LT(g.seconds(slow.info().id), 10.0);
    EXPECT_GE(g.seconds(after.info().id), 0.020);
    fail = true;
    EXPECT_THROW(sequential ? executor.run_in_sequence(g) : executor.run(g), Error);
    EXPECT_GE(g.seconds(slow.info().id), 0.030);  // a failed task still reports its time
    EXPECT_EQ(g.seconds(after.info().id), 0.0);   // a skipped one reports none
  }
  EXPECT_THROW(g.seconds(2), Error);
}

TEST(TaskGraph, FailingCommTaskHaltsEverything) {
  Executor executor(2);
  std::atomic<int> later{0};
  TaskGraph g;
  Task send = g.emplace(
      "send", [] { throw Error(ErrorCode::kMpi, "link down"); }, TaskKind::kComm);
  Task next = g.emplace(
      "next-send", [&] { ++later; }, TaskKind::kComm);
  Task work = g.emplace("work", [&] { ++later; });
  send.precede(next, work);
  EXPECT_THROW(executor.run(g), Error);
  EXPECT_EQ(later.load(), 0);
}

TEST(TaskGraph, RunInSequenceFollowsTopologicalOrderOnTheCallingThread) {
  Executor executor(3);
  TaskGraph g;
  std::vector<std::string> order;
  const auto caller = std::this_thread::get_id();
  bool all_on_caller = true;
  auto task = [&](const char* name) {
    return [&, name] {
      all_on_caller = all_on_caller && std::this_thread::get_id() == caller;
      order.emplace_back(name);
    };
  };
  Task c = g.emplace("c", task("c"));
  Task a = g.emplace("a", task("a"));
  Task x = g.emplace("x", task("x"), TaskKind::kComm);
  Task b = g.emplace("b", task("b"));
  a.precede(c);  // c (id 0) must wait for a (id 1)
  x.precede(b);
  executor.run_in_sequence(g);
  EXPECT_TRUE(all_on_caller);
  EXPECT_EQ(order, (std::vector<std::string>{"a", "c", "x", "b"}));

  // Same failure rules as run(): compute skipped, exchanges still run.
  TaskGraph h;
  int comm_runs = 0, compute_runs = 0;
  Task f = h.emplace("fail", [] { throw Error(ErrorCode::kIo, "bad"); });
  Task y = h.emplace(
      "exchange", [&] { ++comm_runs; }, TaskKind::kComm);
  Task z = h.emplace("after", [&] { ++compute_runs; });
  f.precede(y);
  y.precede(z);
  EXPECT_THROW(executor.run_in_sequence(h), Error);
  EXPECT_EQ(comm_runs, 1);
  EXPECT_EQ(compute_runs, 0);
}

TEST(TaskGraph, CycleIsReportedNamingItsTasks) {
  TaskGraph g;
  auto noop = [] {};
  Task a = g.emplace("alpha", noop);
  Task b = g.emplace("beta", noop, TaskKind::kComm);
  Task c = g.emplace("gamma", noop);
  Task d = g.emplace("delta", noop);
  d.precede(a);  // upstream of the cycle, not on it
  a.precede(b);
  b.precede(c);
  c.precede(a);
  try {
    g.validate();
    FAIL() << "validate did not throw";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(msg.find("cycle"), std::string::npos) << msg;
    for (const char* name : {"'alpha'", "'beta'", "'gamma'"}) EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_EQ(msg.find("delta"), std::string::npos) << msg;
  }
  Executor executor(1);
  EXPECT_THROW(executor.run(g), Error);

  TaskGraph self;
  Task x = self.emplace("loner", noop);
  x.precede(x);
  try {
    self.validate();
    FAIL() << "validate did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'loner'"), std::string::npos) << e.what();
  }
}

TEST(TaskGraph, BadArgumentsAreRejected) {
  TaskGraph g, other;
  EXPECT_THROW(g.emplace("empty", nullptr), Error);
  Task a = g.emplace("a", [] {});
  Task b = other.emplace("b", [] {});
  EXPECT_THROW(a.precede(b), Error);
  EXPECT_THROW(a.precede(Task()), Error);
  EXPECT_THROW(g.task(5), Error);
  EXPECT_THROW(Executor(0), Error);
  Executor executor(1);
  TaskGraph empty;
  executor.run(empty);  // nothing to do, returns at once
}

TEST(TaskGraph, DotDumpHasEveryTaskAndEdge) {
  TaskGraph g;
  Task a = g.emplace("route", [] {});
  Task b = g.emplace(
      "send \"x\"", [] {}, TaskKind::kComm);
  Task c = g.emplace("expert", [] {});
  a.precede(b, c);
  b.precede(c);
  std::ostringstream out;
  g.dump_dot(out);
  const std::string dot = out.str();
  for (const char* line :
       {"task0 [label=\"route\" shape=box];", "task1 [label=\"send \\\"x\\\"\" shape=ellipse];",
        "task2 [label=\"expert\" shape=box];", "task0 -> task1;", "task0 -> task2;", "task1 -> task2;"})
    EXPECT_NE(dot.find(line), std::string::npos) << line << "\n" << dot;
  EXPECT_EQ(dot.rfind("digraph", 0), 0u);
}

TEST(TaskGraph, ChromeTraceHasOneSpanPerTaskOnNonOverlappingTracks) {
  constexpr std::size_t kTasks = 60;
  constexpr std::size_t kWorkers = 3;
  RandomDag dag = make_random_dag(kTasks, 7);
  Recorder rec(kTasks);
  TaskGraph g;
  build(g, dag, rec);
  Executor executor(kWorkers);
  auto trace = std::make_shared<ChromeTraceObserver>(/*pid=*/5);
  executor.add_observer(trace);
  executor.run(g);
  ASSERT_EQ(trace->num_events(), kTasks);

  fs::path dir = fs::temp_directory_path() / ("switchyard_trace_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::path path = dir / "trace.json";
  trace->write(path.string());
  ASSERT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1) << "temporary left behind";
  std::ifstream in(path);
  nlohmann::json json = nlohmann::json::parse(in);
  fs::remove_all(dir);

  std::map<std::string, int> seen;
  std::map<long, std::vector<std::pair<double, double>>> spans_by_tid;
  std::map<long, std::string> thread_names;
  for (const auto& ev : json.at("traceEvents")) {
    EXPECT_EQ(ev.at("pid").get<int>(), 5);
    const std::string ph = ev.at("ph");
    if (ph == "M") {
      if (ev.at("name") == "thread_name") thread_names[ev.at("tid").get<long>()] = ev.at("args").at("name");
      continue;
    }
    ASSERT_EQ(ph, "X");
    const std::string name = ev.at("name");
    ASSERT_EQ(name[0], 't');
    std::size_t id = std::stoul(name.substr(1));
    ASSERT_LT(id, kTasks);
    ++seen[name];
    const long tid = ev.at("tid").get<long>();
    const bool comm = dag.kinds[id] == TaskKind::kComm;
    EXPECT_EQ(ev.at("cat").get<std::string>(), comm ? "comm" : "compute");
    if (comm)
      EXPECT_EQ(tid, static_cast<long>(kWorkers)) << name;
    else
      EXPECT_LT(tid, static_cast<long>(kWorkers)) << name;
    EXPECT_EQ(ev.at("args").at("bytes").get<std::size_t>(), dag.bytes[id]);
    const double ts = ev.at("ts"), dur = ev.at("dur");
    EXPECT_GE(ts, 0);
    EXPECT_GE(dur, 0);
    spans_by_tid[tid].push_back({ts, ts + dur});
  }
  EXPECT_EQ(seen.size(), kTasks);
  for (const auto& [name, count] : seen) EXPECT_EQ(count, 1) << name;
  for (auto& [tid, spans] : spans_by_tid) {
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i) EXPECT_LE(spans[i - 1].second, spans[i].first) << "tid " << tid;
  }
  ASSERT_EQ(thread_names.size(), kWorkers + 1);
  EXPECT_EQ(thread_names[0], "worker 0");
  EXPECT_EQ(thread_names[kWorkers], "comm");
}

}  // namespace
