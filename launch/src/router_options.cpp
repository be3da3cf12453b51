#include "router_options.hpp"

#include "cli_runner.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::launch {

void add_router_options(CLI::App& sub, RouterOptions* o, bool training) {
  if (training) {
    sub.add_option("--router", o->router,
                   "top-k (top_k experts per token), top-p (experts in score order until their probability reaches "
                   "--top-p, at most --max-k) or noisy-top-k (learned noise on the router logits in training, with "
                   "importance_loss_coef and load_loss_coef); overrides model.router")
        ->check(CLI::IsMember({"top-k", "top-p", "noisy-top-k"}));
    sub.add_option("--top-p", o->top_p, "Probability mass a top-p token's experts must reach; overrides model.top_p")
        ->check(CLI::Range(0.0, 1.0));
    sub.add_option("--max-k", o->max_k, "The most experts a top-p token may use; overrides model.top_k")
        ->check(CLI::PositiveNumber);
    return;
  }
  sub.add_option("--router", o->router,
                 "top-k (the checkpoint's router, the default) or top-p (experts in score order until their "
                 "probability reaches --top-p, at most --max-k, by default the checkpoint's top_k; softmax routers)")
      ->check(CLI::IsMember({"top-k", "top-p"}));
  sub.add_option("--top-p", o->top_p, "Probability mass a top-p token's experts must reach (with --router top-p)")
      ->check(CLI::Range(0.0, 1.0));
  sub.add_option("--max-k", o->max_k, "The most experts a top-p token may use (with --router top-p)")
      ->check(CLI::PositiveNumber);
}

void apply_router_options(const RouterOptions& o, layers::MoeConfig* moe) {
  const bool top_p = o.router == "top-p";
  check_arg(o.top_p < 0 || top_p, "--top-p needs --router top-p");
  check_arg(o.max_k < 0 || top_p, "--max-k needs --router top-p");
  if (!top_p) return;
  check_arg(o.top_p > 0.0, "--router top-p needs --top-p P in (0, 1]");
  if (o.max_k > 0) {
    check_arg(o.max_k <= moe->num_experts, "--max-k " + std::to_string(o.max_k) + " exceeds the model's experts (" +
                                               std::to_string(moe->num_experts) + ")");
    moe->top_k = moe->router.top_k = o.max_k;
  }
  moe->router.top_p = static_cast<float>(o.top_p);
  with_flag("--router top-p", [&] { moe->validate(); });
}

}  // namespace switchyard::launch
