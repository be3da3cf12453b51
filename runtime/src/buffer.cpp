#include "switchyard/runtime/buffer.hpp"

#include <cstring>
#include <new>
#include <utility>

namespace switchyard {
namespace {

void check_device(const Device& device) {
  check_arg(device.kind == DeviceKind::kCpu && device.index >= 0,
            std::string("buffer on device ") + device_name(device.kind) + ":" + std::to_string(device.index) +
                ": this build has no backend for it (cpu only)");
}

// 64-byte aligned host memory, rounded up to whole cache lines.
void* allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  const std::size_t rounded = (bytes + Buffer::kAlignment - 1) / Buffer::kAlignment * Buffer::kAlignment;
  void* p = rounded < bytes ? nullptr : ::operator new (rounded, std::align_val_t{Buffer::kAlignment}, std::nothrow);
  check(p != nullptr, ErrorCode::kIo, "could not allocate " + std::to_string(bytes) + " bytes of host memory");
  return p;
}

void release(void* p) {
  if (p != nullptr) ::operator delete (p, std::align_val_t{Buffer::kAlignment});
}

}  // namespace

Buffer::Buffer(std::size_t size_bytes, Device device) : device_(device) {
  check_device(device_);
  data_ = allocate(size_bytes);
  size_bytes_ = capacity_bytes_ = size_bytes;
}

Buffer::~Buffer() { release(data_); }

Buffer::Buffer(Buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_bytes_(std::exchange(other.size_bytes_, 0)),
      capacity_bytes_(std::exchange(other.capacity_bytes_, 0)),
      device_(other.device_) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    release(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
    capacity_bytes_ = std::exchange(other.capacity_bytes_, 0);
    device_ = other.device_;
  }
  return *this;
}

void Buffer::resize(std::size_t size_bytes) {
  if (size_bytes > capacity_bytes_) {
    void* grown = allocate(size_bytes);
    if (size_bytes_ > 0) std::memcpy(grown, data_, size_bytes_);
    release(data_);
    data_ = grown;
    capacity_bytes_ = size_bytes;
  }
  size_bytes_ = size_bytes;
}

}  // namespace switchyard
