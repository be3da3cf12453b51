#pragma once
// Where compute runs. Layers choose kernels by this, never by #ifdef.
#include <string>

namespace switchyard {

enum class DeviceKind { kCpu, kCuda };

/// "cpu" or "cuda".
const char* device_name(DeviceKind kind);

/// Parses "cpu" / "cuda"; returns false for anything else.
bool parse_device(const std::string& name, DeviceKind* out);

}  // namespace switchyard
