#pragma once
// Hand-made byte fixtures for the format tests: a temporary directory, little
// endian writers, safetensors and .npy file builders, and a check that an
// error is one line naming every expected piece.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "switchyard/runtime/error.hpp"

namespace fixtures {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

// The parts concatenated (a helper that sidesteps GCC 12's false -Wrestrict
// warnings on "literal" + std::string temporaries).
template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::string s;
  ((s += parts), ...);
  return s;
}

// A fresh directory under the system temp directory, removed on destruction.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    std::random_device rd;
    path_ = fs::temp_directory_path() / cat("switchyard_test_rules_", std::to_string(::getpid()), "_",
                                            std::to_string(counter++), "_", std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline void put_le(Bytes& b, std::uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
inline void put_str(Bytes& b, const std::string& s) { b.insert(b.end(), s.begin(), s.end()); }

inline void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}
inline Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A safetensors file: 8-byte LE header length, the header padded with spaces
// to a multiple of 8, then the data.
inline Bytes safetensors_bytes(std::string header, const Bytes& data) {
  while (header.size() % 8 != 0) header += ' ';
  Bytes b;
  put_le(b, header.size(), 8);
  put_str(b, header);
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

// An .npy file: magic, version, header length, then `header` as given (no
// padding added) and the data.
inline Bytes npy_raw(const std::string& header, const Bytes& data, int major = 1, int minor = 0) {
  Bytes b;
  put_str(b, "\x93NUMPY");
  b.push_back(static_cast<std::uint8_t>(major));
  b.push_back(static_cast<std::uint8_t>(minor));
  put_le(b, header.size(), major == 1 ? 2 : 4);
  put_str(b, header);
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

// The dict padded with spaces and ended by '\n' so the data starts at a
// multiple of `align`.
inline std::string npy_header(const std::string& dict, int major = 1, std::size_t align = 64) {
  const std::size_t pre = 8 + (major == 1 ? 2 : 4);
  std::string h = dict;
  while ((pre + h.size() + 1) % align != 0) h += ' ';
  return h + '\n';
}

// Expects `fn` to throw switchyard::Error with a one-line message holding
// every needle.
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one naming " << needles.front();
  } catch (const switchyard::Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

// Writes `bytes` as `file` in `dir` and expects `open(path)` to fail with
// one line naming the file and every needle.
template <typename Open>
void expect_file_refused(const TempDir& dir, const std::string& file, const Bytes& bytes,
                         const std::vector<std::string>& needles, Open open) {
  const std::string path = dir.file(file);
  write_file(path, bytes);
  std::vector<std::string> all = {path};
  all.insert(all.end(), needles.begin(), needles.end());
  expect_error([&] { open(path); }, all);
}

}  // namespace fixtures
