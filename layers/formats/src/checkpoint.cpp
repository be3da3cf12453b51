#include "switchyard/formats/checkpoint.hpp"

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "switchyard/runtime/error.hpp"

namespace switchyard::formats {
namespace fs = std::filesystem;

namespace {

// A shard name from the index must stay inside the checkpoint directory.
void check_shard_name(const std::string& index, const std::string& tensor, const std::string& file) {
  const fs::path p(file);
  bool escapes = file.empty() || p.is_absolute();
  for (const auto& part : p) escapes = escapes || part == "..";
  check_arg(!escapes, index + ": weight_map entry '" + tensor + "': file name '" + file +
                          "' must be a relative path inside the checkpoint directory");
}

}  // namespace

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single = fs::path(dir) / "model.safetensors";
  if (!fs::exists(index)) {
    check_arg(fs::exists(single), dir + ": no model.safetensors or model.safetensors.index.json");
    for (auto& [name, t] : shard("model.safetensors", "").tensors()) weight_map_[name] = "model.safetensors";
    return;
  }
  // NOTE: Boost.JSON, not nlohmann-json: a DeepSeek-V3 index (94k names)
  // parses about 4x faster, on every rank (docs/benchmarks.md, "JSON libraries").
  std::ifstream in(index);
  std::stringstream text;
  text << in.rdbuf();
  boost::system::error_code ec;
  const boost::json::value j = boost::json::parse(text.str(), ec);
  const boost::json::object* top = ec ? nullptr : j.if_object();
  const boost::json::value* map = top ? top->if_contains("weight_map") : nullptr;
  check_arg(map && map->is_object(), index.string() + ": expected a JSON object with a \"weight_map\" object");
  std::set<std::string> files;
  for (const auto& entry : map->get_object()) {
    const std::string name(entry.key());
    check_arg(entry.value().is_string(), index.string() + ": weight_map entry '" + name + "' is not a file name");
    const std::string file(entry.value().get_string());
    // NOTE: a shard's existence is checked when a tensor in it is first read
    // (shard()): a rank opens only the files it needs.
    if (files.insert(file).second) check_shard_name(index.string(), name, file);
    weight_map_[name] = file;
  }
}

SafetensorsFile& Checkpoint::shard(const std::string& file, const std::string& tensor_name) {
  auto& slot = shards_[file];
  if (!slot) {
    const std::string path = (fs::path(dir_) / file).string();
    check_arg(fs::exists(path), path + ": shard listed in model.safetensors.index.json (for tensor '" + tensor_name +
                                    "') does not exist");
    slot = std::make_unique<SafetensorsFile>(path);
  }
  return *slot;
}

bool Checkpoint::contains(const std::string& name) const { return weight_map_.count(name) != 0; }

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (auto& [name, file] : weight_map_) out.push_back(name);
  return out;
}

const TensorView& Checkpoint::tensor(const std::string& name) {
  auto it = weight_map_.find(name);
  check_arg(it != weight_map_.end(), dir_ + ": missing tensor '" + name + "'");
  const TensorView* t = shard(it->second, name).find(name);
  check_arg(t != nullptr, dir_ + "/" + it->second + ": missing tensor '" + name + "' (listed in the index)");
  return *t;
}

const TensorView& Checkpoint::checked(const std::string& name, const std::vector<std::int64_t>& shape) {
  const TensorView& t = tensor(name);
  check_arg(t.shape == shape, t.file + ": tensor '" + name + "' has shape " + shape_string(t.shape) + "; expected " +
                                  shape_string(shape));
  check_arg(t.dtype != DType::kOther,
            t.file + ": tensor '" + name + "' has dtype " + t.dtype_name + "; expected F32, BF16 or F16");
  return t;
}

std::vector<float> Checkpoint::read_f32(const std::string& name, const std::vector<std::int64_t>& shape) {
  const TensorView& t = checked(name, shape);
  std::vector<float> out(static_cast<std::size_t>(t.numel()));
  convert_to_f32(t, 0, t.numel(), out.data());
  return out;
}

std::vector<float> Checkpoint::read_f32_slices(const std::string& name, const std::vector<std::int64_t>& shape,
                                               std::int64_t first, std::int64_t count) {
  const TensorView& t = checked(name, shape);
  check(first >= 0 && count >= 0 && !shape.empty() && first + count <= shape[0], ErrorCode::kInternal,
        t.file + ": tensor '" + name + "': slices [" + std::to_string(first) + ", " + std::to_string(first + count) +
            ") outside dim 0 of " + shape_string(shape));
  const std::int64_t slice = shape.empty() || shape[0] == 0 ? 0 : t.numel() / shape[0];
  std::vector<float> out(static_cast<std::size_t>(slice * count));
  convert_to_f32(t, first * slice, slice * count, out.data());
  return out;
}

}  // namespace switchyard::formats
