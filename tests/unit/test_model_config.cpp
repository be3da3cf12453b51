// config.json parsing: each architecture's transformers defaults, explicit
// fields, and bad configs refused with an error naming the field.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../support/config_json.hpp"
#include "switchyard/formats/model_config.hpp"
#include "switchyard/runtime/error.hpp"

namespace {

using switchyard::Error;
using switchyard::ErrorCode;
using switchyard::test::config_json;
using namespace switchyard::formats;

// ---------------------------------------------------------------------------
// ModelConfig parsing: transformers defaults, explicit fields and errors.

TEST(ModelConfig, MixtralDefaults) {
  const ModelConfig c = parse_model_config(config_json("mixtral"), "test");
  EXPECT_EQ(c.arch, Architecture::kMixtral);
  EXPECT_STREQ(architecture_name(c.arch), "mixtral");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.expert_intermediate_size, 14336);
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.top_k, 2);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.hidden_act, "silu");
  EXPECT_EQ(c.activation, switchyard::kernels::Activation::kSilu);
  EXPECT_EQ(c.score, ScoreFunction::kSoftmax);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_FALSE(c.has_selection_bias);
  EXPECT_EQ(c.shared_intermediate_size, 0);
  for (std::int64_t l = 0; l < 32; ++l) EXPECT_TRUE(c.is_moe_layer(l)) << l;
}

TEST(ModelConfig, Qwen2MoeDefaults) {
  const ModelConfig c = parse_model_config(config_json("qwen2_moe"), "test");
  EXPECT_EQ(c.arch, Architecture::kQwen2Moe);
  EXPECT_STREQ(architecture_name(c.arch), "qwen2_moe");
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.expert_intermediate_size, 1408);
  EXPECT_EQ(c.shared_intermediate_size, 5632);
  EXPECT_TRUE(c.shared_expert_gated);
  EXPECT_EQ(c.num_experts, 60);
  EXPECT_EQ(c.top_k, 4);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.decoder_sparse_step, 1);
  EXPECT_TRUE(c.mlp_only_layers.empty());
  EXPECT_EQ(c.num_layers, 24);
  EXPECT_EQ(c.score, ScoreFunction::kSoftmax);
  EXPECT_FALSE(c.has_selection_bias);
  for (std::int64_t l = 0; l < 24; ++l) EXPECT_TRUE(c.is_moe_layer(l)) << l;
}

TEST(ModelConfig, Qwen3MoeDefaults) {
  const ModelConfig c = parse_model_config(config_json("qwen3_moe"), "test");
  EXPECT_EQ(c.arch, Architecture::kQwen3Moe);
  EXPECT_STREQ(architecture_name(c.arch), "qwen3_moe");
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.expert_intermediate_size, 768);
  EXPECT_EQ(c.num_experts, 128);
  EXPECT_EQ(c.top_k, 8);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.shared_intermediate_size, 0);
  EXPECT_FALSE(c.shared_expert_gated);
  EXPECT_EQ(c.num_layers, 24);
  EXPECT_EQ(c.decoder_sparse_step, 1);
  EXPECT_TRUE(c.mlp_only_layers.empty());
  for (std::int64_t l = 0; l < 24; ++l) EXPECT_TRUE(c.is_moe_layer(l)) << l;
}

TEST(ModelConfig, DeepseekV3Defaults) {
  const ModelConfig c = parse_model_config(config_json("deepseek_v3"), "test");
  EXPECT_EQ(c.arch, Architecture::kDeepseekV3);
  EXPECT_STREQ(architecture_name(c.arch), "deepseek_v3");
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.expert_intermediate_size, 2048);
  EXPECT_EQ(c.num_experts, 256);
  EXPECT_EQ(c.shared_intermediate_size, 2048);  // n_shared_experts (1) * moe_intermediate_size
  EXPECT_FALSE(c.shared_expert_gated);
  EXPECT_EQ(c.top_k, 8);
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.first_k_dense_replace, 3);
  EXPECT_EQ(c.num_layers, 61);
  EXPECT_EQ(c.score, ScoreFunction::kSigmoid);
  EXPECT_TRUE(c.has_selection_bias);
  for (std::int64_t l = 0; l < 61; ++l) EXPECT_EQ(c.is_moe_layer(l), l >= 3) << l;
}

TEST(ModelConfig, OlmoeDefaults) {  // OlmoeConfig
  const ModelConfig c = parse_model_config(config_json("olmoe"), "test");
  EXPECT_EQ(c.arch, Architecture::kOlmoe);
  EXPECT_STREQ(architecture_name(c.arch), "olmoe");
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.expert_intermediate_size, 2048);
  EXPECT_EQ(c.num_experts, 64);
  EXPECT_EQ(c.top_k, 8);
  EXPECT_EQ(c.num_layers, 16);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.score, ScoreFunction::kSoftmax);
  EXPECT_EQ(c.shared_intermediate_size, 0);
  for (std::int64_t l = 0; l < 16; ++l) EXPECT_TRUE(c.is_moe_layer(l)) << l;
  // OlmoeConfig.attribute_map: num_local_experts is another name of num_experts.
  EXPECT_EQ(parse_model_config(config_json("olmoe", "\"num_local_experts\": 12"), "test").num_experts, 12);
}

TEST(ModelConfig, GraniteMoeDefaults) {  // GraniteMoeConfig
  const ModelConfig c = parse_model_config(config_json("granitemoe"), "test");
  EXPECT_EQ(c.arch, Architecture::kGraniteMoe);
  EXPECT_STREQ(architecture_name(c.arch), "granitemoe");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.expert_intermediate_size, 11008);
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.top_k, 2);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_TRUE(c.norm_topk_prob);  // softmax over the top-k logits
  EXPECT_EQ(c.shared_intermediate_size, 0);
  for (std::int64_t l = 0; l < 32; ++l) EXPECT_TRUE(c.is_moe_layer(l)) << l;
}

TEST(ModelConfig, Glm4MoeDefaults) {  // Glm4MoeConfig: DeepSeek-V3's router, GLM-4.5's defaults
  const ModelConfig c = parse_model_config(config_json("glm4_moe"), "test");
  EXPECT_EQ(c.arch, Architecture::kGlm4Moe);
  EXPECT_STREQ(architecture_name(c.arch), "glm4_moe");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.expert_intermediate_size, 1408);
  EXPECT_EQ(c.num_experts, 128);
  EXPECT_EQ(c.top_k, 8);
  EXPECT_EQ(c.num_layers, 46);
  EXPECT_EQ(c.n_group, 1);
  EXPECT_EQ(c.topk_group, 1);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 1.0);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.first_k_dense_replace, 1);
  EXPECT_EQ(c.shared_intermediate_size, 1408);
  EXPECT_FALSE(c.shared_expert_gated);
  EXPECT_EQ(c.score, ScoreFunction::kSigmoid);
  EXPECT_TRUE(c.has_selection_bias);
  EXPECT_TRUE(c.deepseek_routing);
  for (std::int64_t l = 0; l < 46; ++l) EXPECT_EQ(c.is_moe_layer(l), l >= 1) << l;
}

TEST(ModelConfig, Qwen3_5MoeDefaultsTextAndMultimodal) {  // Qwen3_5MoeTextConfig
  for (const std::string& json :
       {config_json("qwen3_5_moe_text"), config_json("qwen3_5_moe"), config_json("qwen3_5_moe", "\"text_config\": {}"),
        config_json("qwen3_5_moe", "\"text_config\": {\"model_type\": \"qwen3_5_moe_text\"}")}) {
    SCOPED_TRACE(json);
    const ModelConfig c = parse_model_config(json, "test");
    EXPECT_EQ(c.arch, Architecture::kQwen3_5Moe);
    EXPECT_STREQ(architecture_name(c.arch), "qwen3_5_moe_text");
    EXPECT_EQ(c.from_text_config, json.find("\"qwen3_5_moe\"") != std::string::npos);
    EXPECT_EQ(c.hidden_size, 2048);
    EXPECT_EQ(c.expert_intermediate_size, 512);
    EXPECT_EQ(c.shared_intermediate_size, 512);
    EXPECT_TRUE(c.shared_expert_gated);
    EXPECT_EQ(c.num_experts, 256);
    EXPECT_EQ(c.top_k, 8);
    EXPECT_EQ(c.num_layers, 40);
    EXPECT_TRUE(c.norm_topk_prob);  // Qwen3_5MoeTopKRouter always renormalises
    for (std::int64_t l = 0; l < 40; ++l) EXPECT_TRUE(c.is_moe_layer(l)) << l;
  }
  // The multimodal config's decoder fields come from text_config, not the top level.
  const ModelConfig m =
      parse_model_config(config_json("qwen3_5_moe",
                                     "\"hidden_size\": 7, \"text_config\": {\"hidden_size\": 64, \"num_experts\": 16, "
                                     "\"num_experts_per_tok\": 4, \"norm_topk_prob\": false}"),
                         "test");
  EXPECT_EQ(m.hidden_size, 64);
  EXPECT_EQ(m.num_experts, 16);
  EXPECT_EQ(m.top_k, 4);
  EXPECT_TRUE(m.norm_topk_prob);
}

TEST(ModelConfig, Llama4DefaultsAndMoeLayers) {  // Llama4TextConfig
  for (const std::string& json : {config_json("llama4_text"), config_json("llama4", "\"text_config\": {}")}) {
    SCOPED_TRACE(json);
    const ModelConfig c = parse_model_config(json, "test");
    EXPECT_EQ(c.arch, Architecture::kLlama4);
    EXPECT_STREQ(architecture_name(c.arch), "llama4_text");
    EXPECT_EQ(c.hidden_size, 5120);
    EXPECT_EQ(c.expert_intermediate_size, 8192);
    EXPECT_EQ(c.shared_intermediate_size, 8192);  // Llama4TextMLP(config): intermediate_size
    EXPECT_FALSE(c.shared_expert_gated);
    EXPECT_EQ(c.num_experts, 16);
    EXPECT_EQ(c.top_k, 1);
    EXPECT_EQ(c.num_layers, 48);
    EXPECT_EQ(c.score, ScoreFunction::kSigmoid);
    EXPECT_FALSE(c.norm_topk_prob);
    EXPECT_TRUE(c.weight_scales_input);
    EXPECT_TRUE(c.select_on_logits);
    for (std::int64_t l = 0; l < 48; ++l) EXPECT_TRUE(c.is_moe_layer(l)) << l;  // interleave_moe_layer_step 1
  }
  // moe_layers = range(step - 1, num_hidden_layers, step) when absent.
  const ModelConfig step2 = parse_model_config(
      config_json("llama4_text", "\"num_hidden_layers\": 6, \"interleave_moe_layer_step\": 2"), "test");
  EXPECT_EQ(step2.moe_layers, (std::vector<std::int64_t>{1, 3, 5}));
  for (std::int64_t l = 0; l < 6; ++l) EXPECT_EQ(step2.is_moe_layer(l), l % 2 == 1) << l;
  const ModelConfig listed = parse_model_config(
      config_json("llama4_text", "\"num_hidden_layers\": 6, \"interleave_moe_layer_step\": 2, \"moe_layers\": [0, 4]"),
      "test");
  for (std::int64_t l = 0; l < 6; ++l) EXPECT_EQ(listed.is_moe_layer(l), l == 0 || l == 4) << l;
  // Given moe_layers, the step is not read (Llama4TextConfig.__post_init__).
  const ModelConfig unread =
      parse_model_config(config_json("llama4_text", "\"moe_layers\": [2], \"interleave_moe_layer_step\": 0"), "test");
  EXPECT_EQ(unread.moe_layers, (std::vector<std::int64_t>{2}));
  const ModelConfig none = parse_model_config(config_json("llama4_text", "\"moe_layers\": []"), "test");
  for (std::int64_t l = 0; l < 48; ++l) EXPECT_FALSE(none.is_moe_layer(l)) << l;
}

TEST(ModelConfig, ExplicitFields) {
  const ModelConfig m =
      parse_model_config(config_json("mixtral",
                                     "\"hidden_size\": 64, \"intermediate_size\": 96, \"num_local_experts\": 16, "
                                     "\"num_experts_per_tok\": 3, \"num_hidden_layers\": 5, \"hidden_act\": \"gelu\""),
                         "test");
  EXPECT_EQ(m.hidden_size, 64);
  EXPECT_EQ(m.expert_intermediate_size, 96);
  EXPECT_EQ(m.num_experts, 16);
  EXPECT_EQ(m.top_k, 3);
  EXPECT_EQ(m.num_layers, 5);
  EXPECT_EQ(m.hidden_act, "gelu");
  EXPECT_EQ(m.activation, switchyard::kernels::Activation::kGelu);
  for (std::int64_t l = 0; l < 5; ++l) EXPECT_TRUE(m.is_moe_layer(l));

  // qwen: MoE iff layer not in mlp_only_layers and (layer + 1) % step == 0.
  // step 2 -> 1, 3, 5, 7; minus mlp_only {0, 3} -> 1, 5, 7.
  const ModelConfig q = parse_model_config(
      config_json("qwen2_moe",
                  "\"num_hidden_layers\": 8, \"decoder_sparse_step\": 2, \"mlp_only_layers\": [0, 3], "
                  "\"shared_expert_intermediate_size\": 40, \"moe_intermediate_size\": 24, "
                  "\"hidden_act\": \"gelu_pytorch_tanh\""),
      "test");
  EXPECT_EQ(q.decoder_sparse_step, 2);
  EXPECT_EQ(q.mlp_only_layers, (std::vector<std::int64_t>{0, 3}));
  EXPECT_EQ(q.shared_intermediate_size, 40);
  EXPECT_EQ(q.expert_intermediate_size, 24);
  EXPECT_EQ(q.activation, switchyard::kernels::Activation::kGeluTanh);
  const std::vector<bool> want_q = {false, true, false, false, false, true, false, true};
  for (std::int64_t l = 0; l < 8; ++l) EXPECT_EQ(q.is_moe_layer(l), want_q[l]) << l;

  // qwen3 with mlp_only_layers only: every layer but 2.
  const ModelConfig q3 =
      parse_model_config(config_json("qwen3_moe", "\"num_hidden_layers\": 4, \"mlp_only_layers\": [2]"), "test");
  for (std::int64_t l = 0; l < 4; ++l) EXPECT_EQ(q3.is_moe_layer(l), l != 2) << l;

  // qwen with step 3 and 6 layers: (l+1) % 3 == 0 -> 2, 5.
  const ModelConfig q3s =
      parse_model_config(config_json("qwen3_moe", "\"num_hidden_layers\": 6, \"decoder_sparse_step\": 3"), "test");
  for (std::int64_t l = 0; l < 6; ++l) EXPECT_EQ(q3s.is_moe_layer(l), l == 2 || l == 5) << l;

  const ModelConfig d = parse_model_config(
      config_json("deepseek_v3",
                  "\"n_routed_experts\": 16, \"n_group\": 4, \"topk_group\": 2, "
                  "\"num_experts_per_tok\": 4, \"first_k_dense_replace\": 1, \"num_hidden_layers\": 3, "
                  "\"moe_intermediate_size\": 32, \"n_shared_experts\": 2, "
                  "\"routed_scaling_factor\": 1.5, \"norm_topk_prob\": false"),
      "test");
  EXPECT_EQ(d.num_experts, 16);
  EXPECT_EQ(d.n_group, 4);
  EXPECT_EQ(d.topk_group, 2);
  EXPECT_EQ(d.top_k, 4);
  EXPECT_EQ(d.shared_intermediate_size, 64);
  EXPECT_DOUBLE_EQ(d.routed_scaling_factor, 1.5);
  EXPECT_FALSE(d.norm_topk_prob);
  EXPECT_FALSE(d.is_moe_layer(0));
  EXPECT_TRUE(d.is_moe_layer(1));
  EXPECT_TRUE(d.is_moe_layer(2));

  // transformers treats null like an absent field.
  const ModelConfig n = parse_model_config(config_json("mixtral", "\"num_local_experts\": null"), "test");
  EXPECT_EQ(n.num_experts, 8);
}

// Expects parse_model_config to throw Error(kInvalidArgument) whose message
// contains every one of `needles`.
void expect_config_error(const std::string& json, const std::vector<std::string>& needles) {
  try {
    parse_model_config(json, "cfg-source.json");
    ADD_FAILURE() << "accepted: " << json;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << json;
    const std::string what = e.what();
    EXPECT_NE(what.find("cfg-source.json"), std::string::npos) << what;
    for (const std::string& n : needles) EXPECT_NE(what.find(n), std::string::npos) << "'" << n << "' not in: " << what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw something other than switchyard::Error for " << json << ": " << e.what();
  }
}

TEST(ModelConfig, BadConfigsThrowNamingTheField) {
  expect_config_error("{\"model_type\": \"mixtral\",", {});
  expect_config_error("not json at all", {});
  expect_config_error("", {});
  expect_config_error("[1, 2]", {});
  expect_config_error("{}", {"model_type"});
  expect_config_error("{\"hidden_size\": 8}", {"model_type"});
  expect_config_error(config_json("llama"), {"model_type", "llama"});
  expect_config_error("{\"model_type\": 3}", {"model_type"});
  expect_config_error(config_json("mixtral", "\"num_experts_per_tok\": \"2\""), {"num_experts_per_tok"});
  expect_config_error(config_json("mixtral", "\"hidden_size\": 1.5"), {"hidden_size"});
  expect_config_error(config_json("mixtral", "\"hidden_act\": 7"), {"hidden_act"});
  expect_config_error(config_json("mixtral", "\"hidden_act\": \"swiglu_unknown\""), {"hidden_act"});
  expect_config_error(config_json("qwen2_moe", "\"norm_topk_prob\": 1"), {"norm_topk_prob"});
  expect_config_error(config_json("qwen2_moe", "\"mlp_only_layers\": [1.5]"), {"mlp_only_layers"});
  expect_config_error(config_json("qwen2_moe", "\"mlp_only_layers\": 3"), {"mlp_only_layers"});
  expect_config_error(config_json("qwen3_moe", "\"decoder_sparse_step\": 0"), {"decoder_sparse_step"});
  expect_config_error(config_json("deepseek_v3", "\"routed_scaling_factor\": \"2.5\""), {"routed_scaling_factor"});
  expect_config_error(config_json("deepseek_v3", "\"n_group\": 3"), {"n_group"});
  expect_config_error(config_json("deepseek_v3", "\"topk_group\": 9"), {"topk_group"});
  expect_config_error(config_json("mixtral", "\"num_experts_per_tok\": 9"), {"num_experts_per_tok"});
  expect_config_error(config_json("mixtral", "\"num_experts_per_tok\": 0"), {"num_experts_per_tok"});
  expect_config_error(config_json("mixtral", "\"hidden_size\": 0"), {"hidden_size"});
  // The architectures after the first four.
  expect_config_error(config_json("olmoe", "\"num_experts\": \"64\""), {"num_experts"});
  expect_config_error(config_json("olmoe", "\"intermediate_size\": 0"), {"intermediate size"});
  expect_config_error(config_json("granitemoe", "\"num_local_experts\": 2.0"), {"num_local_experts"});
  expect_config_error(config_json("granitemoe", "\"num_experts_per_tok\": 9"), {"num_experts_per_tok"});
  expect_config_error(config_json("glm4_moe", "\"n_group\": 3"), {"n_group", "n_routed_experts 128"});
  expect_config_error(config_json("glm4_moe", "\"norm_topk_prob\": \"yes\""), {"norm_topk_prob"});
  expect_config_error(config_json("qwen3_5_moe_text", "\"shared_expert_intermediate_size\": -1"), {"shared"});
  expect_config_error(config_json("qwen3_5_moe", "\"text_config\": 5"), {"text_config"});
  expect_config_error(config_json("qwen3_5_moe", "\"text_config\": {\"model_type\": \"mixtral\"}"),
                      {"text_config", "model_type", "qwen3_5_moe_text"});
  expect_config_error(config_json("qwen3_5_moe", "\"text_config\": {\"num_experts\": [1]}"),
                      {"text_config", "num_experts"});
  expect_config_error(config_json("llama4_text", "\"interleave_moe_layer_step\": 0"), {"interleave_moe_layer_step"});
  expect_config_error(config_json("llama4_text", "\"moe_layers\": [\"1\"]"), {"moe_layers"});
  expect_config_error(config_json("llama4", "\"text_config\": {\"model_type\": \"llama4\"}"),
                      {"text_config", "llama4_text"});
}

}  // namespace
