#include <boost/json.hpp>
#include <filesystem>
#include <set>

#include "switchyard/formats/checkpoint.hpp"
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

std::map<std::string, std::string> parse_safetensors_index(const std::string& text, const std::string& source) {
  // NOTE: Boost.JSON, not nlohmann-json: a DeepSeek-V3 index (94k names)
  // parses about 4x faster, on every rank (docs/benchmarks.md, "JSON libraries").
  boost::system::error_code ec;
  const boost::json::value j = boost::json::parse(text, ec);
  const boost::json::object* top = ec ? nullptr : j.if_object();
  const boost::json::value* map = top ? top->if_contains("weight_map") : nullptr;
  check_arg(map && map->is_object(), source + ": expected a JSON object with a \"weight_map\" object");
  std::map<std::string, std::string> weight_map;
  std::set<std::string> files;
  for (const auto& entry : map->get_object()) {
    const std::string name(entry.key());
    check_arg(entry.value().is_string(), source + ": weight_map entry '" + name + "' is not a file name");
    const std::string file(entry.value().get_string());
    // NOTE: a shard's existence is checked when a tensor in it is first read
    // (Checkpoint::shard()): a rank opens only the files it needs.
    if (files.insert(file).second) check_shard_name(source, name, file);
    weight_map[name] = file;
  }
  return weight_map;
}

}  // namespace switchyard::formats
