#pragma once
// A character-level text corpus for training: the files of a directory read
// in name order, bytes mapped to a small vocabulary, the tail held out for
// validation, and the n-gram baselines a model has to beat.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace switchyard::train {

struct TextCorpus {
  std::string dir;
  std::vector<std::string> files;            // the files read, sorted by name
  std::vector<std::string> token_names;      // printable name of each token, e.g. "e", "\\n", "<other>"
  std::array<std::int32_t, 256> token_of{};  // byte -> token id
  std::vector<std::int32_t> tokens;          // the whole text
  std::int64_t val_begin = 0;                // first held-out position; [0, val_begin) is training text

  std::int64_t vocab_size() const { return static_cast<std::int64_t>(token_names.size()); }
  std::int64_t size() const { return static_cast<std::int64_t>(tokens.size()); }
};

/// Reads every regular file directly in `dir` (symlinks and the fortune
/// `.dat` index files skipped), in byte order of their names, concatenated.
/// The vocabulary is the printable ASCII bytes, newline and tab that occur,
/// in byte order, plus one "<other>" token for all remaining bytes (UTF-8
/// pieces, control characters) when any occur. The last `val_fraction` of
/// the text is held out. Throws Error(kInvalidArgument) naming the directory
/// when it is missing, holds fewer than `min_bytes` bytes of text, or
/// `val_fraction` is outside (0, 0.5].
TextCorpus load_text_corpus(const std::string& dir, double val_fraction, std::int64_t min_bytes);

/// Mean loss in nats per character of add-one-smoothed n-gram models
/// estimated on the training text, evaluated on the held-out text.
struct NgramBaselines {
  double unigram = 0.0;  // p(c) = (n_c + 1) / (N + V)
  double bigram = 0.0;   // p(c | a) = (n_ac + 1) / (n_a + V)
};
NgramBaselines ngram_baselines(const TextCorpus& corpus);

/// Training positions for one rank's batch: `count` target positions drawn
/// uniformly from [context, val_begin), keyed by (seed, step, rank) so every
/// rank draws its own batch and a resumed run draws the same ones.
std::vector<std::int64_t> sample_positions(const TextCorpus& corpus, std::int64_t context, std::uint64_t seed,
                                           std::int64_t step, int rank, std::int64_t count);

/// For each target position, its `context` preceding tokens (oldest first)
/// into `contexts` ([count, context]) and the target token into `targets`.
void gather_examples(const TextCorpus& corpus, const std::int64_t* positions, std::int64_t count, std::int64_t context,
                     std::int32_t* contexts, std::int32_t* targets);

}  // namespace switchyard::train
