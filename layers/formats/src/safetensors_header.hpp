#pragma once
// Validation of a safetensors file's header against the format's rules (the
// huggingface/safetensors README "Format" and its Rust crate's checks); the
// rules and their messages are listed in docs/formats.md.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace switchyard::formats::detail {

/// One tensor entry of a validated header.
struct HeaderEntry {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // data_offsets, relative to the data section
};

/// A validated header: its metadata, tensors and where the data section starts.
struct ParsedHeader {
  std::map<std::string, std::string> metadata;
  std::vector<HeaderEntry> tensors;
  std::size_t data_start = 0;  // 8 + header length
};

/// Bits per element of a safetensors dtype, or 0 for a name the format does
/// not define.
std::size_t dtype_bits(const std::string& name);

/// Validates the `size` bytes of the file `path` (header length, header text,
/// JSON, metadata, every entry and the data coverage). Throws
/// Error(kInvalidArgument) in one line naming the file, the tensor (if any),
/// the field and what was expected.
ParsedHeader parse_safetensors_header(const std::string& path, const std::uint8_t* bytes, std::size_t size);

}  // namespace switchyard::formats::detail
