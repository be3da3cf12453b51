// libFuzzer harness: routing statistics files (switchyard route --stats-out),
// the input of switchyard placement.
#include "fuzz_common.hpp"
#include "switchyard/layers/placement_plan.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text = switchyard::fuzz::as_text(data, size);
  return switchyard::fuzz::parse_or_refuse(
      [&] { switchyard::layers::parse_routing_stats_json(text, "routing_stats.json"); });
}
