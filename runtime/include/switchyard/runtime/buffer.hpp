#pragma once
// Owning bytes on a device. A step's buffers are sized once, in an
// initialize step, and reused: resize() grows capacity and never shrinks it,
// so a step that needs no more bytes than before never allocates.
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>

#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/stream.hpp"

namespace switchyard {

class Buffer {
 public:
  /// Alignment of data() on the CPU: a cache line, and enough for any
  /// vector load oneDNN issues.
  static constexpr std::size_t kAlignment = 64;

  /// An empty buffer on the CPU (data() is nullptr).
  Buffer() = default;
  /// `size_bytes` uninitialised bytes on `device`. Throws Error(kInvalidArgument)
  /// for a device this build has no backend for, Error(kIo) when the memory
  /// cannot be allocated.
  explicit Buffer(std::size_t size_bytes, Device device = Device{});
  ~Buffer();

  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  /// Bytes in use (what resize() last asked for).
  std::size_t size_bytes() const { return size_bytes_; }
  /// Bytes allocated; never less than size_bytes() and never decreases.
  std::size_t capacity_bytes() const { return capacity_bytes_; }
  const Device& device() const { return device_; }

  /// Sets size_bytes(). Allocates only when `size_bytes` exceeds the
  /// capacity; then the first size_bytes() bytes move to the new memory
  /// (invalidating data() and every span). Never shrinks the capacity.
  /// Throws Error(kIo) when the memory cannot be allocated (the buffer is
  /// unchanged). Not thread-safe; must not run while work on a stream still
  /// uses the memory.
  void resize(std::size_t size_bytes);

  /// The bytes in use as `size_bytes() / sizeof(T)` values of T. Throws
  /// Error(kInvalidArgument) unless size_bytes() is a multiple of sizeof(T).
  template <class T>
  std::span<T> span() {
    return {static_cast<T*>(data_), count<T>()};
  }
  template <class T>
  std::span<const T> span() const {
    return {static_cast<const T*>(data_), count<T>()};
  }

 private:
  template <class T>
  std::size_t count() const {
    static_assert(std::is_trivially_copyable_v<T>, "a Buffer holds bytes: T must be trivially copyable");
    static_assert(alignof(T) <= kAlignment, "T needs more alignment than a Buffer gives");
    check_arg(size_bytes_ % sizeof(T) == 0, "buffer of " + std::to_string(size_bytes_) +
                                                " bytes is not a whole number of " + std::to_string(sizeof(T)) +
                                                "-byte values");
    return size_bytes_ / sizeof(T);
  }

  void* data_ = nullptr;
  std::size_t size_bytes_ = 0;
  std::size_t capacity_bytes_ = 0;
  Device device_{};
};

}  // namespace switchyard
