#include "switchyard/runtime/npy.hpp"

#include <cstring>
#include <regex>

#include "switchyard/runtime/atomic_file.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

std::string header_field(const std::string& header, const std::string& key, const std::string& pattern,
                         const std::string& path) {
  std::smatch m;
  std::regex re("'" + key + "'\\s*:\\s*(" + pattern + ")");
  check_arg(std::regex_search(header, m, re), path + ": .npy header has no valid '" + key + "' entry");
  return m[1].str();
}

}  // namespace

NpyMatrix::NpyMatrix(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
  const std::uint8_t* p = file_->data();
  std::size_t n = file_->size();
  check_arg(n >= 10 && std::memcmp(p, kMagic, 6) == 0, path + ": not an .npy file (bad magic)");
  int major = p[6];
  std::size_t header_len, offset;
  if (major == 1) {
    header_len = p[8] | (p[9] << 8);
    offset = 10;
  } else {
    check_arg(major <= 3 && n >= 12, path + ": unsupported .npy version " + std::to_string(major));
    header_len = p[8] | (p[9] << 8) | (std::size_t(p[10]) << 16) | (std::size_t(p[11]) << 24);
    offset = 12;
  }
  check_arg(offset + header_len <= n, path + ": .npy header runs past the end of the file");
  std::string header(reinterpret_cast<const char*>(p + offset), header_len);
  std::string descr = header_field(header, "descr", "'[^']*'", path);
  check_arg(descr == "'<f4'", path + ": expected dtype float32 ('<f4'), got " + descr);
  check_arg(header_field(header, "fortran_order", "True|False", path) == "False",
            path + ": expected C-order array, got fortran_order True");
  std::string shape = header_field(header, "shape", "\\([^)]*\\)", path);
  std::regex dims_re("^\\(\\s*(\\d+)\\s*,\\s*(\\d+)\\s*,?\\s*\\)$");
  std::smatch m;
  check_arg(std::regex_match(shape, m, dims_re), path + ": expected a 2-D array [tokens, hidden], got shape " + shape);
  rows_ = std::stoll(m[1].str());
  cols_ = std::stoll(m[2].str());
  std::size_t data_offset = offset + header_len;
  std::size_t need = static_cast<std::size_t>(rows_ * cols_) * sizeof(float);
  check_arg(n - data_offset >= need, path + ": truncated: shape " + shape + " needs " + std::to_string(need) +
                                         " data bytes, file has " + std::to_string(n - data_offset));
  // NOTE: .npy pads the header to a multiple of 64 bytes, so data is aligned.
  data_ = reinterpret_cast<const float*>(p + data_offset);
}

std::vector<std::uint8_t> npy_bytes(const float* data, std::int64_t rows, std::int64_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::vector<std::uint8_t> out(10 + header.size());
  std::memcpy(out.data(), kMagic, 6);
  out[6] = 1;
  out[7] = 0;
  out[8] = header.size() & 0xff;
  out[9] = (header.size() >> 8) & 0xff;
  std::memcpy(out.data() + 10, header.data(), header.size());
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(data);
  out.insert(out.end(), bytes, bytes + rows * cols * sizeof(float));
  return out;
}

void write_npy(const std::string& path, const float* data, std::int64_t rows, std::int64_t cols) {
  auto bytes = npy_bytes(data, rows, cols);
  write_file_atomically(path, bytes.data(), bytes.size());
}

}  // namespace switchyard
