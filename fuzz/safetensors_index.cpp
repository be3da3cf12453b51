// libFuzzer harness: model.safetensors.index.json.
#include "fuzz_common.hpp"
#include "switchyard/formats/checkpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text = switchyard::fuzz::as_text(data, size);
  return switchyard::fuzz::parse_or_refuse(
      [&] { switchyard::formats::parse_safetensors_index(text, "model.safetensors.index.json"); });
}
