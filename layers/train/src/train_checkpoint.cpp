#include "switchyard/train/train_checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "switchyard/comm/gather.hpp"
#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/formats/checksum.hpp"
#include "switchyard/formats/safetensors.hpp"
#include "switchyard/runtime/atomic_file.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "switchyard-train/1";
constexpr const char* kIndex = "model.safetensors.index.json";
constexpr const char* kReplicatedFile = "replicated.safetensors";
constexpr const char* kConfigFile = "train_config.json";

std::string expert_file(int rank, int size) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "experts-rank%05d-of-%05d.safetensors", rank, size);
  return buf;
}

std::string bias_name(std::int64_t block) { return "blocks." + std::to_string(block) + ".moe.selection_bias"; }

// Every tensor one rank writes: its share of parameters, their optimizer
// slots and (rank 0) the selection biases.
std::vector<formats::TensorToWrite> tensors_of(CharLm& model, Optimizer& opt, bool replicated) {
  std::vector<formats::TensorToWrite> out;
  const auto& params = model.parameters();
  // NOTE: a copy of a replicated expert that another rank owns is saved by
  // that rank only; loading reads it by name from there.
  for (const auto& p : params)
    if (p.param->replicated == replicated && p.saved) out.push_back({p.name, p.param->shape, p.param->value.data()});
  for (const auto& slot : opt.slots())
    for (std::size_t i = 0; i < params.size(); ++i)
      if (params[i].param->replicated == replicated && params[i].saved)
        out.push_back(
            {"optimizer." + slot.name + "." + params[i].name, params[i].param->shape, (*slot.values)[i].data()});
  if (replicated)
    for (std::int64_t l = 0; l < model.num_blocks(); ++l) {
      const auto& bias = model.moe(l).selection_bias();
      if (!bias.empty()) out.push_back({bias_name(l), {static_cast<std::int64_t>(bias.size())}, bias.data()});
    }
  return out;
}

// The checksum of the index itself: of its canonical JSON without this field.
std::string index_checksum_of(json index) {
  index["metadata"].erase("index_checksum");
  const std::string text = index.dump();
  return formats::checksum_of(text.data(), text.size());
}

// Checks the index's own checksum (when it records one) before any of its
// fields is trusted.
void verify_index(const std::string& path, const json& index) {
  if (!index.is_object() || !index.contains("metadata") || !index["metadata"].is_object()) return;
  const json& meta = index["metadata"];
  if (!meta.contains("index_checksum")) return;
  check_arg(meta["index_checksum"].is_string(), path + ": metadata.index_checksum must be a string");
  formats::check_checksum(path, meta["index_checksum"].get<std::string>(), index_checksum_of(index));
}

json read_index(const std::string& dir, bool verify = false) {
  const std::string path = (fs::path(dir) / kIndex).string();
  std::ifstream in(path);
  check_arg(in.good(), dir + ": not a training checkpoint (no " + kIndex + ")");
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  check_arg(!j.is_discarded(), path + ": not valid JSON (the file is damaged or not a checkpoint index)");
  if (verify) verify_index(path, j);
  check_arg(j.is_object() && j.contains("metadata") && j["metadata"].is_object() &&
                j["metadata"].value("format", "") == kFormat,
            path + ": not a switchyard training checkpoint (metadata.format is not " + kFormat + ")");
  return j;
}

// An existing directory may be replaced only if it is ours or empty: a typo in
// the save directory must never delete someone's data.
void check_replaceable(const std::string& dir) {
  if (!fs::exists(dir)) return;
  check_arg(fs::is_directory(dir), "checkpoint directory " + dir + ": exists and is not a directory");
  if (fs::is_empty(dir)) return;
  try {
    read_index(dir);
  } catch (const Error&) {
    throw Error(ErrorCode::kInvalidArgument,
                "checkpoint directory " + dir + ": exists and is not a training checkpoint; refusing to replace it");
  }
}

// Every rank's expert tensor names (gathered to rank 0) and rank 0's
// replicated ones, mapped to the files that hold them.
json weight_map_of(CharLm& model, Optimizer& opt, const comm::GatheredBytes& expert_names, int num_ranks) {
  json weight_map = json::object();
  for (const auto& t : tensors_of(model, opt, true)) weight_map[t.name] = kReplicatedFile;
  for (int r = 0; r < num_ranks; ++r) {
    std::istringstream in{std::string(expert_names.part(r))};
    for (std::string name; std::getline(in, name);) {
      check(!weight_map.contains(name), ErrorCode::kInternal, "checkpoint: tensor name '" + name + "' is not unique");
      weight_map[name] = expert_file(r, num_ranks);
    }
  }
  return weight_map;
}

// What one rank wrote: "<file> <checksum> <bytes>" lines.
std::string file_record(const std::string& dir, const std::string& file, const std::string& checksum) {
  return file + " " + checksum + " " + std::to_string(fs::file_size(fs::path(dir) / file)) + "\n";
}

// The index metadata's "checksums" and "file_sizes" from every rank's records.
void add_checksums(json& meta, const comm::GatheredBytes& records, int num_ranks) {
  json sums = json::object(), sizes = json::object();
  for (int r = 0; r < num_ranks; ++r) {
    std::istringstream in{std::string(records.part(r))};
    std::string file, sum;
    std::int64_t bytes = 0;
    while (in >> file >> sum >> bytes) {
      sums[file] = sum;
      sizes[file] = bytes;
    }
  }
  meta["checksums"] = sums;
  meta["file_sizes"] = sizes;
}

// The files holding the tensors load_train_checkpoint reads on this rank.
std::set<std::string> files_to_read(const json& index, CharLm& model, Optimizer& opt) {
  std::vector<std::string> names;
  const auto& params = model.parameters();
  for (const auto& p : params) names.push_back(p.name);
  for (const auto& slot : opt.slots())
    for (const auto& p : params) names.push_back("optimizer." + slot.name + "." + p.name);
  for (std::int64_t l = 0; l < model.num_blocks(); ++l)
    if (!model.moe(l).selection_bias().empty()) names.push_back(bias_name(l));
  std::set<std::string> files;
  if (!index.contains("weight_map") || !index["weight_map"].is_object()) return files;
  const json& map = index["weight_map"];
  for (const auto& name : names)
    if (auto it = map.find(name); it != map.end() && it->is_string()) files.insert(it->get<std::string>());
  return files;
}

// Checks the size and checksum of `files` and train_config.json against the
// index, when it records checksums (a checkpoint written without them loads
// unchecked).
void verify_files(const std::string& dir, const json& meta, const std::set<std::string>& files) {
  if (!meta.contains("checksums")) return;
  const std::string where = (fs::path(dir) / kIndex).string();
  const json& sums = meta["checksums"];
  const json sizes = meta.value("file_sizes", json::object());
  check_arg(sums.is_object() && sizes.is_object(),
            where + ": metadata.checksums and metadata.file_sizes must be objects");
  std::set<std::string> all = files;
  all.insert(kConfigFile);
  for (const auto& file : all) {
    const std::string path = (fs::path(dir) / file).string();
    check_arg(sums.contains(file) && sums[file].is_string(),
              where + ": metadata.checksums has no checksum for " + file);
    const json size = sizes.value(file, json(-1));
    check_arg(size.is_number_integer(), where + ": metadata.file_sizes entry for " + file + " is not an integer");
    check_arg(fs::exists(path), path + ": missing (listed in " + where + ")");
    formats::verify_file(path, sums[file].get<std::string>(), size.get<std::int64_t>());
  }
}

// Replaces `base` by the finished checkpoint `tmp` in one step where the file
// system can (`dir` as the caller named it, for messages).
void publish(const std::string& tmp, const std::string& base, const std::string& dir, std::int64_t pid) {
  if (!fs::exists(base)) {
    fs::rename(tmp, base);
  } else if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, base.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp);  // now the previous checkpoint
  } else {
    // NOTE: file systems without RENAME_EXCHANGE get two renames; a kill
    // between them leaves the previous checkpoint whole in `old`.
    check(errno == EINVAL || errno == ENOSYS, ErrorCode::kIo,
          "checkpoint directory " + dir + ": cannot swap in the new checkpoint (" + std::strerror(errno) + ")");
    const std::string old = base + ".old-" + std::to_string(pid);
    fs::rename(base, old);
    fs::rename(tmp, base);
    fs::remove_all(old);
  }
}

// Rank 0 checks that `base` may be replaced and makes the empty directory
// `tmp` beside it. Collective.
void make_tmp_dir(comm::Communicator& comm, const std::string& dir, const std::string& base, const std::string& tmp) {
  comm::run_agreed(comm, [&] {
    if (comm.rank() != 0) return;
    check_replaceable(base);
    const fs::path parent = fs::absolute(base).parent_path();
    check_arg(fs::is_directory(parent),
              "checkpoint directory " + dir + ": parent directory " + parent.string() + " does not exist");
    fs::remove_all(tmp);
    fs::create_directory(tmp);
  });
}

// What a rank saves, for write_rank_files.
struct SaveSource {
  CharLm& model;
  Optimizer& opt;
  const TrainState& state;
};

// Writes rank `me`'s files of the checkpoint into `tmp` (its experts; rank 0
// also the replicated tensors and the configuration). Returns a
// "<file> <checksum> <bytes>" line for each. Not collective.
std::string write_rank_files(const std::string& tmp, int me, int num_ranks, const SaveSource& src) {
  const std::map<std::string, std::string> meta = {{"format", kFormat}, {"step", std::to_string(src.state.step)}};
  std::string records;
  const auto write = [&](const std::string& file, bool replicated) {
    const std::string sum =
        formats::write_safetensors((fs::path(tmp) / file).string(), tensors_of(src.model, src.opt, replicated), meta);
    records += file_record(tmp, file, sum);
  };
  write(expert_file(me, num_ranks), false);
  if (me != 0) return records;
  write(kReplicatedFile, true);
  const std::string& text = src.state.config_text;
  write_file_atomically((fs::path(tmp) / kConfigFile).string(), text.data(), text.size());
  return records + file_record(tmp, kConfigFile, formats::checksum_of(text.data(), text.size()));
}

}  // namespace

void save_train_checkpoint(comm::Communicator& comm, const std::string& dir, CharLm& model, Optimizer& opt,
                           const TrainState& state) {
  const int me = comm.rank(), R = comm.size();
  std::int64_t pid = me == 0 ? static_cast<std::int64_t>(::getpid()) : 0;
  comm.broadcast(&pid, sizeof(pid), 0);
  const std::string clean = fs::path(dir).lexically_normal().string();
  const std::string base = clean.size() > 1 && clean.back() == '/' ? clean.substr(0, clean.size() - 1) : clean;
  const std::string tmp = base + ".tmp-" + std::to_string(pid);

  make_tmp_dir(comm, dir, base, tmp);
  const auto cleanup = [&] {
    std::error_code ec;
    if (me == 0) fs::remove_all(tmp, ec);
  };

  std::string records;  // "<file> <checksum> <bytes>" of each file this rank wrote
  try {
    comm::run_agreed(comm, [&] { records = write_rank_files(tmp, me, R, {model, opt, state}); });
  } catch (...) {
    cleanup();
    throw;
  }

  // Rank 0 learns every rank's expert tensor names for the index.
  std::string names;
  for (const auto& t : tensors_of(model, opt, false)) names += t.name + "\n";
  const comm::GatheredBytes all = comm::gather_to_root(comm, names.data(), names.size(), 0);
  const comm::GatheredBytes sums = comm::gather_to_root(comm, records.data(), records.size(), 0);

  try {
    comm::run_agreed(comm, [&] {
      if (me != 0) return;
      const json weight_map = weight_map_of(model, opt, all, R);
      json index = {{"metadata",
                     {{"format", kFormat},
                      {"step", state.step},
                      {"optimizer", opt.config().kind == OptimizerKind::kAdamW ? "adamw" : "sgd"},
                      {"optimizer_steps", opt.num_steps()},
                      {"num_ranks", R},
                      {"model", json::parse(state.model_json)}}},
                    {"weight_map", weight_map}};
      add_checksums(index["metadata"], sums, R);
      index["metadata"]["index_checksum"] = index_checksum_of(index);
      const std::string text = index.dump(2) + "\n";
      write_file_atomically((fs::path(tmp) / kIndex).string(), text.data(), text.size());
      publish(tmp, base, dir, pid);
    });
  } catch (...) {
    cleanup();
    throw;
  }
}

std::int64_t load_train_checkpoint(const std::string& dir, CharLm& model, Optimizer& opt, const TrainState& state) {
  check_arg(fs::is_directory(dir), "checkpoint directory " + dir + ": does not exist");
  const std::string where = (fs::path(dir) / kIndex).string();
  const json index = read_index(dir, /*verify=*/true);
  const json& meta = index["metadata"];
  check_arg(meta.contains("model") && meta["model"] == json::parse(state.model_json),
            where + ": metadata.model " + (meta.contains("model") ? meta["model"].dump() : "(missing)") +
                " differs from this configuration's model " + state.model_json);
  const std::string kind = opt.config().kind == OptimizerKind::kAdamW ? "adamw" : "sgd";
  check_arg(meta.value("optimizer", "") == kind, where + ": metadata.optimizer is '" + meta.value("optimizer", "") +
                                                     "', this configuration uses '" + kind + "' (optimizer.type)");
  check_arg(meta.contains("step") && meta["step"].is_number_integer() && meta.contains("optimizer_steps") &&
                meta["optimizer_steps"].is_number_integer(),
            where + ": metadata.step and metadata.optimizer_steps must be integers");

  const auto& params = model.parameters();
  verify_files(dir, meta, files_to_read(index, model, opt));
  formats::Checkpoint ckpt(dir);
  // NOTE: copied into the existing buffers: the MoE layers' matmuls hold
  // pointers to them.
  for (const auto& p : params) {
    const auto v = ckpt.read_f32(p.name, p.param->shape);
    std::copy(v.begin(), v.end(), p.param->value.begin());
  }
  for (const auto& slot : opt.slots())
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto v = ckpt.read_f32("optimizer." + slot.name + "." + params[i].name, params[i].param->shape);
      std::copy(v.begin(), v.end(), (*slot.values)[i].begin());
    }
  for (std::int64_t l = 0; l < model.num_blocks(); ++l) {
    auto& bias = model.moe(l).selection_bias();
    if (bias.empty()) continue;
    const auto v = ckpt.read_f32(bias_name(l), {static_cast<std::int64_t>(bias.size())});
    std::copy(v.begin(), v.end(), bias.begin());
  }
  opt.set_num_steps(meta["optimizer_steps"].get<std::int64_t>());
  return meta["step"].get<std::int64_t>();
}

}  // namespace switchyard::train
