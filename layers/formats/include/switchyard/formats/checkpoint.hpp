#pragma once
// A Hugging Face checkpoint directory: model.safetensors, or shards listed in
// model.safetensors.index.json. Shards are mapped on first use, so a rank
// touches only the files and bytes of the tensors it asks for.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/formats/safetensors.hpp"

namespace switchyard::formats {

/// The tensor name -> shard file name map of the model.safetensors.index.json
/// text `text`. Throws Error(kInvalidArgument) in one line naming `source`:
/// not a JSON object with a "weight_map" object, an entry that is not a
/// string, or a shard name that is not a relative path inside the directory.
std::map<std::string, std::string> parse_safetensors_index(const std::string& text, const std::string& source);

class Checkpoint {
 public:
  /// Opens `dir`. Throws Error(kInvalidArgument) if it holds neither
  /// model.safetensors nor a valid model.safetensors.index.json.
  explicit Checkpoint(const std::string& dir);

  const std::string& dir() const { return dir_; }
  /// True if the checkpoint lists a tensor called `name`.
  bool contains(const std::string& name) const;
  /// The tensor `name`; maps its shard on first use. Throws naming the tensor
  /// (and the shard) if it is missing.
  const TensorView& tensor(const std::string& name);
  /// Every tensor name the checkpoint lists.
  std::vector<std::string> names() const;

  /// Reads `name` as float32, checking its shape equals `shape`.
  std::vector<float> read_f32(const std::string& name, const std::vector<std::int64_t>& shape);
  /// Reads `count` slices [first, first + count) along dim 0 of `name`,
  /// checking its full shape equals `shape`.
  std::vector<float> read_f32_slices(const std::string& name, const std::vector<std::int64_t>& shape,
                                     std::int64_t first, std::int64_t count);

 private:
  SafetensorsFile& shard(const std::string& file, const std::string& tensor_name);
  const TensorView& checked(const std::string& name, const std::vector<std::int64_t>& shape);

  std::string dir_;
  std::map<std::string, std::string> weight_map_;  // tensor name -> shard file name
  std::map<std::string, std::unique_ptr<SafetensorsFile>> shards_;
};

}  // namespace switchyard::formats
