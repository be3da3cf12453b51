// libFuzzer harness: the training configuration (examples/train_*.json).
#include "switchyard/train/train_config.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text = switchyard::fuzz::as_text(data, size);
  return switchyard::fuzz::parse_or_refuse([&] { switchyard::train::parse_train_config(text, "train.json"); });
}
