#pragma once
// Reading and writing the safetensors format: an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}}, then the data.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/runtime/mapped_file.hpp"

namespace switchyard::formats {

/// Computable dtypes; every other dtype of the format is kOther (readable as
/// metadata, refused by convert_to_f32).
enum class DType { kF32, kBF16, kF16, kOther };

/// The __metadata__ key holding the checksum ("xxh3-128:<hex>") of a file's
/// data section, the bytes after the header.
inline constexpr const char* kDataChecksumKey = "data_checksum";

/// One tensor inside a mapped safetensors file; `data` points into the map.
struct TensorView {
  std::string name;
  std::string file;        // path of the file holding it, for messages
  std::string dtype_name;  // as written in the header, e.g. "BF16"
  DType dtype = DType::kOther;
  std::vector<std::int64_t> shape;
  const std::uint8_t* data = nullptr;
  std::size_t nbytes = 0;

  std::int64_t numel() const;
};

/// Product of the dimensions (1 for a scalar).
std::int64_t numel_of(const std::vector<std::int64_t>& shape);

/// Formats a shape as "[a, b, c]".
std::string shape_string(const std::vector<std::int64_t>& shape);

/// A memory-mapped safetensors file with a validated header. Tensor bytes are
/// not read until used.
class SafetensorsFile {
 public:
  /// Maps and validates `path` by every rule of the format (docs/formats.md):
  /// throws Error(kInvalidArgument) in one line naming the file, the tensor,
  /// the field and what was expected. A file whose __metadata__ holds
  /// kDataChecksumKey has its data section hashed and checked against it
  /// ("checksum mismatch (the file is damaged: ...)").
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_->path(); }
  /// The tensor called `name`, or nullptr.
  const TensorView* find(const std::string& name) const;
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  /// The header's __metadata__ (empty if it has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, TensorView> tensors_;
};

/// Converts `count` elements of a F32/BF16/F16 tensor, starting at element
/// `first`, to float32. Throws Error(kInvalidArgument) naming the tensor for
/// other dtypes.
void convert_to_f32(const TensorView& t, std::int64_t first, std::int64_t count, float* out);

/// A float32 tensor to be written, stored as `dtype` (F32, BF16 or F16;
/// narrowing rounds to nearest even, as kernels/number_conversion.hpp).
struct TensorToWrite {
  std::string name;
  std::vector<std::int64_t> shape;
  const float* data = nullptr;
  DType dtype = DType::kF32;
};

/// Writes tensors as one safetensors file, atomically. With `data_checksum`
/// the checksum of the data section is recorded in __metadata__ under
/// kDataChecksumKey. Returns the checksum of the whole file as written
/// (formats/checksum.hpp).
std::string write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {}, bool data_checksum = false);

}  // namespace switchyard::formats
