// Checksums (XXH3 128-bit): known values, damaged and truncated files, the
// data checksum a safetensors file may carry in __metadata__, and the
// checkpoint index's rules (weight_map file names stay inside the directory
// and exist; each tensor is in the file the map names).
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "byte_fixtures.hpp"
#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/formats/checksum.hpp"
#include "switchyard/formats/safetensors.hpp"

namespace {

using namespace fixtures;
using namespace switchyard::formats;

TEST(Checksum, KnownValues) {
  // XXH3-128 of the empty input and of "abc" (xxhsum -H2).
  EXPECT_EQ(checksum_of("", 0), "xxh3-128:99aa06d3014798d86001c324468d497f");
  EXPECT_EQ(checksum_of("abc", 3), "xxh3-128:06b05ab6733a618578af5f94892f3950");
}

TEST(Checksum, DamagedFileRefusedNamingIt) {
  TempDir dir;
  const std::string path = dir.file("blob.bin");
  Bytes b(4096);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(i * 7);
  write_file(path, b);
  const std::string sum = checksum_of(b.data(), b.size());
  EXPECT_NO_THROW(verify_file(path, sum, 4096));
  b[1234] ^= 0x01;
  write_file(path, b);
  expect_error([&] { verify_file(path, sum, 4096); },
               {path, cat("checksum mismatch (the file is damaged: expected ", sum)});
  b.resize(4000);
  write_file(path, b);
  expect_error([&] { verify_file(path, sum, 4096); }, {path, "truncated", "expected 4096 bytes, got 4000"});
  expect_error([&] { verify_file(path, "md5:abc", -1); }, {path, "recorded checksum 'md5:abc'"});
}

TEST(Checksum, SafetensorsDataChecksumVerifiedWhenPresent) {
  TempDir dir;
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  const std::string path = dir.file("grads.safetensors");
  const std::string file_sum = write_safetensors(path, {{"g", {2, 3}, v.data()}}, {{"format", "pt"}}, true);
  Bytes b = read_file(path);
  EXPECT_EQ(file_sum, checksum_of(b.data(), b.size()));
  const SafetensorsFile ok(path);
  EXPECT_EQ(ok.metadata().at(kDataChecksumKey), checksum_of(b.data() + b.size() - 24, 24));
  b[b.size() - 5] ^= 0x40;  // one byte of the data
  write_file(path, b);
  expect_error([&] { SafetensorsFile f(path); }, {path, "checksum mismatch (the file is damaged"});
  // Without the key, nothing is hashed: the same damage goes unnoticed.
  const std::string plain = dir.file("plain.safetensors");
  write_safetensors(plain, {{"g", {2, 3}, v.data()}});
  Bytes p = read_file(plain);
  p[p.size() - 5] ^= 0x40;
  write_file(plain, p);
  EXPECT_NO_THROW(SafetensorsFile{plain});
}

TEST(Checksum, FasterThanWritingTheFile) {
  TempDir dir;
  const std::vector<float> v(64 << 20, 0.5f);  // 256 MiB
  const std::string path = dir.file("big.safetensors");
  const auto t0 = std::chrono::steady_clock::now();
  write_safetensors(path, {{"x", {static_cast<std::int64_t>(v.size())}, v.data()}});
  const auto t1 = std::chrono::steady_clock::now();
  const std::string sum = checksum_of(v.data(), v.size() * 4);
  const auto t2 = std::chrono::steady_clock::now();
  const double write_s = std::chrono::duration<double>(t1 - t0).count();
  const double hash_s = std::chrono::duration<double>(t2 - t1).count();
  std::printf("write %.3f s, hash %.3f s (%.1f GB/s)\n", write_s, hash_s, v.size() * 4 / hash_s / 1e9);
  EXPECT_LT(hash_s, write_s);
}

// A sharded checkpoint: an index and one shard holding "a".
void write_sharded(const TempDir& dir, const std::string& map_entries) {
  const float a[2] = {1, 2};
  write_safetensors(dir.file("s1.safetensors"), {{"a", {2}, a}});
  write_file(dir.file("model.safetensors.index.json"), [&] {
    Bytes b;
    put_str(b, cat("{\"metadata\": {}, \"weight_map\": {", map_entries, "}}"));
    return b;
  }());
}

TEST(CheckpointIndexRules, FileNamesStayInsideTheDirectory) {
  TempDir dir;
  write_sharded(dir, "\"a\": \"../s1.safetensors\"");
  expect_error([&] { Checkpoint c(dir.path().string()); }, {"model.safetensors.index.json", "weight_map entry 'a'",
                                                            "'../s1.safetensors'", "inside the checkpoint"});
  write_sharded(dir, "\"a\": \"/etc/passwd\"");
  expect_error([&] { Checkpoint c(dir.path().string()); }, {"weight_map entry 'a'", "'/etc/passwd'"});
}

TEST(CheckpointIndexRules, MapIsAnObjectOfFileNames) {
  TempDir dir;
  write_sharded(dir, "\"a\": 3");
  expect_error([&] { Checkpoint c(dir.path().string()); }, {"model.safetensors.index.json", "'a' is not a file name"});
  write_file(dir.file("model.safetensors.index.json"), [] {
    Bytes b;
    put_str(b, "{\"weight_map\": [\"s1.safetensors\"]}");
    return b;
  }());
  expect_error([&] { Checkpoint c(dir.path().string()); }, {"model.safetensors.index.json", "\"weight_map\" object"});
}

TEST(CheckpointIndexRules, NamedFilesExist) {
  TempDir dir;
  write_sharded(dir, "\"a\": \"s1.safetensors\", \"b\": \"s2.safetensors\"");
  Checkpoint c(dir.path().string());  // shards are opened on first use
  EXPECT_NO_THROW(c.tensor("a"));
  expect_error([&] { c.tensor("b"); }, {"s2.safetensors", "for tensor 'b'", "does not exist"});
}

TEST(CheckpointIndexRules, TensorInTheNamedFile) {
  TempDir dir;
  write_sharded(dir, "\"a\": \"s1.safetensors\", \"b\": \"s1.safetensors\"");
  Checkpoint c(dir.path().string());
  EXPECT_EQ(c.read_f32("a", {2}), (std::vector<float>{1, 2}));
  expect_error([&] { c.tensor("b"); }, {"s1.safetensors", "missing tensor 'b'", "listed in the index"});
}

}  // namespace
