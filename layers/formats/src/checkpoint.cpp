#include "switchyard/formats/checkpoint.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "switchyard/runtime/error.hpp"

namespace switchyard::formats {
namespace fs = std::filesystem;

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  const fs::path single = fs::path(dir) / "model.safetensors";
  if (!fs::exists(index)) {
    check_arg(fs::exists(single), dir + ": no model.safetensors or model.safetensors.index.json");
    for (auto& [name, t] : shard("model.safetensors", "").tensors()) weight_map_[name] = "model.safetensors";
    return;
  }
  std::ifstream in(index);
  std::stringstream text;
  text << in.rdbuf();
  weight_map_ = parse_safetensors_index(text.str(), index.string());
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
