// The .npy format's rules (NumPy's format.rst, versions 1.0, 2.0 and 3.0),
// one test each: every fixture breaks exactly one rule and the one-line error
// names the file and the field. The rules are listed in docs/formats.md.
#include <string>
#include <vector>

#include "byte_fixtures.hpp"
#include "switchyard/runtime/npy.hpp"

namespace {

using namespace fixtures;
using switchyard::NpyMatrix;

const std::string kDict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
const Bytes kSix(6 * 4, 0);

void expect_refused(const TempDir& dir, const std::string& name, const Bytes& bytes,
                    const std::vector<std::string>& needles) {
  expect_file_refused(dir, name + ".npy", bytes, needles, [](const std::string& path) { NpyMatrix opened(path); });
}

void expect_opens(const TempDir& dir, const std::string& name, const Bytes& bytes) {
  const std::string path = dir.file(name + ".npy");
  write_file(path, bytes);
  const NpyMatrix m(path);
  EXPECT_EQ(m.rows(), 2) << name;
  EXPECT_EQ(m.cols(), 3) << name;
}

TEST(NpyRules, Magic) {
  TempDir dir;
  Bytes b = npy_raw(npy_header(kDict), kSix);
  b[1] = 'X';
  expect_refused(dir, "bad_magic", b, {"not an .npy file (bad magic)"});
}

TEST(NpyRules, VersionsOneTwoThreeWithMinorZero) {
  TempDir dir;
  for (int major : {1, 2, 3}) {
    std::string name = "v";
    name += std::to_string(major);
    expect_opens(dir, name, npy_raw(npy_header(kDict, major), kSix, major));
  }
  expect_refused(dir, "v4", npy_raw(npy_header(kDict, 2), kSix, 4), {"unsupported .npy version 4.0"});
  expect_refused(dir, "v1_1", npy_raw(npy_header(kDict), kSix, 1, 1), {"unsupported .npy version 1.1"});
}

TEST(NpyRules, PreambleComplete) {
  TempDir dir;
  Bytes b = npy_raw(npy_header(kDict), kSix);
  b.resize(9);
  expect_refused(dir, "short_preamble", b, {"truncated inside its preamble"});
}

TEST(NpyRules, HeaderLengthWithinTheFile) {
  TempDir dir;
  Bytes b = npy_raw(npy_header(kDict), {});
  b[8] = 0xF0;
  b[9] = 0x7F;
  expect_refused(dir, "header_past_end", b, {"header length 32752", "runs past the end of the file"});
}

TEST(NpyRules, DataAlignedToSixteenBytes) {
  TempDir dir;
  expect_opens(dir, "align16", npy_raw(npy_header(kDict, 1, 16), kSix));  // files from numpy before 1.9
  std::string h = npy_header(kDict);
  h.insert(h.begin(), ' ');  // one byte more: the data starts at 129
  expect_refused(dir, "unaligned", npy_raw(h, kSix), {"header ends at byte 129", "multiple of 16"});
}

TEST(NpyRules, HeaderEndsWithNewline) {
  TempDir dir;
  std::string h = npy_header(kDict);
  h.back() = ' ';
  expect_refused(dir, "no_newline", npy_raw(h, kSix), {"header must end with a newline"});
}

TEST(NpyRules, HeaderIsADictLiteral) {
  TempDir dir;
  expect_refused(dir, "not_dict", npy_raw(npy_header("hello"), kSix), {"must be a Python dict literal"});
  expect_refused(dir, "unquoted_key", npy_raw(npy_header("{descr: '<f4'}"), kSix), {"expected a quoted key"});
  expect_refused(dir, "after_dict", npy_raw(npy_header(kDict + " x"), kSix), {"text after the dict literal"});
  // Double quotes and no spaces are the same literal.
  expect_opens(dir, "double_quotes",
               npy_raw(npy_header("{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":(2,3)}"), kSix));
}

TEST(NpyRules, ExactlyTheThreeKeys) {
  TempDir dir;
  expect_refused(dir, "missing_key", npy_raw(npy_header("{'descr': '<f4', 'shape': (2, 3), }"), kSix),
                 {"exactly the keys 'descr', 'fortran_order' and 'shape'"});
  expect_refused(dir, "extra_key",
                 npy_raw(npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), "
                                    "'extra': 1}"),
                         kSix),
                 {"exactly the keys"});
  expect_refused(dir, "duplicate_key",
                 npy_raw(npy_header("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}"), kSix),
                 {"key 'descr' twice"});
}

TEST(NpyRules, DescrIsLittleEndianFloat32) {
  TempDir dir;
  expect_refused(dir, "big_endian",
                 npy_raw(npy_header("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3)}"), kSix),
                 {"descr '>f4'", "'<f4'"});
}

TEST(NpyRules, FortranOrderIsABoolAndFalse) {
  TempDir dir;
  expect_refused(dir, "fortran", npy_raw(npy_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3)}"), kSix),
                 {"fortran_order True"});
  expect_refused(dir, "fortran_int", npy_raw(npy_header("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}"), kSix),
                 {"'fortran_order' must be True or False, got 0"});
}

TEST(NpyRules, ShapeIsATupleOfNonNegativeIntegers) {
  TempDir dir;
  const auto with_shape = [](const std::string& s) {
    return npy_raw(npy_header(cat("{'descr': '<f4', 'fortran_order': False, 'shape': ", s, "}")), kSix);
  };
  expect_refused(dir, "negative", with_shape("(-2, 3)"), {"'shape' must be a tuple of non-negative integers"});
  expect_refused(dir, "list", with_shape("[2, 3]"), {"the value of 'shape' must be a string, True, False or a tuple"});
  expect_refused(dir, "one_tuple_no_comma", with_shape("(6)"), {"trailing comma"});
  expect_refused(dir, "huge_dim", with_shape("(99999999999999999999, 3)"), {"'shape' must be a tuple"});
  expect_refused(dir, "three_d", with_shape("(1, 2, 3)"), {"expected a 2-D array", "(1, 2, 3)"});
}

TEST(NpyRules, DataSizeIsShapeTimesItemsize) {
  TempDir dir;
  Bytes truncated = npy_raw(npy_header(kDict), kSix);
  truncated.pop_back();
  expect_refused(dir, "truncated", truncated, {"truncated: shape (2, 3) needs 24 data bytes, file has 23"});
  Bytes trailing = npy_raw(npy_header(kDict), kSix);
  trailing.push_back(0);
  expect_refused(dir, "trailing", trailing, {"needs 24 data bytes, file has 25 (trailing bytes)"});
  expect_refused(
      dir, "overflow",
      npy_raw(npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4)}"), kSix),
      {"overflows 64 bits"});
}

TEST(NpyRules, WriterPadsToSixtyFourWithANewline) {
  const std::vector<float> v(6, 1.0f);
  const auto bytes = switchyard::npy_bytes(v.data(), 2, 3);
  const std::size_t header_len = bytes[8] | (bytes[9] << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  EXPECT_EQ(bytes[10 + header_len - 1], '\n');
  EXPECT_EQ(bytes.size(), 10 + header_len + 24);
}

}  // namespace
