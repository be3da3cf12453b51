#include "switchyard/runtime/device.hpp"

namespace switchyard {

const char* device_name(DeviceKind kind) { return kind == DeviceKind::kCuda ? "cuda" : "cpu"; }

bool parse_device(const std::string& name, DeviceKind* out) {
  if (name == "cpu")
    *out = DeviceKind::kCpu;
  else if (name == "cuda")
    *out = DeviceKind::kCuda;
  else
    return false;
  return true;
}

}  // namespace switchyard
