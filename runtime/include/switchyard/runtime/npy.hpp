#pragma once
// NumPy .npy files (format 1.0-3.0): float32 matrices in and out.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/runtime/mapped_file.hpp"

namespace switchyard {

/// Where the data of a validated .npy file lies.
struct NpyLayout {
  std::int64_t rows = 0, cols = 0;
  std::size_t data_offset = 0;  // bytes from the start of the file
};

/// Validates the `size` bytes of an .npy file (named `path` in messages) by
/// the rules of NpyMatrix; throws as NpyMatrix does.
NpyLayout parse_npy(const std::string& path, const std::uint8_t* bytes, std::size_t size);

/// A memory-mapped 2-D float32 little-endian C-order .npy file.
class NpyMatrix {
 public:
  /// Opens `path` and validates it by the format's rules (docs/formats.md).
  /// Throws Error(kInvalidArgument) in one line naming the file and the field
  /// if it is not an .npy file 1.0-3.0 with a well-formed header, not float32
  /// ('<f4'), not C-order or not 2-D, or if its data size differs from what
  /// its header promises.
  explicit NpyMatrix(const std::string& path);

  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }
  /// Row-major data, rows() x cols().
  const float* data() const { return data_; }

 private:
  std::unique_ptr<MappedFile> file_;
  std::int64_t rows_ = 0, cols_ = 0;
  const float* data_ = nullptr;
};

/// Serialises a rows x cols float32 matrix as .npy bytes.
std::vector<std::uint8_t> npy_bytes(const float* data, std::int64_t rows, std::int64_t cols);

/// Writes a float32 matrix to `path` atomically (temporary name, then rename).
void write_npy(const std::string& path, const float* data, std::int64_t rows, std::int64_t cols);

}  // namespace switchyard
