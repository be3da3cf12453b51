#pragma once
// A config.json text with `model_type` and extra fields, for parser tests.
#include <string>

namespace switchyard::test {

inline std::string config_json(const std::string& model_type, const std::string& extra_fields = "") {
  std::string j = "{\"model_type\": \"" + model_type + "\"";
  if (!extra_fields.empty()) j += ", " + extra_fields;
  return j + "}";
}

}  // namespace switchyard::test
