#include "switchyard/runtime/npy.hpp"

#include <cctype>
#include <cstring>
#include <limits>
#include <map>

#include "switchyard/runtime/atomic_file.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

// The header's dict literal, e.g. {'descr': '<f4', 'fortran_order': False,
// 'shape': (2, 3), }: string keys; values a string, True/False or a tuple of
// non-negative integers. A small parser of exactly what the format allows.
class HeaderParser {
 public:
  HeaderParser(const std::string& path, const std::string& text) : path_(path), s_(text) {}

  // Every key mapped to its value's source text (a tuple as "(2, 3)").
  std::map<std::string, std::string> dict() {
    std::map<std::string, std::string> out;
    expect('{', "the header must be a Python dict literal beginning with '{'");
    while (skip_space(), peek() != '}') {
      const std::string key = string_literal("a quoted key");
      skip_space();
      expect(':', "expected ':' after the key '" + key + "'");
      skip_space();
      std::string value = peek() == '(' ? tuple() : peek() == '\'' || peek() == '"' ? quoted() : word();
      check_arg(!value.empty(),
                path_ + ": .npy header: the value of '" + key + "' must be a string, True, False or a tuple");
      check_arg(out.emplace(key, value).second, path_ + ": .npy header has the key '" + key + "' twice");
      skip_space();
      if (peek() == ',')
        ++at_;
      else
        check_arg(peek() == '}', path_ + ": .npy header: expected ',' or '}' after the value of '" + key + "'");
    }
    ++at_;
    skip_space();
    check_arg(at_ == s_.size(), path_ + ": .npy header has text after the dict literal");
    return out;
  }

 private:
  char peek() const { return at_ < s_.size() ? s_[at_] : '\0'; }
  void skip_space() {
    while (at_ < s_.size() && (s_[at_] == ' ' || s_[at_] == '\t' || s_[at_] == '\n' || s_[at_] == '\r')) ++at_;
  }
  void expect(char c, const std::string& what) {
    check_arg(peek() == c, path_ + ": .npy header: " + what);
    ++at_;
  }
  std::string string_literal(const std::string& what) {
    const char q = peek();
    check_arg(q == '\'' || q == '"', path_ + ": .npy header: expected " + what + " at byte " + std::to_string(at_));
    const std::size_t end = s_.find(q, at_ + 1);
    check_arg(end != std::string::npos, path_ + ": .npy header: unterminated string");
    std::string out = s_.substr(at_ + 1, end - at_ - 1);
    at_ = end + 1;
    return out;
  }
  std::string quoted() {  // normalised to single quotes
    std::string out(1, '\'');
    out.append(string_literal("a string")).push_back('\'');
    return out;
  }
  std::string word() {
    const std::size_t begin = at_;
    while (at_ < s_.size() && std::isalnum(static_cast<unsigned char>(s_[at_]))) ++at_;
    return s_.substr(begin, at_ - begin);
  }
  std::string tuple() {
    const std::size_t begin = at_;
    const std::size_t end = s_.find(')', at_);
    check_arg(end != std::string::npos, path_ + ": .npy header: unterminated shape tuple");
    at_ = end + 1;
    return s_.substr(begin, at_ - begin);
  }

  const std::string& path_;
  const std::string& s_;
  std::size_t at_ = 0;
};

// "(2, 3)" as dimensions; "(5,)" and "()" as well. Refuses anything else.
std::vector<std::int64_t> parse_shape(const std::string& path, const std::string& text) {
  const std::string bad = path + ": .npy header: 'shape' must be a tuple of non-negative integers, got " + text;
  std::vector<std::int64_t> dims;
  std::size_t i = 1;
  const auto space = [&] {
    while (i < text.size() && text[i] == ' ') ++i;
  };
  for (space(); text[i] != ')'; space()) {
    std::uint64_t d = 0;
    const std::size_t first = i;
    for (; std::isdigit(static_cast<unsigned char>(text[i])); ++i) {
      check_arg(d <= (std::numeric_limits<std::int64_t>::max() - 9) / 10, bad);
      d = d * 10 + static_cast<std::uint64_t>(text[i] - '0');
    }
    check_arg(i > first, bad);
    dims.push_back(static_cast<std::int64_t>(d));
    space();
    if (text[i] == ',')
      ++i;
    else
      check_arg(text[i] == ')', bad);
  }
  check_arg(dims.size() != 1 || text.find(',') != std::string::npos, bad + " (a 1-tuple needs a trailing comma)");
  return dims;
}

// Version, header length and where the header starts, from the preamble.
struct Preamble {
  int major = 0;
  std::size_t header_len = 0, header_at = 0;
};

Preamble read_preamble(const std::string& path, const std::uint8_t* p, std::size_t n) {
  check_arg(n >= 6 && std::memcmp(p, kMagic, 6) == 0, path + ": not an .npy file (bad magic)");
  check_arg(n >= 10, path + ": .npy file truncated inside its preamble (" + std::to_string(n) + " bytes)");
  Preamble pre;
  pre.major = p[6];
  check_arg((pre.major >= 1 && pre.major <= 3) && p[7] == 0, path + ": unsupported .npy version " +
                                                                 std::to_string(p[6]) + "." + std::to_string(p[7]) +
                                                                 " (expected 1.0, 2.0 or 3.0)");
  if (pre.major == 1) {
    pre.header_len = p[8] | (p[9] << 8);
    pre.header_at = 10;
  } else {
    check_arg(n >= 12, path + ": .npy file truncated inside its preamble (" + std::to_string(n) + " bytes)");
    pre.header_len = p[8] | (p[9] << 8) | (std::size_t(p[10]) << 16) | (std::size_t(p[11]) << 24);
    pre.header_at = 12;
  }
  check_arg(pre.header_at + pre.header_len <= n, path + ": .npy header length " + std::to_string(pre.header_len) +
                                                     " runs past the end of the file (" + std::to_string(n) +
                                                     " bytes; file truncated?)");
  // NOTE: numpy writes headers padded to 64 bytes (16 before numpy 1.9) and
  // its reader takes any length; the data is used in place as float32, so
  // 16-byte alignment is required.
  check_arg((pre.header_at + pre.header_len) % 16 == 0,
            path + ": .npy header ends at byte " + std::to_string(pre.header_at + pre.header_len) +
                "; the data must start at a multiple of 16 (writers pad the header with spaces to 64)");
  return pre;
}

}  // namespace

NpyLayout parse_npy(const std::string& path, const std::uint8_t* p, std::size_t n) {
  const Preamble pre = read_preamble(path, p, n);
  const std::string header(reinterpret_cast<const char*>(p + pre.header_at), pre.header_len);
  check_arg(!header.empty() && header.back() == '\n', path + ": .npy header must end with a newline ('\\n')");
  const auto dict = HeaderParser(path, header).dict();
  check_arg(dict.size() == 3 && dict.count("descr") && dict.count("fortran_order") && dict.count("shape"),
            path + ": .npy header must have exactly the keys 'descr', 'fortran_order' and 'shape'");
  check_arg(dict.at("descr") == "'<f4'", path + ": expected dtype float32 ('<f4'), got descr " + dict.at("descr"));
  const std::string& order = dict.at("fortran_order");
  check_arg(order == "True" || order == "False",
            path + ": .npy header: 'fortran_order' must be True or False, got " + order);
  check_arg(order == "False", path + ": expected C-order array, got fortran_order True");
  const std::string& shape_text = dict.at("shape");
  check_arg(!shape_text.empty() && shape_text[0] == '(',
            path + ": .npy header: 'shape' must be a tuple of non-negative integers, got " + shape_text);
  const std::vector<std::int64_t> shape = parse_shape(path, shape_text);
  check_arg(shape.size() == 2, path + ": expected a 2-D array [tokens, hidden], got shape " + shape_text);
  NpyLayout out{.rows = shape[0], .cols = shape[1], .data_offset = pre.header_at + pre.header_len};
  const auto rows = static_cast<std::uint64_t>(out.rows), cols = static_cast<std::uint64_t>(out.cols);
  const std::size_t have = n - out.data_offset;
  check_arg(cols == 0 || rows <= std::numeric_limits<std::uint64_t>::max() / 4 / cols,
            path + ": .npy shape " + shape_text + ": the data size overflows 64 bits");
  const std::uint64_t need = rows * cols * sizeof(float);
  check_arg(have >= need, path + ": truncated: shape " + shape_text + " needs " + std::to_string(need) +
                              " data bytes, file has " + std::to_string(have));
  check_arg(have == need, path + ": shape " + shape_text + " needs " + std::to_string(need) + " data bytes, file has " +
                              std::to_string(have) + " (trailing bytes)");
  return out;
}

NpyMatrix::NpyMatrix(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
  const NpyLayout layout = parse_npy(path, file_->data(), file_->size());
  rows_ = layout.rows;
  cols_ = layout.cols;
  data_ = reinterpret_cast<const float*>(file_->data() + layout.data_offset);
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
