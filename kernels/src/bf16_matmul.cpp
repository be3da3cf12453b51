#include "switchyard/kernels/bf16_matmul.hpp"

#include <algorithm>
#include <dnnl.hpp>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "dnnl_support.hpp"
#include "switchyard/kernels/number_conversion.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::kernels {
namespace {

using dt = dnnl::memory::data_type;

// Training routes differently every step, so row counts keep changing: past
// this many the cache starts over (creation is ~0.1-0.3 ms).
constexpr std::size_t kMaxCachedPrimitives = 512;

struct Matmul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

// One matmul primitive per row count, built on first use, each with a user
// scratchpad (detail::user_scratchpad_attr says why).
class PrimitiveCache {
 public:
  std::shared_ptr<Matmul> get(std::int64_t rows, const std::function<dnnl::matmul::desc()>& describe,
                              const dnnl::post_ops& ops = {}) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(rows);
    if (it == cache_.end()) {
      if (cache_.size() >= kMaxCachedPrimitives) cache_.clear();
      dnnl::matmul::primitive_desc pd(describe(), detail::user_scratchpad_attr(ops), detail::cpu_engine());
      it = cache_.emplace(rows, std::make_shared<Matmul>(Matmul{pd, dnnl::matmul(pd)})).first;
    }
    return it->second;
  }

 private:
  std::mutex mu_;  // primitives themselves run concurrently
  std::map<std::int64_t, std::shared_ptr<Matmul>> cache_;
};

void execute(const Matmul& m, const dnnl::memory::desc& src_md, const void* src, const dnnl::memory::desc& w_md,
             const void* w, const dnnl::memory::desc& dst_md, float* dst) {
  auto& eng = detail::cpu_engine();
  dnnl::memory src_mem(src_md, eng, const_cast<void*>(src)), w_mem(w_md, eng, const_cast<void*>(w));
  dnnl::memory dst_mem(dst_md, eng, dst);
  dnnl::stream stream(eng);
  m.prim.execute(stream, {{DNNL_ARG_SRC, src_mem},
                          {DNNL_ARG_WEIGHTS, w_mem},
                          {DNNL_ARG_DST, dst_mem},
                          {DNNL_ARG_SCRATCHPAD, detail::thread_scratchpad(m.pd, eng)}});
  stream.wait();
}

[[noreturn]] void rethrow(const dnnl::error& e, const char* what) {
  throw Error(ErrorCode::kDnnl, std::string(what) + " failed: " + e.what() + " (status " +
                                    std::to_string(static_cast<int>(e.status)) + ")");
}

// The type bf16 operands are computed in (detail::bf16_matmul_native says why).
dt operand_type() { return detail::bf16_matmul_native() ? dt::bf16 : dt::f32; }

// Operand `x` of `n` values as operand_type() wants it: in place, or widened
// into this thread's buffer number `slot`.
const void* operand(const std::uint16_t* x, std::int64_t n, int slot) {
  if (operand_type() == dt::bf16) return x;
  thread_local std::vector<float> buffers[2];
  return detail::widen_bf16(x, n, buffers[slot]);
}

}  // namespace

struct Bf16Linear::Impl {
  const std::uint16_t* w;
  dnnl::memory::dims w_strides;
  PrimitiveCache cache;
};

Bf16Linear::Bf16Linear(const std::uint16_t* w, std::int64_t out_features, std::int64_t in_features, WeightLayout layout)
    : impl_(std::make_unique<Impl>()), out_(out_features), in_(in_features) {
  impl_->w = w;
  // NOTE: the K x N operand viewed in place, as Linear does. Plain (not
  // prepacked) weights let one bf16 copy serve the forward (x · Wᵀ) and the
  // backward (dy · W) views; oneDNN repacks them per call, which costs ~5%
  // at 2048 rows against prepacked weights (docs/benchmarks.md), more at a
  // few rows, where the weight refresh dominates anyway.
  impl_->w_strides = layout == WeightLayout::kOutIn ? dnnl::memory::dims{1, in_} : dnnl::memory::dims{out_, 1};
}

Bf16Linear::~Bf16Linear() = default;
Bf16Linear::Bf16Linear(Bf16Linear&&) noexcept = default;
Bf16Linear& Bf16Linear::operator=(Bf16Linear&&) noexcept = default;

void Bf16Linear::run(const std::uint16_t* x, std::int64_t rows, float* y) const {
  if (rows == 0) return;
  try {
    // NOTE: dense source and destination on purpose: a strided destination
    // moves some row counts from the brgemm kernel to a gemm kernel, and two
    // kernels may round the same row differently.
    const dt op = operand_type();
    const dnnl::memory::desc w_md({in_, out_}, op, impl_->w_strides);
    const void* w = operand(impl_->w, in_ * out_, 1);
    auto block = [&](const std::uint16_t* xb, std::int64_t n, float* yb) {
      const dnnl::memory::desc src_md({n, in_}, op, {in_, 1}), dst_md({n, out_}, dt::f32, {out_, 1});
      const auto m = impl_->cache.get(n, [&] { return dnnl::matmul::desc(src_md, w_md, dst_md); });
      execute(*m, src_md, operand(xb, n * in_, 0), w_md, w, dst_md, yb);
    };
    detail::run_in_row_blocks(rows, x, sizeof(std::uint16_t) * in_, y, sizeof(float) * out_, nullptr, 0,
                              [&](const void* xb, std::int64_t n, void* yb, const float*) {
                                block(static_cast<const std::uint16_t*>(xb), n, static_cast<float*>(yb));
                              });
  } catch (const dnnl::error& e) {
    rethrow(e, "oneDNN bf16 matmul");
  }
}

struct Bf16WeightGradient::Impl {
  PrimitiveCache cache;
};

Bf16WeightGradient::Bf16WeightGradient(std::int64_t out_features, std::int64_t in_features)
    : impl_(std::make_unique<Impl>()), out_(out_features), in_(in_features) {}

Bf16WeightGradient::~Bf16WeightGradient() = default;
Bf16WeightGradient::Bf16WeightGradient(Bf16WeightGradient&&) noexcept = default;
Bf16WeightGradient& Bf16WeightGradient::operator=(Bf16WeightGradient&&) noexcept = default;

void Bf16WeightGradient::run(const std::uint16_t* dy, const std::uint16_t* x, std::int64_t rows, float* grad) const {
  if (rows == 0) return;
  try {
    // dyᵀ read in place ([out, rows] with strides {1, out}); the sum post-op
    // accumulates into grad in float32.
    const dt op = operand_type();
    const dnnl::memory::desc dy_t_md({out_, rows}, op, {1, out_}), x_md({rows, in_}, op, {in_, 1});
    const dnnl::memory::desc grad_md({out_, in_}, dt::f32, {in_, 1});
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    const auto m = impl_->cache.get(
        rows, [&] { return dnnl::matmul::desc(dy_t_md, x_md, grad_md); }, ops);
    execute(*m, dy_t_md, operand(dy, rows * out_, 0), x_md, operand(x, rows * in_, 1), grad_md, grad);
  } catch (const dnnl::error& e) {
    rethrow(e, "oneDNN bf16 weight-gradient matmul");
  }
}

void convert_rows_to_bf16(const float* x, std::int64_t rows, std::int64_t cols, std::int64_t ld, std::uint16_t* out) {
  for (std::int64_t r = 0; r < rows; ++r) convert_to_bf16(x + r * ld, cols, out + r * cols);
}

}  // namespace switchyard::kernels
