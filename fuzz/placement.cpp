// libFuzzer harness: placement files (switchyard placement --out). The first
// two bytes pick the job's expert and rank counts (1-64 each), the rest is
// the file.
#include "fuzz_common.hpp"
#include "switchyard/layers/placement_plan.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::int64_t num_experts = 1 + data[0] % 64;
  const int num_ranks = 1 + data[1] % 64;
  const std::string text = switchyard::fuzz::as_text(data + 2, size - 2);
  return switchyard::fuzz::parse_or_refuse(
      [&] { switchyard::layers::parse_placement_json(text, "placement.json", num_experts, num_ranks); });
}
