// json_index: parses a DeepSeek-V3-size `model.safetensors.index.json`
// (about 90k tensor names over 163 shards, generated here) into a name ->
// shard map with nlohmann-json (what formats::Checkpoint uses) and with
// Boost.JSON, and prints the median and spread of each (docs/benchmarks.md,
// "JSON libraries").
#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

// The layout of DeepSeek-V3's index: 61 layers, 256 routed experts with three
// projections each (plus their FP8 scales), attention and norms.
std::string make_index() {
  std::string s = "{\"metadata\": {\"total_size\": 688586727753}, \"weight_map\": {";
  int n = 0;
  auto add = [&](const std::string& name) {
    s += (n ? ",\n    \"" : "\n    \"") + name + "\": \"model-" + std::to_string(n % 163 + 1) +
         "-of-000163.safetensors\"";
    ++n;
  };
  for (int l = 0; l < 61; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* t :
         {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_a_proj.weight",
          "self_attn.q_b_proj.weight", "self_attn.kv_a_proj_with_mqa.weight", "self_attn.kv_b_proj.weight",
          "self_attn.o_proj.weight", "mlp.gate.weight", "mlp.gate.e_score_correction_bias"})
      add(p + t);
    for (int e = 0; e < 256; ++e)
      for (const char* w : {"gate_proj", "up_proj", "down_proj"}) {
        add(p + "mlp.experts." + std::to_string(e) + "." + w + ".weight");
        add(p + "mlp.experts." + std::to_string(e) + "." + w + ".weight_scale_inv");
      }
  }
  s += "\n  }\n}\n";
  std::fprintf(stderr, "index: %d tensors, %zu bytes\n", n, s.size());
  return s;
}

std::map<std::string, std::string> with_nlohmann(const std::string& text) {
  std::map<std::string, std::string> out;
  auto j = nlohmann::json::parse(text);
  for (auto& [name, file] : j["weight_map"].items()) out[name] = file.get<std::string>();
  return out;
}

std::map<std::string, std::string> with_boost(const std::string& text) {
  std::map<std::string, std::string> out;
  const boost::json::value v = boost::json::parse(text);
  for (const auto& kv : v.as_object().at("weight_map").as_object())
    out[std::string(kv.key())] = std::string(kv.value().as_string());
  return out;
}

template <typename F>
void time_it(const char* name, F&& f, const std::string& text, std::size_t expect) {
  std::vector<double> ms;
  for (int i = 0; i < 9; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto m = f(text);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (m.size() != expect) std::printf("%s: wrong size %zu\n", name, m.size());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("{\"parser\": \"%s\", \"median_ms\": %.2f, \"min_ms\": %.2f, \"max_ms\": %.2f}\n", name, ms[4], ms[0],
              ms[8]);
}

}  // namespace

int main() {
  const std::string text = make_index();
  const std::size_t n = with_nlohmann(text).size();
  time_it("nlohmann-json", with_nlohmann, text, n);
  time_it("boost-json", with_boost, text, n);
}
