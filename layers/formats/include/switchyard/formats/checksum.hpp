#pragma once
// Checksums of files and byte ranges: XXH3 128-bit (libxxhash), written as
// "xxh3-128:<32 lowercase hex digits>". Hashing runs at several GB/s, well
// under the cost of writing or reading the bytes it covers.
#include <cstddef>
#include <cstdint>
#include <string>

namespace switchyard::formats {

/// The algorithm prefix of every checksum this module writes.
inline constexpr const char* kChecksumPrefix = "xxh3-128:";

/// "xxh3-128:<hex>" of `num_bytes` bytes at `data`. Thread-safe.
std::string checksum_of(const void* data, std::size_t num_bytes);

/// Throws Error(kInvalidArgument) naming `path` unless `actual` equals
/// `expected`: "<path>: checksum mismatch (the file is damaged: expected E,
/// got A)". An `expected` that is not "xxh3-128:<hex>" is refused as well.
void check_checksum(const std::string& path, const std::string& expected, const std::string& actual);

/// Maps `path` and checks its size, then its checksum, against what was
/// recorded. A shorter file is refused as truncated, a longer one as damaged,
/// each in one line naming the file. A negative `expected_bytes` skips the
/// size check. Blocking; reads the whole file.
void verify_file(const std::string& path, const std::string& expected_checksum, std::int64_t expected_bytes = -1);

}  // namespace switchyard::formats
