#include "switchyard/formats/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "safetensors_header.hpp"
#include "switchyard/formats/checksum.hpp"
#include "switchyard/kernels/number_conversion.hpp"
#include "switchyard/runtime/atomic_file.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::formats {
namespace {

using nlohmann::json;

DType dtype_of(const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  return DType::kOther;
}

// NOTE: tensor data in a mapped file need not be 2-byte aligned, so 16-bit
// values are copied through a small aligned buffer before converting.
constexpr std::int64_t kChunk = 1024;

}  // namespace

std::int64_t numel_of(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::int64_t TensorView::numel() const { return numel_of(shape); }

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
  detail::ParsedHeader header = detail::parse_safetensors_header(path, file_->data(), file_->size());
  const std::uint8_t* data = file_->data() + header.data_start;
  const std::size_t data_bytes = file_->size() - header.data_start;
  if (auto it = header.metadata.find(kDataChecksumKey); it != header.metadata.end())
    check_checksum(path, it->second, checksum_of(data, data_bytes));
  metadata_ = std::move(header.metadata);
  for (auto& e : header.tensors) {
    TensorView t;
    t.name = e.name;
    t.file = path;
    t.dtype_name = std::move(e.dtype);
    t.dtype = dtype_of(t.dtype_name);
    t.shape = std::move(e.shape);
    t.data = data + e.begin;
    t.nbytes = e.end - e.begin;
    tensors_.emplace(e.name, std::move(t));
  }
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

void convert_to_f32(const TensorView& t, std::int64_t first, std::int64_t count, float* out) {
  if (count == 0) return;  // `out` may be null (an empty vector's data()), which memcpy must never see
  switch (t.dtype) {
    case DType::kF32: std::memcpy(out, t.data + first * 4, static_cast<std::size_t>(count) * 4); return;
    case DType::kBF16:
    case DType::kF16: {
      const std::uint8_t* p = t.data + first * 2;
      std::uint16_t narrow[kChunk];
      for (std::int64_t done = 0; done < count; done += kChunk) {
        const std::int64_t n = std::min(kChunk, count - done);
        std::memcpy(narrow, p + done * 2, static_cast<std::size_t>(n) * 2);
        if (t.dtype == DType::kBF16)
          kernels::convert_from_bf16(narrow, n, out + done);
        else
          kernels::convert_from_f16(narrow, n, out + done);
      }
      return;
    }
    case DType::kOther: break;
  }
  throw Error(ErrorCode::kInvalidArgument,
              t.file + ": tensor '" + t.name + "' has dtype " + t.dtype_name + "; expected F32, BF16 or F16");
}

namespace {

// Stores `tensors` at `out`, converting to each one's dtype.
void store_tensors(const std::vector<TensorToWrite>& tensors, std::uint8_t* p) {
  for (auto& t : tensors) {
    const std::int64_t n = numel_of(t.shape);
    if (t.dtype == DType::kF32) {
      std::memcpy(p, t.data, static_cast<std::size_t>(n) * 4);
      p += n * 4;
      continue;
    }
    std::uint16_t narrow[kChunk];
    for (std::int64_t done = 0; done < n; done += kChunk) {
      const std::int64_t m = std::min(kChunk, n - done);
      if (t.dtype == DType::kBF16)
        kernels::convert_to_bf16(t.data + done, m, narrow);
      else
        kernels::convert_to_f16(t.data + done, m, narrow);
      std::memcpy(p, narrow, static_cast<std::size_t>(m) * 2);
      p += m * 2;
    }
  }
}

}  // namespace

std::string write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata, bool data_checksum) {
  json header = json::object();
  std::map<std::string, std::string> meta = metadata;
  // NOTE: a placeholder of the checksum's length, filled in once the data is laid out.
  const std::string placeholder = kChecksumPrefix + std::string(32, '0');
  if (data_checksum) meta[kDataChecksumKey] = placeholder;
  if (!meta.empty()) header["__metadata__"] = meta;
  std::uint64_t offset = 0;
  for (auto& t : tensors) {
    check(t.dtype != DType::kOther, ErrorCode::kInternal, "write_safetensors: unsupported dtype for " + t.name);
    const std::uint64_t bytes = static_cast<std::uint64_t>(numel_of(t.shape)) * (t.dtype == DType::kF32 ? 4 : 2);
    const char* dtype = t.dtype == DType::kF32 ? "F32" : t.dtype == DType::kBF16 ? "BF16" : "F16";
    header[t.name] = {{"dtype", dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep tensor data 8-byte aligned
  std::vector<std::uint8_t> out(8 + text.size() + offset);
  const std::uint64_t len = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(len >> (8 * i));
  std::uint8_t* data = out.data() + 8 + text.size();
  store_tensors(tensors, data);
  if (data_checksum) {
    const std::string key = std::string("\"") + kDataChecksumKey + "\":\"" + placeholder;
    const std::size_t at = text.find(key);
    check(at != std::string::npos, ErrorCode::kInternal, "write_safetensors: checksum placeholder not found");
    text.replace(at + key.size() - placeholder.size(), placeholder.size(), checksum_of(data, offset));
  }
  std::memcpy(out.data() + 8, text.data(), text.size());
  write_file_atomically(path, out.data(), out.size());
  return checksum_of(out.data(), out.size());
}

}  // namespace switchyard::formats
