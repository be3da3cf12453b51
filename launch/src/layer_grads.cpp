#include "layer_grads.hpp"

#include <cstdint>
#include <string>

#include "switchyard/comm/gather.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {
namespace {

// Every rank's `mine` on rank 0 in rank order, as parameters carrying name,
// shape and gradient (no value); empty on the other ranks. Collective.
// NOTE: parameters travel with their own names, so nothing here depends on
// how a layer lays out or places its experts.
std::vector<Parameter> gather_gradients_to_root(comm::Communicator& comm, const std::vector<const Parameter*>& mine) {
  std::vector<char> names;           // each name, then '\0'
  std::vector<std::int64_t> shapes;  // each rank count, then the dimensions
  std::vector<float> grads;
  for (const Parameter* p : mine) {
    names.insert(names.end(), p->name.begin(), p->name.end());
    names.push_back('\0');
    shapes.push_back(static_cast<std::int64_t>(p->shape.size()));
    shapes.insert(shapes.end(), p->shape.begin(), p->shape.end());
    grads.insert(grads.end(), p->grad.begin(), p->grad.end());
  }
  const std::vector<char> all_names = comm::gather_rows_to_root(comm, names, 0);
  const std::vector<std::int64_t> all_shapes = comm::gather_rows_to_root(comm, shapes, 0);
  const std::vector<float> all_grads = comm::gather_rows_to_root(comm, grads, 0);
  std::vector<Parameter> out;
  std::size_t name_at = 0, shape_at = 0, grad_at = 0;
  while (name_at < all_names.size()) {
    Parameter p;
    p.replicated = false;
    p.name = std::string(all_names.data() + name_at);
    name_at += p.name.size() + 1;
    const auto rank = static_cast<std::size_t>(all_shapes.at(shape_at++));
    p.shape.assign(all_shapes.begin() + static_cast<std::ptrdiff_t>(shape_at),
                   all_shapes.begin() + static_cast<std::ptrdiff_t>(shape_at + rank));
    shape_at += rank;
    std::int64_t numel = 1;
    for (std::int64_t d : p.shape) numel *= d;
    check(grad_at + static_cast<std::size_t>(numel) <= all_grads.size(), ErrorCode::kInternal,
          "gathered gradients end inside parameter " + p.name);
    p.grad.assign(all_grads.begin() + static_cast<std::ptrdiff_t>(grad_at),
                  all_grads.begin() + static_cast<std::ptrdiff_t>(grad_at + static_cast<std::size_t>(numel)));
    grad_at += static_cast<std::size_t>(numel);
    out.push_back(std::move(p));
  }
  check(grad_at == all_grads.size() && shape_at == all_shapes.size(), ErrorCode::kInternal,
        "gathered gradients: " + std::to_string(all_grads.size() - grad_at) + " floats left over");
  return out;
}

}  // namespace

std::vector<NamedTensor> collect_layer_gradients(comm::Communicator& comm, layers::MoeLayer& layer,
                                                 const formats::MoeTensorNames& names) {
  std::vector<const Parameter*> replicated, owned;
  for (Parameter* p : layer.reported_parameters()) {
    if (p->replicated) {
      comm.allreduce_sum(p->grad.data(), p->grad.size());
      replicated.push_back(p);
    } else {
      owned.push_back(p);
    }
  }
  const std::vector<Parameter> gathered = gather_gradients_to_root(comm, owned);
  if (comm.rank() != 0) return {};
  std::vector<const Parameter*> all = replicated;
  for (const Parameter& p : gathered) all.push_back(&p);
  return formats::name_layer_gradients(names, all);
}

}  // namespace switchyard::launch
