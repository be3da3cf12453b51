// libFuzzer harness: .npy files (format 1.0-3.0).
#include "switchyard/runtime/npy.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return switchyard::fuzz::parse_or_refuse([&] {
    const auto layout = switchyard::parse_npy("fuzz.npy", data, size);
    // The data an accepted header promises must lie inside the input.
    if (layout.data_offset + static_cast<std::size_t>(layout.rows * layout.cols) * 4 != size) __builtin_trap();
  });
}
