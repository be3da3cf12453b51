#include "router_options.hpp"

#include <string>
#include <vector>

#include "cli_runner.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {

void add_router_options(CLI::App& sub, RouterOptions* o, bool training) {
  // Train overrides its configuration's fields; forward the checkpoint's router.
  const auto over = [&](const char* field, const char* otherwise) {
    return training ? "; overrides model." + std::string(field) : std::string(otherwise);
  };
  std::vector<std::string> routers = {"top-k", "top-p"};
  if (training) routers.push_back("noisy-top-k");
  sub.add_option("--router", o->router,
                 training ? "top-k (top_k experts per token), top-p (experts in score order until their probability "
                            "reaches --top-p, at most --max-k) or noisy-top-k (learned noise on the router logits in "
                            "training, with importance_loss_coef and load_loss_coef); overrides model.router"
                          : "top-k (the checkpoint's router, the default) or top-p (experts in score order until their "
                            "probability reaches --top-p, at most --max-k, by default the checkpoint's top_k; softmax "
                            "routers)")
      ->check(CLI::IsMember(routers));
  sub.add_option("--top-p", o->top_p,
                 "Probability mass a top-p token's experts must reach" + over("top_p", " (with --router top-p)"))
      ->check(CLI::Range(0.0, 1.0));
  sub.add_option("--max-k", o->max_k,
                 "The most experts a top-p token may use" + over("top_k", " (with --router top-p)"))
      ->check(CLI::PositiveNumber);
}

void check_max_k(std::int64_t max_k, std::int64_t num_experts) {
  check_arg(max_k <= num_experts,
            "--max-k " + std::to_string(max_k) + " exceeds the model's experts (" + std::to_string(num_experts) + ")");
}

void apply_router_options(const RouterOptions& o, layers::MoeConfig* moe) {
  const bool top_p = o.router == "top-p";
  check_arg(o.top_p < 0 || top_p, "--top-p needs --router top-p");
  check_arg(o.max_k < 0 || top_p, "--max-k needs --router top-p");
  if (!top_p) return;
  check_arg(o.top_p > 0.0, "--router top-p needs --top-p P in (0, 1]");
  if (o.max_k > 0) {
    check_max_k(o.max_k, moe->num_experts);
    moe->top_k = moe->router.top_k = o.max_k;
  }
  moe->router.top_p = static_cast<float>(o.top_p);
  with_flag("--router top-p", [&] { moe->validate(); });
}

}  // namespace switchyard::launch
