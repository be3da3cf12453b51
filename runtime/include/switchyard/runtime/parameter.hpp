#pragma once
// A trainable tensor: value, gradient, and whether every rank holds a copy.
#include <cstdint>
#include <string>
#include <vector>

namespace switchyard {

struct Parameter {
  std::string name;                 // unique within its model
  std::vector<std::int64_t> shape;  // row-major
  std::vector<float> value;
  std::vector<float> grad;  // same size as value; backward passes add into it
  // Replicated parameters (router, shared experts, embeddings, ...) exist on
  // every rank; their gradients are partial sums over each rank's tokens and
  // must be all-reduced before an optimizer step. Expert parameters live on
  // their owner only and their gradients are already complete.
  bool replicated = true;

  Parameter() = default;
  Parameter(std::string n, std::vector<std::int64_t> s, std::vector<float> v, bool rep)
      : name(std::move(n)), shape(std::move(s)), value(std::move(v)), grad(value.size(), 0.0f), replicated(rep) {}
  std::int64_t numel() const { return static_cast<std::int64_t>(value.size()); }
  void zero_grad() { grad.assign(value.size(), 0.0f); }
};

}  // namespace switchyard
