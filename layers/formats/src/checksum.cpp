#include "switchyard/formats/checksum.hpp"

#if defined(__x86_64__)
#include <xxh_x86dispatch.h>  // picks SSE2, AVX2 or AVX-512 at run time
#define SY_XXH3_128 XXH3_128bits_dispatch
#else
#include <xxhash.h>
#define SY_XXH3_128 XXH3_128bits
#endif

#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/mapped_file.hpp"

namespace switchyard::formats {

std::string checksum_of(const void* data, std::size_t num_bytes) {
  const XXH128_hash_t h = SY_XXH3_128(data, num_bytes);
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, h);  // big-endian: high 64 bits first
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = kChecksumPrefix;
  for (unsigned char b : canonical.digest) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

void check_checksum(const std::string& path, const std::string& expected, const std::string& actual) {
  const std::string prefix = kChecksumPrefix;
  check_arg(expected.size() == actual.size() && expected.compare(0, prefix.size(), prefix) == 0,
            path + ": recorded checksum '" + expected + "' is not " + prefix + "<32 hex digits>");
  check_arg(expected == actual,
            path + ": checksum mismatch (the file is damaged: expected " + expected + ", got " + actual + ")");
}

void verify_file(const std::string& path, const std::string& expected_checksum, std::int64_t expected_bytes) {
  const MappedFile file(path);
  const auto size = static_cast<std::int64_t>(file.size());
  if (expected_bytes >= 0) {
    check_arg(size >= expected_bytes, path + ": truncated (the file is damaged: expected " +
                                          std::to_string(expected_bytes) + " bytes, got " + std::to_string(size) + ")");
    check_arg(size == expected_bytes, path + ": size mismatch (the file is damaged: expected " +
                                          std::to_string(expected_bytes) + " bytes, got " + std::to_string(size) + ")");
  }
  check_checksum(path, expected_checksum, checksum_of(file.data(), file.size()));
}

}  // namespace switchyard::formats
