// libFuzzer harness: topology files (switchyard topo --json, --topology FILE),
// and that an accepted topology writes back to text that reads back equal.
#include "switchyard/comm/topology.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text = switchyard::fuzz::as_text(data, size);
  return switchyard::fuzz::parse_or_refuse([&] {
    const auto topology = switchyard::comm::parse_topology_json(text, "topology.json");
    const auto again = switchyard::comm::parse_topology_json(switchyard::comm::write_topology_json(topology), "again");
    if (!(again == topology)) __builtin_trap();
  });
}
