// libFuzzer harness: config.json of every architecture (Mixtral, Qwen2-MoE,
// Qwen3-MoE, DeepSeek-V3: the file's model_type picks it), then the router and
// MoE block views built from an accepted config.
#include "switchyard/formats/model_config.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text = switchyard::fuzz::as_text(data, size);
  return switchyard::fuzz::parse_or_refuse([&] {
    const auto config = switchyard::formats::parse_model_config(text, "config.json");
    switchyard::formats::router_config(config);
    switchyard::formats::moe_config(config);
  });
}
