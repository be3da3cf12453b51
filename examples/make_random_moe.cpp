// Writes a random MoE checkpoint (config.json + safetensors) and an input
// x.npy, for trying `switchyard forward` without downloading a model.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <map>

#include "switchyard/formats/random_checkpoint.hpp"
#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/npy.hpp"

using namespace switchyard;

int main(int argc, char** argv) {
  CLI::App app{"Write a random MoE checkpoint and input for switchyard"};
  static const std::map<std::string, formats::Architecture> archs = {
      {"mixtral", formats::Architecture::kMixtral},    {"qwen2_moe", formats::Architecture::kQwen2Moe},
      {"qwen3_moe", formats::Architecture::kQwen3Moe}, {"deepseek_v3", formats::Architecture::kDeepseekV3},
      {"olmoe", formats::Architecture::kOlmoe},        {"granitemoe", formats::Architecture::kGraniteMoe},
      {"glm4_moe", formats::Architecture::kGlm4Moe},   {"qwen3_5_moe_text", formats::Architecture::kQwen3_5Moe},
      {"llama4_text", formats::Architecture::kLlama4}};
  static const std::map<std::string, formats::DType> dtypes = {
      {"f32", formats::DType::kF32}, {"bf16", formats::DType::kBF16}, {"f16", formats::DType::kF16}};
  formats::RandomMoeSpec spec;
  std::string out, arch = "mixtral", layout = "per-expert", dtype = "f32";
  std::int64_t tokens = 64;
  app.add_option("--out", out, "Output directory")->required();
  app.add_option("--arch", arch, "the config's model_type")->check(CLI::IsMember(archs));
  app.add_option("--layout", layout, "per-expert | fused")->check(CLI::IsMember({"per-expert", "fused"}));
  app.add_option("--dtype", dtype, "f32 | bf16 | f16")->check(CLI::IsMember(dtypes));
  app.add_option("--hidden", spec.hidden, "hidden_size");
  app.add_option("--ffn", spec.inter, "expert intermediate size");
  app.add_option("--experts", spec.experts, "number of routed experts");
  app.add_option("--top-k", spec.top_k, "experts per token");
  app.add_option("--layers", spec.layers, "decoder layers");
  app.add_option("--shards", spec.shards, "number of safetensors shards");
  app.add_option("--tokens", tokens, "rows of the input x.npy");
  app.add_option("--seed", spec.seed, "random seed");
  CLI11_PARSE(app, argc, argv);
  spec.arch = archs.at(arch);
  spec.fused = layout == "fused";
  spec.dtype = dtypes.at(dtype);
  try {
    formats::write_random_moe_checkpoint(spec, out);
    auto x = formats::random_matrix(tokens, spec.hidden, spec.seed + 7);
    write_npy((std::filesystem::path(out) / "x.npy").string(), x.data(), tokens, spec.hidden);
  } catch (const Error& e) {
    std::fprintf(stderr, "make_random_moe: error: %s\n", e.what());
    return 1;
  }
  std::printf("wrote %s (%s, %s layout, %lld experts) and %s/x.npy [%lld, %lld]\n", out.c_str(), arch.c_str(),
              layout.c_str(), static_cast<long long>(spec.experts), out.c_str(), static_cast<long long>(tokens),
              static_cast<long long>(spec.hidden));
  return 0;
}
