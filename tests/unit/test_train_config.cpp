// The training configuration's validation (one-line errors naming the field)
// and the text corpus: which files are read, the vocabulary, the held-out
// split and the n-gram baselines, on a corpus small enough to derive by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "switchyard/runtime/error.hpp"
#include "switchyard/train/text_corpus.hpp"
#include "switchyard/train/train_config.hpp"

namespace {

namespace fs = std::filesystem;
using namespace switchyard;
using namespace switchyard::layers;
using namespace switchyard::formats;
using namespace switchyard::train;

const std::string kModel =
    R"("model": {"arch": "mixtral", "hidden": 8, "ffn": 8, "experts": 4, "top_k": 2, "layers": 1})";

std::string config_with(const std::string& extra) { return "{" + kModel + (extra.empty() ? "" : ", " + extra) + "}"; }

// Expects parse_train_config to throw an invalid-argument error whose message
// holds every needle.
void expect_config_error(const std::string& text, const std::vector<std::string>& needles) {
  try {
    parse_train_config(text, "cfg.json");
    ADD_FAILURE() << "no error for " << text;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

TEST(TrainConfig, DefaultsAndEveryRouterKind) {
  TrainConfig c = parse_train_config(config_with(""), "cfg.json");
  EXPECT_EQ(c.model.arch, Architecture::kMixtral);
  EXPECT_EQ(c.model.hidden_size, 8);
  EXPECT_EQ(c.optimizer.kind, OptimizerKind::kAdamW);
  EXPECT_EQ(c.optimizer.total_steps, c.steps);

  const std::string qwen2 = R"({"model": {"arch": "qwen2_moe", "hidden": 8, "ffn": 4, "experts": 4, "top_k": 2,
                               "layers": 2, "shared_ffn": 6}})";
  TrainConfig q = parse_train_config(qwen2, "q.json");
  EXPECT_EQ(q.model.arch, Architecture::kQwen2Moe);
  EXPECT_EQ(q.model.shared_intermediate_size, 6);
  EXPECT_TRUE(q.model.shared_expert_gated);
  EXPECT_TRUE(q.model.norm_topk_prob);

  const std::string ds = R"({"model": {"arch": "deepseek_v3", "hidden": 8, "ffn": 4, "experts": 8, "top_k": 2,
                            "layers": 2, "n_group": 2, "topk_group": 1}, "bias_update_speed": 0.001,
                            "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.5},
                            "schedule": {"warmup_steps": 3, "min_lr": 0.01}, "steps": 7})";
  TrainConfig d = parse_train_config(ds, "d.json");
  EXPECT_EQ(d.model.score, ScoreFunction::kSigmoid);
  EXPECT_TRUE(d.model.has_selection_bias);
  EXPECT_EQ(d.model.n_group, 2);
  EXPECT_EQ(d.model.shared_intermediate_size, 4);
  EXPECT_TRUE(d.model.is_moe_layer(0));
  EXPECT_EQ(d.optimizer.kind, OptimizerKind::kSgd);
  EXPECT_DOUBLE_EQ(d.optimizer.momentum, 0.5);
  EXPECT_EQ(d.optimizer.warmup_steps, 3);
  EXPECT_EQ(d.optimizer.total_steps, 7);

  // The later architectures: each size under its own config name.
  const auto model = [](const std::string& arch) {
    return parse_train_config(R"({"model": {"arch": ")" + arch +
                                  R"(", "hidden": 8, "ffn": 4, "experts": 4, "top_k": 2, "layers": 2}})",
                              arch + ".json")
        .model;
  };
  for (const std::string arch : {"olmoe", "granitemoe", "glm4_moe", "qwen3_5_moe_text", "llama4_text"}) {
    SCOPED_TRACE(arch);
    const ModelConfig m = model(arch);
    EXPECT_STREQ(architecture_name(m.arch), arch.c_str());
    EXPECT_EQ(m.expert_intermediate_size, 4);
    EXPECT_EQ(m.num_experts, 4);
    EXPECT_TRUE(m.is_moe_layer(0) && m.is_moe_layer(1));
  }
  EXPECT_TRUE(model("llama4_text").weight_scales_input);
  EXPECT_EQ(model("llama4_text").shared_intermediate_size, 4);
  EXPECT_TRUE(model("glm4_moe").has_selection_bias);
  EXPECT_TRUE(model("qwen3_5_moe_text").shared_expert_gated);
}

TEST(TrainConfig, RoutingSection) {
  const TrainConfig plain = parse_train_config(config_with(""), "cfg.json");
  EXPECT_EQ(plain.routing.max_nodes, 0);
  EXPECT_EQ(plain.routing.node_score_experts, 2);
  EXPECT_EQ(plain.routing.link_penalty, 0.0);
  const TrainConfig c = parse_train_config(
      config_with(R"("routing": {"max_nodes": 2, "node_score_experts": 1, "link_penalty": 0.5})"), "cfg.json");
  EXPECT_EQ(c.routing.max_nodes, 2);
  EXPECT_EQ(c.routing.node_score_experts, 1);
  EXPECT_EQ(c.routing.link_penalty, 0.5);
  expect_config_error(config_with(R"("routing": {"max_nodes": -1})"), {"cfg.json", "'routing.max_nodes'", "-1"});
  expect_config_error(config_with(R"("routing": {"node_score_experts": 0})"),
                      {"'routing.node_score_experts'", "at least 1"});
  expect_config_error(config_with(R"("routing": {"link_penalty": -0.5})"), {"'routing.link_penalty'", "-0.5"});
  expect_config_error(config_with(R"("routing": {"max_node": 1})"), {"'routing.max_node'", "not a known field"});
}

TEST(TrainConfig, ErrorsNameTheFileAndField) {
  expect_config_error("{not json", {"cfg.json", "not valid JSON"});
  expect_config_error("{}", {"cfg.json", "'model'", "required"});
  expect_config_error(R"({"model": {"arch": "mixtral", "ffn": 8, "experts": 4, "top_k": 2, "layers": 1}})",
                      {"cfg.json", "'model.hidden'", "required"});
  expect_config_error(config_with(R"("steps": 0)"), {"cfg.json", "'steps'", "at least 1", "0"});
  expect_config_error(config_with(R"("steps": "ten")"), {"'steps'", "integer", "\"ten\""});
  expect_config_error(config_with(R"("stpes": 10)"), {"'stpes'", "not a known field"});
  expect_config_error(config_with(R"("optimizer": {"type": "adam"})"), {"'optimizer.type'", "adam", "adamw or sgd"});
  expect_config_error(config_with(R"("optimizer": {"lr": -1})"), {"'optimizer.lr'", "-1"});
  expect_config_error(config_with(R"("optimizer": {"betas": [0.9]})"), {"'optimizer.betas'", "[0.9]"});
  expect_config_error(config_with(R"("optimizer": {"betas": [0.9, 1.5]})"), {"'optimizer.betas'", "[0, 1)"});
  expect_config_error(config_with(R"("schedule": {"min_lr": 1.0})"), {"'schedule.min_lr'", "optimizer.lr"});
  expect_config_error(config_with(R"("grad_clip": -1)"), {"'grad_clip'"});
  expect_config_error(config_with(R"("data": {"val_fraction": 0.9})"), {"'data.val_fraction'", "0.9"});
  expect_config_error(config_with(R"("data": {"dri": "x"})"), {"'data.dri'", "not a known field"});
  expect_config_error(config_with(R"("bias_update_speed": 0.01)"), {"'bias_update_speed'", "deepseek_v3"});
  expect_config_error(R"({"model": {"arch": "gpt2", "hidden": 8, "ffn": 8, "experts": 4, "top_k": 2, "layers": 1}})",
                      {"'model.arch'", "gpt2", "mixtral"});
  expect_config_error(R"({"model": {"hidden": 8, "ffn": 8, "experts": 2, "top_k": 3, "layers": 1}})",
                      {"'model.top_k'", "3"});
  expect_config_error(R"({"model": {"hidden": 8, "ffn": 8, "experts": 2, "top_k": 1, "layers": 1, "contxt": 4}})",
                      {"'model.contxt'", "not a known field"});
  expect_config_error(R"({"model": {"arch": "deepseek_v3", "hidden": 8, "ffn": 8, "experts": 6, "top_k": 1,
                          "layers": 1, "n_group": 4}})",
                      {"n_group"});
  EXPECT_THROW(load_train_config("/nonexistent/train.json"), Error);
}

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("sy_corpus_" + std::to_string(::getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path_ / name) << text; }
  std::string str() const { return path_.string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

TEST(TextCorpus, ReadsSortedTextFilesSkippingIndexesAndSymlinks) {
  TempDir dir;
  dir.write("b", "ba");
  dir.write("a", "abab");
  dir.write("a.dat", "\x01\x02 binary index");
  fs::create_symlink(dir.path() / "a", dir.path() / "a.u8");
  // Text "abab" + "ba" = "ababba"; a third held out: "ba", from position 4.
  TextCorpus c = load_text_corpus(dir.str(), 1.0 / 3.0, 1);
  ASSERT_EQ(c.files.size(), 2u);
  EXPECT_EQ(fs::path(c.files[0]).filename(), "a");
  EXPECT_EQ(c.vocab_size(), 2);
  EXPECT_EQ(c.token_names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(c.tokens, (std::vector<std::int32_t>{0, 1, 0, 1, 1, 0}));
  EXPECT_EQ(c.val_begin, 4);

  // Training text "abab": unigram p(a) = p(b) = (2 + 1) / (4 + 2) = 1/2, so
  // ln 2 per character. Bigrams ab ×2, ba ×1: held-out "b" after "b" has
  // p = (0 + 1) / (1 + 2) = 1/3, "a" after "b" has (1 + 1) / (1 + 2) = 2/3.
  const NgramBaselines b = ngram_baselines(c);
  EXPECT_NEAR(b.unigram, std::log(2.0), 1e-12);
  EXPECT_NEAR(b.bigram, (std::log(3.0) + std::log(1.5)) / 2.0, 1e-12);
}

TEST(TextCorpus, FoldsOtherBytesAndChecksSize) {
  TempDir dir;
  dir.write("t", "a\tb\n\xc3\xa9\x01");
  TextCorpus c = load_text_corpus(dir.str(), 0.5, 1);
  EXPECT_EQ(c.token_names, (std::vector<std::string>{"\\t", "\\n", "a", "b", "<other>"}));
  EXPECT_EQ(c.tokens[4], 4);
  EXPECT_EQ(c.tokens[5], 4);
  EXPECT_EQ(c.tokens[6], 4);
  try {
    load_text_corpus(dir.str(), 0.1, 1000);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.str()), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("1000"), std::string::npos);
  }
  EXPECT_THROW(load_text_corpus(dir.str() + "/missing", 0.1, 1), Error);
}

TEST(TextCorpus, BatchesAreKeyedBySeedStepAndRank) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 1000; ++i) text += static_cast<char>('a' + (i * 7) % 26);
  dir.write("t", text);
  TextCorpus c = load_text_corpus(dir.str(), 0.1, 1);
  const auto p = sample_positions(c, 8, 42, 3, 1, 64);
  EXPECT_EQ(p, sample_positions(c, 8, 42, 3, 1, 64));
  EXPECT_NE(p, sample_positions(c, 8, 42, 4, 1, 64));
  EXPECT_NE(p, sample_positions(c, 8, 42, 3, 0, 64));
  EXPECT_NE(p, sample_positions(c, 8, 43, 3, 1, 64));
  for (auto x : p) {
    EXPECT_GE(x, 8);
    EXPECT_LT(x, c.val_begin);  // never a held-out target
  }
  std::vector<std::int32_t> ctx(64 * 8), tgt(64);
  gather_examples(c, p.data(), 64, 8, ctx.data(), tgt.data());
  EXPECT_EQ(tgt[0], c.tokens[p[0]]);
  EXPECT_EQ(ctx[7], c.tokens[p[0] - 1]);
  EXPECT_EQ(ctx[0], c.tokens[p[0] - 8]);
}

}  // namespace
