// ChromeTraceObserver: one span per task, written as Chrome trace JSON.
#include <cstdio>
#include <string>

#include "switchyard/runtime/atomic_file.hpp"
#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/task_graph.hpp"

namespace switchyard {

ChromeTraceObserver::ChromeTraceObserver(int pid, std::size_t reserve_per_worker)
    : pid_(pid), reserve_(reserve_per_worker), origin_(std::chrono::steady_clock::now()) {}

long long ChromeTraceObserver::now_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - origin_).count();
}

void ChromeTraceObserver::set_up(std::size_t num_workers) {
  num_workers_ = num_workers;
  if (tracks_.size() < num_workers + 1) tracks_.resize(num_workers + 1);
  for (Track& track : tracks_) track.spans.reserve(reserve_);
}

// NOTE: each worker touches only its own track, and set_up sized tracks_
// before any run, so recording needs no lock.
void ChromeTraceObserver::on_entry(std::size_t worker_id, const TaskInfo& task) {
  tracks_[worker_id].open_ns = now_ns();
}

void ChromeTraceObserver::on_exit(std::size_t worker_id, const TaskInfo& task) {
  Track& track = tracks_[worker_id];
  track.spans.push_back(Span{task.name, task.kind, task.bytes, track.open_ns, now_ns()});
}

std::size_t ChromeTraceObserver::num_events() const {
  std::size_t n = 0;
  for (const Track& track : tracks_) n += track.spans.size();
  return n;
}

void ChromeTraceObserver::clear() {
  for (Track& track : tracks_) track.spans.clear();
}

namespace {

void append_json_string(std::string& out, const std::string& s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

// Microseconds with nanosecond precision, as Chrome's "ts"/"dur" expect.
std::string micros(long long ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld.%03lld", ns / 1000, ns % 1000);
  return buf;
}

}  // namespace

std::string ChromeTraceObserver::to_json() const {
  const std::string pid = std::to_string(pid_);
  std::string out = "{\"traceEvents\": [\n";
  bool first = true;
  auto begin_event = [&] {
    if (!first) out += ",\n";
    first = false;
  };
  begin_event();
  out += "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": " + pid + ", \"tid\": 0, \"args\": {\"name\": \"rank " +
         pid + "\"}}";
  for (std::size_t tid = 0; tid < tracks_.size(); ++tid) {
    std::string label = tid == num_workers_ ? "comm" : "worker " + std::to_string(tid);
    begin_event();
    out += "{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": " + pid + ", \"tid\": " + std::to_string(tid) +
           ", \"args\": {\"name\": \"" + label + "\"}}";
  }
  for (std::size_t tid = 0; tid < tracks_.size(); ++tid) {
    for (const Span& span : tracks_[tid].spans) {
      begin_event();
      out += "{\"name\": ";
      append_json_string(out, span.name);
      out += ", \"cat\": \"";
      out += task_kind_name(span.kind);
      out += "\", \"ph\": \"X\", \"ts\": " + micros(span.begin_ns) +
             ", \"dur\": " + micros(span.end_ns - span.begin_ns) + ", \"pid\": " + pid +
             ", \"tid\": " + std::to_string(tid) + ", \"args\": {\"bytes\": " + std::to_string(span.bytes) + "}}";
    }
  }
  out += "\n]}\n";
  return out;
}

void ChromeTraceObserver::write(const std::string& path) const {
  std::string json = to_json();
  write_file_atomically(path, json.data(), json.size());
}

}  // namespace switchyard
