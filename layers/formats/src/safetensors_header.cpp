#include "safetensors_header.hpp"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "switchyard/runtime/error.hpp"

namespace switchyard::formats::detail {
namespace {

using nlohmann::json;

// The Rust crate's MAX_HEADER_SIZE.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

const std::map<std::string, std::size_t>& dtype_table() {
  static const std::map<std::string, std::size_t> bits = {
      {"BOOL", 8},    {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6},     {"U8", 8},          {"I8", 8},
      {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16},
      {"U16", 16},    {"F16", 16},    {"BF16", 16},   {"I32", 32},        {"U32", 32},        {"F32", 32},
      {"C64", 64},    {"F64", 64},    {"I64", 64},    {"U64", 64}};
  return bits;
}

std::string dtype_list() {
  std::string s;
  for (const auto& [name, bits] : dtype_table()) s += (s.empty() ? "" : ", ") + name;
  return s;
}

// Length of the UTF-8 sequence starting at text[i], or 0 if it is not valid
// (overlong forms, surrogates and code points past U+10FFFF included).
std::size_t utf8_length(const std::uint8_t* text, std::size_t i, std::size_t n) {
  const std::uint8_t c = text[i];
  if (c < 0x80) return 1;
  std::size_t len = 0;
  std::uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF)
    len = 2;
  else if (c == 0xE0)
    len = 3, lo = 0xA0;
  else if (c >= 0xE1 && c <= 0xEC)
    len = 3;
  else if (c == 0xED)
    len = 3, hi = 0x9F;
  else if (c >= 0xEE && c <= 0xEF)
    len = 3;
  else if (c == 0xF0)
    len = 4, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3)
    len = 4;
  else if (c == 0xF4)
    len = 4, hi = 0x8F;
  else
    return 0;
  if (i + len > n || text[i + 1] < lo || text[i + 1] > hi) return 0;
  for (std::size_t k = 2; k < len; ++k)
    if ((text[i + k] & 0xC0) != 0x80) return 0;
  return len;
}

std::uint64_t read_header_length(const std::string& path, const std::uint8_t* bytes, std::size_t size) {
  check_arg(size >= 8, path + ": not a safetensors file (shorter than the 8-byte header length)");
  std::uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | bytes[i];
  check_arg(len <= kMaxHeaderBytes, path + ": header length " + std::to_string(len) + " exceeds the limit of " +
                                        std::to_string(kMaxHeaderBytes) + " bytes");
  check_arg(len <= size - 8, path + ": header length " + std::to_string(len) + " runs past the end of the file (" +
                                 std::to_string(size) + " bytes; file truncated?)");
  return len;
}

// UTF-8, begins with '{', padded at the end only with spaces (0x20).
void check_header_text(const std::string& path, const std::uint8_t* text, std::size_t n) {
  for (std::size_t i = 0; i < n;) {
    const std::size_t len = utf8_length(text, i, n);
    check_arg(len != 0, path + ": header is not valid UTF-8 (byte " + std::to_string(i) + " of the header)");
    i += len;
  }
  check_arg(n > 0 && text[0] == '{', path + ": header must begin with '{'");
  std::size_t last = n;
  while (last > 0 &&
         (text[last - 1] == ' ' || text[last - 1] == '\t' || text[last - 1] == '\n' || text[last - 1] == '\r'))
    --last;
  for (std::size_t i = last; i < n; ++i)
    check_arg(text[i] == ' ', path + ": header padding after the JSON object must be spaces (0x20), byte " +
                                  std::to_string(i) + " of the header is not");
}

// Parses the header, refusing a key that appears twice in one object.
json parse_unique_keys(const std::string& path, const char* text, std::size_t n) {
  std::vector<std::set<std::string>> open;  // the keys seen in each enclosing object
  auto cb = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) open.emplace_back();
    if (event == json::parse_event_t::object_end) open.pop_back();
    if (event == json::parse_event_t::key) {
      const std::string& key = parsed.get_ref<const std::string&>();
      check_arg(open.back().insert(key).second, path + ": header has the key '" + key + "' twice in one object");
    }
    return true;
  };
  json header = json::parse(text, text + n, cb, /*allow_exceptions=*/false);
  check_arg(!header.is_discarded() && header.is_object(), path + ": header is not a JSON object");
  return header;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& value) {
  check_arg(value.is_object(), path + ": __metadata__ must be an object of string to string, got " + value.dump());
  std::map<std::string, std::string> out;
  for (const auto& [key, v] : value.items()) {
    check_arg(v.is_string(), path + ": __metadata__ '" + key + "' must be a string, got " + v.dump());
    out[key] = v.get<std::string>();
  }
  return out;
}

// The element count of `shape`, refusing an overflow of 64 bits.
std::uint64_t checked_numel(const std::string& where, const std::vector<std::int64_t>& shape, std::size_t bits) {
  std::uint64_t n = 1;
  for (auto d : shape) {
    const auto u = static_cast<std::uint64_t>(d);
    check_arg(u == 0 || n <= std::numeric_limits<std::uint64_t>::max() / u,
              where + ": shape: the element count overflows 64 bits");
    n *= u;
  }
  check_arg(n <= std::numeric_limits<std::uint64_t>::max() / bits,
            where + ": shape: the size in bits overflows 64 bits");
  return n;
}

HeaderEntry parse_entry(const std::string& path, const std::string& name, const json& entry) {
  const std::string where = path + ": tensor '" + name + "'";
  check_arg(entry.is_object(), where + ": entry must be an object {dtype, shape, data_offsets}");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    check_arg(entry.contains(field), where + ": " + field + " is missing");
  HeaderEntry e;
  e.name = name;
  check_arg(entry["dtype"].is_string(), where + ": dtype must be a string, got " + entry["dtype"].dump());
  e.dtype = entry["dtype"].get<std::string>();
  const std::size_t bits = dtype_bits(e.dtype);
  check_arg(bits != 0,
            where + ": dtype '" + e.dtype + "' is not a safetensors dtype (expected one of " + dtype_list() + ")");
  check_arg(entry["shape"].is_array(), where + ": shape must be an array, got " + entry["shape"].dump());
  for (const auto& d : entry["shape"]) {
    check_arg(d.is_number_unsigned() && d.get<std::uint64_t>() <= std::numeric_limits<std::int64_t>::max(),
              where + ": shape entries must be non-negative integers, got " + d.dump());
    e.shape.push_back(d.get<std::int64_t>());
  }
  const json& offs = entry["data_offsets"];
  check_arg(offs.is_array() && offs.size() == 2 && offs[0].is_number_unsigned() && offs[1].is_number_unsigned(),
            where + ": data_offsets must be two non-negative integers [begin, end], got " + offs.dump());
  e.begin = offs[0].get<std::uint64_t>();
  e.end = offs[1].get<std::uint64_t>();
  check_arg(e.begin <= e.end, where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                                  "]: begin must not exceed end");
  const std::uint64_t total_bits = checked_numel(where, e.shape, bits) * bits;
  check_arg(total_bits % 8 == 0,
            where + ": shape " + entry["shape"].dump() + " of " + e.dtype + " is not a whole number of bytes");
  check_arg(e.end - e.begin == total_bits / 8, where + ": data_offsets span " + std::to_string(e.end - e.begin) +
                                                   " bytes, shape " + entry["shape"].dump() + " of " + e.dtype +
                                                   " needs " + std::to_string(total_bits / 8));
  return e;
}

// Sorted by offsets, the tensors must tile [0, data_bytes) exactly.
void check_coverage(const std::string& path, std::vector<HeaderEntry> tensors, std::uint64_t data_bytes) {
  std::sort(tensors.begin(), tensors.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  std::uint64_t at = 0;
  for (const auto& t : tensors) {
    const std::string where = path + ": tensor '" + t.name + "': data_offsets [" + std::to_string(t.begin) + ", " +
                              std::to_string(t.end) + "]";
    check_arg(t.end <= data_bytes,
              where + " run past the end of the data (" + std::to_string(data_bytes) + " bytes; file truncated?)");
    check_arg(t.begin >= at, where + " overlap the previous tensor, which ends at " + std::to_string(at));
    check_arg(t.begin == at, where + " leave a hole: the previous tensor ends at " + std::to_string(at));
    at = t.end;
  }
  check_arg(at == data_bytes, path + ": data_offsets: the tensors cover " + std::to_string(at) + " of the " +
                                  std::to_string(data_bytes) + " data bytes (trailing bytes after the last tensor)");
}

}  // namespace

std::size_t dtype_bits(const std::string& name) {
  auto it = dtype_table().find(name);
  return it == dtype_table().end() ? 0 : it->second;
}

ParsedHeader parse_safetensors_header(const std::string& path, const std::uint8_t* bytes, std::size_t size) {
  const std::uint64_t len = read_header_length(path, bytes, size);
  check_header_text(path, bytes + 8, len);
  const json header = parse_unique_keys(path, reinterpret_cast<const char*>(bytes + 8), len);
  ParsedHeader out;
  out.data_start = 8 + len;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__")
      out.metadata = parse_metadata(path, entry);
    else
      out.tensors.push_back(parse_entry(path, name, entry));
  }
  check_coverage(path, out.tensors, size - out.data_start);
  return out;
}

}  // namespace switchyard::formats::detail
