#pragma once
// A read-only memory map of a whole file, unmapped on destruction.
#include <cstddef>
#include <cstdint>
#include <string>

namespace switchyard {

class MappedFile {
 public:
  /// Maps `path` read-only. Throws Error(kInvalidArgument) naming the path if
  /// it cannot be opened and Error(kIo) if the map fails. Pages are read
  /// lazily, so mapping a large shard costs nothing until bytes are touched.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace switchyard
