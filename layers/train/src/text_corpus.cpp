#include "switchyard/train/text_corpus.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "seeded_rng.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::train {
namespace fs = std::filesystem;

namespace {

std::string byte_name(unsigned char b) {
  if (b == '\n') return "\\n";
  if (b == '\t') return "\\t";
  return std::string(1, static_cast<char>(b));
}

bool is_plain_text(unsigned char b) { return b == '\n' || b == '\t' || (b >= 0x20 && b < 0x7f); }

}  // namespace

TextCorpus load_text_corpus(const std::string& dir, double val_fraction, std::int64_t min_bytes) {
  check_arg(val_fraction > 0.0 && val_fraction <= 0.5,
            "val_fraction must be in (0, 0.5], got " + std::to_string(val_fraction));
  check_arg(fs::is_directory(dir), "corpus directory " + dir + ": not a directory");
  TextCorpus c;
  c.dir = dir;
  for (const auto& entry : fs::directory_iterator(dir)) {
    // NOTE: fortune ships each collection as FILE, FILE.dat (a binary index)
    // and FILE.u8 (a symlink to FILE); only the first is text, read once.
    if (entry.is_symlink() || !entry.is_regular_file()) continue;
    if (entry.path().extension() == ".dat") continue;
    c.files.push_back(entry.path().string());
  }
  std::sort(c.files.begin(), c.files.end());

  std::vector<unsigned char> bytes;
  for (const auto& path : c.files) {
    std::ifstream in(path, std::ios::binary);
    check_arg(in.good(), path + ": cannot be read");
    bytes.insert(bytes.end(), std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  check_arg(static_cast<std::int64_t>(bytes.size()) >= min_bytes,
            "corpus directory " + dir + ": holds " + std::to_string(bytes.size()) + " bytes of text in " +
                std::to_string(c.files.size()) + " files, need at least " + std::to_string(min_bytes) + " (min_bytes)");

  std::array<bool, 256> seen{};
  for (unsigned char b : bytes) seen[b] = true;
  bool any_other = false;
  for (int b = 0; b < 256; ++b) {
    if (!seen[b]) continue;
    if (is_plain_text(static_cast<unsigned char>(b))) {
      c.token_of[b] = static_cast<std::int32_t>(c.token_names.size());
      c.token_names.push_back(byte_name(static_cast<unsigned char>(b)));
    } else {
      any_other = true;
    }
  }
  if (any_other) {
    const auto other = static_cast<std::int32_t>(c.token_names.size());
    c.token_names.push_back("<other>");
    for (int b = 0; b < 256; ++b)
      if (!is_plain_text(static_cast<unsigned char>(b))) c.token_of[b] = other;
  }
  c.tokens.resize(bytes.size());
  for (std::size_t i = 0; i < bytes.size(); ++i) c.tokens[i] = c.token_of[bytes[i]];
  c.val_begin = c.size() - static_cast<std::int64_t>(std::llround(val_fraction * static_cast<double>(c.size())));
  return c;
}

NgramBaselines ngram_baselines(const TextCorpus& c) {
  const std::int64_t V = c.vocab_size(), N = c.val_begin;
  std::vector<double> uni(V, 0.0), from(V, 0.0), bi(V * V, 0.0);
  for (std::int64_t i = 0; i < N; ++i) {
    uni[c.tokens[i]] += 1;
    if (i > 0) {
      from[c.tokens[i - 1]] += 1;
      bi[c.tokens[i - 1] * V + c.tokens[i]] += 1;
    }
  }
  NgramBaselines out;
  const std::int64_t num_val = c.size() - c.val_begin;
  for (std::int64_t i = c.val_begin; i < c.size(); ++i) {
    const std::int32_t a = c.tokens[i - 1], t = c.tokens[i];
    out.unigram -= std::log((uni[t] + 1.0) / (static_cast<double>(N) + static_cast<double>(V)));
    out.bigram -= std::log((bi[a * V + t] + 1.0) / (from[a] + static_cast<double>(V)));
  }
  out.unigram /= static_cast<double>(num_val);
  out.bigram /= static_cast<double>(num_val);
  return out;
}

std::vector<std::int64_t> sample_positions(const TextCorpus& c, std::int64_t context, std::uint64_t seed,
                                           std::int64_t step, int rank, std::int64_t count) {
  check(c.val_begin > context, ErrorCode::kInternal, "training text shorter than the context");
  detail::SeededRng rng(detail::combine(detail::combine(seed ^ 0x7261696e62617463ULL, static_cast<std::uint64_t>(step)),
                                        static_cast<std::uint64_t>(rank)));
  const auto span = static_cast<std::uint64_t>(c.val_begin - context);
  std::vector<std::int64_t> out(static_cast<std::size_t>(count));
  for (auto& p : out) p = context + static_cast<std::int64_t>(rng.below(span));
  return out;
}

void gather_examples(const TextCorpus& c, const std::int64_t* positions, std::int64_t count, std::int64_t context,
                     std::int32_t* contexts, std::int32_t* targets) {
  for (std::int64_t i = 0; i < count; ++i) {
    const std::int64_t p = positions[i];
    for (std::int64_t j = 0; j < context; ++j) contexts[i * context + j] = c.tokens[p - context + j];
    targets[i] = c.tokens[p];
  }
}

}  // namespace switchyard::train
