#pragma once
// Private: a step's task graph with the phase of each task (for PhaseTimer,
// which sums the graph's own task times by phase), shared by moe_layer.cpp
// and moe_step.cpp.
#include <functional>
#include <string>
#include <vector>

#include "switchyard/layers/moe_layer.hpp"
#include "switchyard/runtime/task_graph.hpp"

namespace switchyard::layers {

struct MoeLayer::StepGraph {
  TaskGraph graph;
  std::vector<std::string> phase;  // per task id: what kind of piece it is

  // Adds a task named "<phase>[<chunk>]" (or "<phase>"); communication tasks
  // return their payload bytes for traces.
  Task add(const std::string& what, int chunk, std::function<void()> fn) {
    return add_task(what, chunk, TaskKind::kCompute, [fn = std::move(fn)] {
      fn();
      return std::size_t{0};
    });
  }
  Task add_comm(const std::string& what, int chunk, std::function<std::size_t()> fn) {
    return add_task(what, chunk, TaskKind::kComm, std::move(fn));
  }

 private:
  Task add_task(const std::string& what, int chunk, TaskKind kind, std::function<std::size_t()> fn) {
    const std::size_t id = graph.size();
    phase.push_back(what);
    std::string name = chunk < 0 ? what : what + "[" + std::to_string(chunk) + "]";
    return graph.emplace(
        std::move(name),
        [this, id, fn = std::move(fn)] {
          const std::size_t bytes = fn();
          if (bytes) graph.set_bytes(id, bytes);
        },
        kind);
  }
};

}  // namespace switchyard::layers
