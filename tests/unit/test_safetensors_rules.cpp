// The safetensors format's validation rules, one test each: every fixture
// breaks exactly one rule of the huggingface/safetensors README ("Format")
// and its Rust crate, and the one-line error names the file, the tensor (if
// any) and the field. The rules are listed in docs/formats.md.
#include <string>
#include <vector>

#include "byte_fixtures.hpp"
#include "switchyard/formats/safetensors.hpp"

namespace {

using namespace fixtures;
using switchyard::formats::SafetensorsFile;

// `header` (padded with spaces) and `data` as a file in `dir`; expects opening
// it to fail naming the file and every needle.
void expect_refused(const TempDir& dir, const std::string& name, const Bytes& bytes,
                    const std::vector<std::string>& needles) {
  expect_file_refused(dir, name + ".safetensors", bytes, needles,
                      [](const std::string& path) { SafetensorsFile opened(path); });
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, int begin, int end) {
  return "\"" + name + "\": {\"dtype\": \"" + dtype + "\", \"shape\": " + shape + ", \"data_offsets\": [" +
         std::to_string(begin) + ", " + std::to_string(end) + "]}";
}

const Bytes kData16(16, 0);
const std::string kGood = cat("{", entry("t", "F32", "[2, 2]", 0, 16), "}");

TEST(SafetensorsRules, WellFormedFileOpens) {
  TempDir dir;
  write_file(dir.file("ok.safetensors"), safetensors_bytes(kGood, kData16));
  const SafetensorsFile f(dir.file("ok.safetensors"));
  ASSERT_NE(f.find("t"), nullptr);
  EXPECT_EQ(f.find("t")->nbytes, 16u);
}

TEST(SafetensorsRules, FileShorterThanTheLengthField) {
  TempDir dir;
  expect_refused(dir, "short", Bytes{1, 2, 3}, {"shorter than the 8-byte header length"});
}

TEST(SafetensorsRules, HeaderLengthIsLittleEndianAndCapped) {
  TempDir dir;
  Bytes b;
  put_le(b, 100'000'001, 8);  // past the Rust crate's 100 MB cap, even before the file size is known
  put_str(b, "{}");
  expect_refused(dir, "huge_header", b, {"header length 100000001", "exceeds the limit of 100000000"});
  Bytes big_endian = safetensors_bytes(kGood, kData16);
  std::reverse(big_endian.begin(), big_endian.begin() + 8);  // the length written big-endian
  expect_refused(dir, "big_endian_length", big_endian, {"header length", "exceeds the limit"});
}

TEST(SafetensorsRules, HeaderLengthWithinTheFile) {
  TempDir dir;
  Bytes b;
  put_le(b, 1000, 8);
  put_str(b, kGood);
  expect_refused(dir, "header_past_end", b, {"header length 1000", "runs past the end of the file"});
}

TEST(SafetensorsRules, HeaderIsUtf8) {
  TempDir dir;
  std::string header = "{\"t\xC3\x28\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}";
  expect_refused(dir, "not_utf8", safetensors_bytes(header, kData16), {"not valid UTF-8", "byte 3"});
  header = "{\"t\xC0\xAF\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}";  // overlong '/'
  expect_refused(dir, "overlong_utf8", safetensors_bytes(header, kData16), {"not valid UTF-8"});
  // A well-formed multi-byte name opens.
  write_file(dir.file("utf8.safetensors"),
             safetensors_bytes(cat("{", entry("t\xC3\xA9", "F32", "[4]", 0, 16), "}"), kData16));
  EXPECT_NE(SafetensorsFile(dir.file("utf8.safetensors")).find("t\xC3\xA9"), nullptr);
}

TEST(SafetensorsRules, HeaderBeginsWithBrace) {
  TempDir dir;
  expect_refused(dir, "leading_space", safetensors_bytes(cat(" ", kGood), kData16), {"header must begin with '{'"});
  expect_refused(dir, "array", safetensors_bytes("[1, 2]", kData16), {"header must begin with '{'"});
}

TEST(SafetensorsRules, HeaderIsJson) {
  TempDir dir;
  expect_refused(dir, "not_json", safetensors_bytes("{\"t\": {\"dtype\": ", kData16), {"header is not a JSON object"});
}

TEST(SafetensorsRules, TrailingPaddingIsSpaces) {
  TempDir dir;
  write_file(dir.file("padded.safetensors"), safetensors_bytes(kGood + "        ", kData16));
  EXPECT_NO_THROW(SafetensorsFile{dir.file("padded.safetensors")});
  expect_refused(dir, "newline_padding", safetensors_bytes(kGood + "\n", kData16),
                 {"header padding", "must be spaces (0x20)"});
}

TEST(SafetensorsRules, DuplicateKeysRefused) {
  TempDir dir;
  const std::string twice = cat("{", entry("t", "F32", "[2]", 0, 8), ", ", entry("t", "F32", "[2]", 8, 16), "}");
  expect_refused(dir, "duplicate_tensor", safetensors_bytes(twice, kData16), {"key 't' twice"});
  const std::string field_twice =
      "{\"t\": {\"dtype\": \"F32\", \"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}";
  expect_refused(dir, "duplicate_field", safetensors_bytes(field_twice, kData16), {"key 'dtype' twice"});
}

TEST(SafetensorsRules, MetadataMapsStringsToStrings) {
  TempDir dir;
  const std::string ok = cat("{\"__metadata__\": {\"format\": \"pt\"}, ", entry("t", "F32", "[4]", 0, 16), "}");
  write_file(dir.file("meta.safetensors"), safetensors_bytes(ok, kData16));
  EXPECT_EQ(SafetensorsFile(dir.file("meta.safetensors")).metadata().at("format"), "pt");
  const std::string number = cat("{\"__metadata__\": {\"step\": 3}, ", entry("t", "F32", "[4]", 0, 16), "}");
  expect_refused(dir, "meta_number", safetensors_bytes(number, kData16), {"__metadata__ 'step' must be a string"});
  const std::string list = cat("{\"__metadata__\": [\"pt\"], ", entry("t", "F32", "[4]", 0, 16), "}");
  expect_refused(dir, "meta_list", safetensors_bytes(list, kData16), {"__metadata__ must be an object"});
}

TEST(SafetensorsRules, EntryHasEveryField) {
  TempDir dir;
  expect_refused(dir, "not_object", safetensors_bytes("{\"t\": 5}", kData16), {"tensor 't'", "must be an object"});
  expect_refused(dir, "no_dtype", safetensors_bytes("{\"t\": {\"shape\": [4], \"data_offsets\": [0, 16]}}", kData16),
                 {"tensor 't'", "dtype is missing"});
  expect_refused(dir, "no_shape",
                 safetensors_bytes("{\"t\": {\"dtype\": \"F32\", \"data_offsets\": [0, 16]}}", kData16),
                 {"tensor 't'", "shape is missing"});
  expect_refused(dir, "no_offsets", safetensors_bytes("{\"t\": {\"dtype\": \"F32\", \"shape\": [4]}}", kData16),
                 {"tensor 't'", "data_offsets is missing"});
}

TEST(SafetensorsRules, DtypeFromTheSpecList) {
  TempDir dir;
  expect_refused(dir, "unknown_dtype", safetensors_bytes(cat("{", entry("t", "Q4", "[4]", 0, 16), "}"), kData16),
                 {"tensor 't'", "dtype 'Q4' is not a safetensors dtype", "BF16"});
  expect_refused(dir, "dtype_not_string",
                 safetensors_bytes("{\"t\": {\"dtype\": 4, \"shape\": [4], \"data_offsets\": [0, 16]}}", kData16),
                 {"tensor 't'", "dtype must be a string"});
  // Every dtype of the format opens; those Switchyard cannot compute with are
  // kOther (metadata only).
  const std::vector<std::pair<std::string, int>> bits = {
      {"BOOL", 8},    {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6},     {"U8", 8},          {"I8", 8},
      {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16},
      {"U16", 16},    {"F16", 16},    {"BF16", 16},   {"I32", 32},        {"U32", 32},        {"F32", 32},
      {"C64", 64},    {"F64", 64},    {"I64", 64},    {"U64", 64}};
  for (const auto& [dtype, b] : bits) {
    const std::string path = dir.file(cat("dtype_", dtype, ".safetensors"));
    write_file(path, safetensors_bytes(cat("{", entry("t", dtype, "[16]", 0, 2 * b), "}"), Bytes(2 * b, 0)));
    const SafetensorsFile f(path);
    EXPECT_EQ(f.find("t")->dtype_name, dtype);
    const bool computable = dtype == "F32" || dtype == "BF16" || dtype == "F16";
    EXPECT_EQ(f.find("t")->dtype != switchyard::formats::DType::kOther, computable) << dtype;
  }
}

TEST(SafetensorsRules, ShapeEntriesAreNonNegativeIntegers) {
  TempDir dir;
  expect_refused(dir, "negative_dim", safetensors_bytes(cat("{", entry("t", "F32", "[-4]", 0, 16), "}"), kData16),
                 {"tensor 't'", "shape entries must be non-negative integers", "-4"});
  expect_refused(dir, "float_dim", safetensors_bytes(cat("{", entry("t", "F32", "[4.0]", 0, 16), "}"), kData16),
                 {"tensor 't'", "shape entries must be non-negative integers"});
  expect_refused(dir, "shape_not_array", safetensors_bytes(cat("{", entry("t", "F32", "4", 0, 16), "}"), kData16),
                 {"tensor 't'", "shape must be an array"});
}

TEST(SafetensorsRules, ElementCountWithoutOverflow) {
  TempDir dir;
  const std::string shape = "[4294967296, 4294967296, 16]";  // 2^68 elements
  expect_refused(dir, "numel_overflow", safetensors_bytes(cat("{", entry("t", "F32", shape, 0, 16), "}"), kData16),
                 {"tensor 't'", "shape", "overflows 64 bits"});
  const std::string bits = "[4294967296, 1073741824]";  // 2^62 elements, 2^67 bits of F32
  expect_refused(dir, "bits_overflow", safetensors_bytes(cat("{", entry("t", "F32", bits, 0, 16), "}"), kData16),
                 {"tensor 't'", "shape", "overflows 64 bits"});
}

TEST(SafetensorsRules, DataOffsetsAreTwoIntegers) {
  TempDir dir;
  const auto with_offsets = [](const std::string& offs) {
    return safetensors_bytes(cat("{\"t\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": ", offs, "}}"),
                             kData16);
  };
  expect_refused(dir, "three_offsets", with_offsets("[0, 8, 16]"), {"tensor 't'", "data_offsets must be two"});
  expect_refused(dir, "string_offset", with_offsets("[\"0\", 16]"), {"tensor 't'", "data_offsets must be two"});
  expect_refused(dir, "negative_offset", with_offsets("[-1, 16]"), {"tensor 't'", "data_offsets must be two"});
}

TEST(SafetensorsRules, DataOffsetsBeginNotAfterEnd) {
  TempDir dir;
  expect_refused(dir, "reversed", safetensors_bytes(cat("{", entry("t", "F32", "[0]", 12, 4), "}"), kData16),
                 {"tensor 't'", "data_offsets [12, 4]", "begin must not exceed end"});
}

TEST(SafetensorsRules, DataOffsetsWithinTheData) {
  TempDir dir;
  expect_refused(dir, "past_end", safetensors_bytes(cat("{", entry("t", "F32", "[8]", 0, 32), "}"), kData16),
                 {"tensor 't'", "data_offsets [0, 32]", "past the end of the data (16 bytes"});
}

TEST(SafetensorsRules, SpanIsElementsTimesDtypeSize) {
  TempDir dir;
  expect_refused(dir, "span_f32", safetensors_bytes(cat("{", entry("t", "F32", "[2, 2]", 0, 12), "}"), kData16),
                 {"tensor 't'", "data_offsets span 12 bytes", "needs 16"});
  expect_refused(dir, "span_bf16", safetensors_bytes(cat("{", entry("t", "BF16", "[3]", 0, 8), "}"), Bytes(8, 0)),
                 {"tensor 't'", "data_offsets span 8 bytes", "needs 6"});
  expect_refused(dir, "partial_byte", safetensors_bytes(cat("{", entry("t", "F4", "[3]", 0, 2), "}"), Bytes(2, 0)),
                 {"tensor 't'", "not a whole number of bytes"});
}

TEST(SafetensorsRules, TensorsDoNotOverlap) {
  TempDir dir;
  const std::string h = cat("{", entry("a", "F32", "[3]", 0, 12), ", ", entry("b", "F32", "[2]", 8, 16), "}");
  expect_refused(dir, "overlap", safetensors_bytes(h, kData16),
                 {"tensor 'b'", "data_offsets [8, 16]", "overlap the previous tensor, which ends at 12"});
}

TEST(SafetensorsRules, DataCoveredWithoutHoles) {
  TempDir dir;
  const std::string h = cat("{", entry("a", "F32", "[1]", 0, 4), ", ", entry("b", "F32", "[2]", 8, 16), "}");
  expect_refused(dir, "hole", safetensors_bytes(h, kData16),
                 {"tensor 'b'", "data_offsets [8, 16]", "leave a hole", "ends at 4"});
  // Offsets in any order are fine as long as they tile the data.
  const std::string reordered = cat("{", entry("a", "F32", "[2]", 8, 16), ", ", entry("b", "F32", "[2]", 0, 8), "}");
  write_file(dir.file("reordered.safetensors"), safetensors_bytes(reordered, kData16));
  EXPECT_NO_THROW(SafetensorsFile{dir.file("reordered.safetensors")});
}

TEST(SafetensorsRules, NoTrailingBytesAfterTheLastTensor) {
  TempDir dir;
  expect_refused(dir, "trailing", safetensors_bytes(cat("{", entry("t", "F32", "[2]", 0, 8), "}"), kData16),
                 {"data_offsets", "cover 8 of the 16 data bytes", "trailing bytes"});
  expect_refused(dir, "no_tensors_with_data", safetensors_bytes("{}", kData16), {"cover 0 of the 16 data bytes"});
}

}  // namespace
