#pragma once
// What every harness shares: the parsers' contract on bad input is one
// Error(kInvalidArgument); any other exception escapes the harness and
// libFuzzer reports it as a finding (uncaught exception, abort).
#include <cstddef>
#include <cstdint>
#include <string>

#include "switchyard/runtime/error.hpp"

namespace switchyard::fuzz {

/// The input bytes as text.
inline std::string as_text(const std::uint8_t* data, std::size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

/// Runs `parse()`, accepting only Error(kInvalidArgument) as a refusal.
template <typename Parse>
int parse_or_refuse(Parse parse) {
  try {
    parse();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
  }
  return 0;
}

}  // namespace switchyard::fuzz
