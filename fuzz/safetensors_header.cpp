// libFuzzer harness: the safetensors header validation (the first 8 + N bytes
// of a .safetensors file; the input is the whole file).
#include "safetensors_header.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return switchyard::fuzz::parse_or_refuse(
      [&] { switchyard::formats::detail::parse_safetensors_header("fuzz.safetensors", data, size); });
}
