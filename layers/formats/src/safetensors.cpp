#include "switchyard/formats/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "switchyard/kernels/number_conversion.hpp"
#include "switchyard/runtime/atomic_file.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::formats {
namespace {

using nlohmann::json;

std::size_t dtype_bytes(const std::string& name) {
  static const std::map<std::string, std::size_t> sizes = {
      {"F64", 8}, {"F32", 4},  {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},     {"I16", 2},    {"I8", 1},
      {"U8", 1},  {"BOOL", 1}, {"U16", 2}, {"U32", 4},  {"U64", 8}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  auto it = sizes.find(name);
  return it == sizes.end() ? 0 : it->second;
}

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
  const std::size_t size = file_->size();
  check_arg(size >= 8, path + ": not a safetensors file (shorter than the 8-byte header length)");
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file_->data()[i];
  check_arg(header_len <= size - 8, path + ": safetensors header length " + std::to_string(header_len) +
                                        " runs past the end of the file (" + std::to_string(size) + " bytes)");
  const char* text = reinterpret_cast<const char*>(file_->data() + 8);
  json header = json::parse(text, text + header_len, nullptr, /*allow_exceptions=*/false);
  check_arg(header.is_object(), path + ": safetensors header is not a JSON object");
  const std::uint8_t* data = file_->data() + 8 + header_len;
  const std::size_t data_size = size - 8 - header_len;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = path + ": tensor '" + name + "'";
    check_arg(entry.is_object() && entry.contains("dtype") && entry["dtype"].is_string() && entry.contains("shape") &&
                  entry["shape"].is_array() && entry.contains("data_offsets") && entry["data_offsets"].is_array() &&
                  entry["data_offsets"].size() == 2,
              where + ": header entry needs dtype, shape and data_offsets [begin, end]");
    TensorView t;
    t.name = name;
    t.file = path;
    t.dtype_name = entry["dtype"].get<std::string>();
    t.dtype = dtype_of(t.dtype_name);
    for (auto& d : entry["shape"]) {
      check_arg(d.is_number_unsigned(), where + ": shape entries must be non-negative integers");
      t.shape.push_back(d.get<std::int64_t>());
    }
    auto& offs = entry["data_offsets"];
    check_arg(offs[0].is_number_unsigned() && offs[1].is_number_unsigned(),
              where + ": data_offsets must be non-negative integers");
    const auto begin = offs[0].get<std::uint64_t>(), end = offs[1].get<std::uint64_t>();
    check_arg(begin <= end && end <= data_size, where + ": data_offsets [" + std::to_string(begin) + ", " +
                                                    std::to_string(end) + "] past the end of the data (" +
                                                    std::to_string(data_size) + " bytes; file truncated?)");
    const std::size_t elem = dtype_bytes(t.dtype_name);
    if (elem != 0) {
      check_arg(end - begin == static_cast<std::uint64_t>(t.numel()) * elem,
                where + ": data_offsets span " + std::to_string(end - begin) + " bytes, shape " +
                    shape_string(t.shape) + " of " + t.dtype_name + " needs " + std::to_string(t.numel() * elem));
    }
    t.data = data + begin;
    t.nbytes = end - begin;
    tensors_.emplace(name, std::move(t));
  }
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

void convert_to_f32(const TensorView& t, std::int64_t first, std::int64_t count, float* out) {
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

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
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
  std::memcpy(out.data() + 8, text.data(), text.size());
  std::uint8_t* p = out.data() + 8 + text.size();
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
  write_file_atomically(path, out.data(), out.size());
}

}  // namespace switchyard::formats
