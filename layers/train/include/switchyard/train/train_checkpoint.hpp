#pragma once
// Training checkpoints in safetensors: each rank writes its own experts, rank 0
// the replicated parameters, and model.safetensors.index.json maps every
// tensor name to its file. Optimizer state (moments, step) is stored beside
// the weights, so a resumed run continues bit for bit.
//
// DIR/
//   model.safetensors.index.json           {"metadata": {..., "checksums", "file_sizes", "index_checksum"},
//                                           "weight_map": {name: file}}
//   replicated.safetensors                 rank 0: dense layers, routers, shared experts, selection biases
//   experts-rank00001-of-00002.safetensors rank 1: its experts
//   train_config.json                      the configuration that wrote it
//
// Optimizer tensors are named "optimizer.<slot>.<parameter name>". The index
// records the size and XXH3-128 checksum of every other file and a checksum
// of itself (docs/training.md, "Checksums").
#include <cstdint>
#include <functional>
#include <string>

#include "switchyard/comm/communicator.hpp"
#include "switchyard/train/char_lm.hpp"
#include "switchyard/train/optimizer.hpp"

namespace switchyard::train {

struct TrainState {
  std::int64_t step = 0;    // optimizer steps taken
  std::string model_json;   // the config's "model" object; must match on resume
  std::string config_text;  // the whole configuration, for the record
};

/// Writes a checkpoint of `model` and `opt` into `dir` atomically: every rank
/// writes into `dir`.tmp-<pid of rank 0>, then rank 0 swaps it with `dir`
/// (renameat2 RENAME_EXCHANGE, so `dir` always holds a whole checkpoint) and
/// removes the old one. A run killed while saving leaves the previous
/// checkpoint intact. Refuses to replace an existing `dir` that is neither
/// empty nor a training checkpoint. Collective; errors are agreed on.
void save_train_checkpoint(comm::Communicator& comm, const std::string& dir, CharLm& model, Optimizer& opt,
                           const TrainState& state);

/// Reads this rank's parameters (replicated ones and the experts it owns now,
/// by global expert index), the selection biases and the optimizer state from
/// `dir`. Throws Error(kInvalidArgument) naming the directory, field or tensor
/// if it is not a training checkpoint, its model or optimizer differs from
/// `state.model_json` / `opt`, or a tensor is missing or misshapen. When the
/// index records checksums, the index, train_config.json and every file
/// holding a tensor this rank reads are checked first; a damaged or truncated
/// file is refused naming it. An index without checksums loads unchecked.
/// Returns the step it was saved at. Not collective.
std::int64_t load_train_checkpoint(const std::string& dir, CharLm& model, Optimizer& opt, const TrainState& state);

}  // namespace switchyard::train
