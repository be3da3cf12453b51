#include "switchyard/kernels/matmul.hpp"

#include "dnnl_support.hpp"

#include <dnnl.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "switchyard/runtime/error.hpp"

namespace switchyard::kernels {
namespace {

using dt = dnnl::memory::data_type;

}  // namespace

struct Linear::Impl {
  struct Key {
    std::int64_t rows, ldx, ldy;
    bool accumulate;
    auto operator<=>(const Key&) const = default;
  };
  const float* w;
  WeightLayout layout;
  std::mutex mu;  // guards `cache`; primitives themselves run concurrently
  struct Prim {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul prim;
  };
  std::map<Key, std::shared_ptr<Prim>> cache;
};

namespace {

// More distinct row counts than this (training routes differently every
// step) and the cache starts over: creation is ~0.1 ms, memory is not free.
constexpr std::size_t kMaxCachedPrimitives = 512;

dnnl::memory::desc weight_desc(WeightLayout layout, std::int64_t in, std::int64_t out) {
  // NOTE: the K x N operand viewed in place: element (k, n) is w[n*K + k]
  // for [out, in] storage and w[k*N + n] for [in, out].
  return layout == WeightLayout::kOutIn ? dnnl::memory::desc({in, out}, dt::f32, {1, in})
                                        : dnnl::memory::desc({in, out}, dt::f32, {out, 1});
}

}  // namespace

Linear::Linear(const float* w, std::int64_t out_features, std::int64_t in_features, WeightLayout layout)
    : impl_(std::make_unique<Impl>()), out_(out_features), in_(in_features) {
  impl_->w = w;
  impl_->layout = layout;
}

Linear::~Linear() = default;
Linear::Linear(Linear&&) noexcept = default;
Linear& Linear::operator=(Linear&&) noexcept = default;

void Linear::run(const float* x, std::int64_t rows, float* y, std::int64_t ldx, std::int64_t ldy,
                 bool accumulate) const {
  if (rows == 0) return;
  if (ldx == 0) ldx = in_;
  if (ldy == 0) ldy = out_;
  // Blocks of kFixedRows dense rows through one primitive, the tail padded
  // (detail::kFixedRows says why).
  constexpr std::int64_t B = detail::kFixedRows;
  for (std::int64_t first = 0; first < rows; first += B) {
    const std::int64_t n = std::min(B, rows - first);
    const float* xb = x + first * ldx;
    float* yb = y + first * ldy;
    if (n == B && ldx == in_ && ldy == out_ && !accumulate) {
      execute(xb, B, yb, in_, out_, false);
      continue;
    }
    auto* xs = reinterpret_cast<float*>(detail::thread_buffer(0, sizeof(float) * B * in_));
    auto* ys = reinterpret_cast<float*>(detail::thread_buffer(1, sizeof(float) * B * out_));
    for (std::int64_t r = 0; r < n; ++r) std::copy(xb + r * ldx, xb + r * ldx + in_, xs + r * in_);
    execute(xs, B, ys, in_, out_, false);
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t j = 0; j < out_; ++j)
        yb[r * ldy + j] = accumulate ? yb[r * ldy + j] + ys[r * out_ + j] : ys[r * out_ + j];  // keeps -0.0
  }
}

void Linear::execute(const float* x, std::int64_t rows, float* y, std::int64_t ldx, std::int64_t ldy,
                     bool accumulate) const {
  try {
    auto& eng = detail::cpu_engine();
    const dnnl::memory::desc src_md({rows, in_}, dt::f32, {ldx, 1}), dst_md({rows, out_}, dt::f32, {ldy, 1});
    const dnnl::memory::desc w_md = weight_desc(impl_->layout, in_, out_);
    std::shared_ptr<Impl::Prim> prim;
    {
      std::lock_guard<std::mutex> lock(impl_->mu);
      const Impl::Key key{rows, ldx, ldy, accumulate};
      auto it = impl_->cache.find(key);
      if (it == impl_->cache.end()) {
        if (impl_->cache.size() >= kMaxCachedPrimitives) impl_->cache.clear();
        dnnl::post_ops ops;
        if (accumulate) ops.append_sum(1.0f);
        dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, w_md, dst_md), detail::user_scratchpad_attr(ops),
                                        eng);
        auto made = std::make_shared<Impl::Prim>(Impl::Prim{pd, dnnl::matmul(pd)});
        it = impl_->cache.emplace(key, std::move(made)).first;
      }
      prim = it->second;
    }
    dnnl::memory src(src_md, eng, const_cast<float*>(x)), dst(dst_md, eng, y);
    dnnl::memory weights(w_md, eng, const_cast<float*>(impl_->w));
    dnnl::stream stream(eng);
    prim->prim.execute(stream, {{DNNL_ARG_SRC, src},
                                {DNNL_ARG_WEIGHTS, weights},
                                {DNNL_ARG_DST, dst},
                                {DNNL_ARG_SCRATCHPAD, detail::thread_scratchpad(prim->pd, eng)}});
    stream.wait();
  } catch (const dnnl::error& e) {
    throw Error(ErrorCode::kDnnl, std::string("oneDNN matmul failed: ") + e.what() + " (status " +
                                      std::to_string(static_cast<int>(e.status)) + ")");
  }
}

void gemm(const GemmArgs& g) {
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {
    for (std::int64_t i = 0; i < g.m; ++i)
      for (std::int64_t j = 0; j < g.n; ++j) g.c[i * g.ldc + j] = g.beta == 0.0f ? 0.0f : g.beta * g.c[i * g.ldc + j];
    return;
  }
  const dnnl_status_t st = dnnl_sgemm(g.trans_a ? 'T' : 'N', g.trans_b ? 'T' : 'N', g.m, g.n, g.k, g.alpha, g.a, g.lda,
                                      g.b, g.ldb, g.beta, g.c, g.ldc);
  check(st == dnnl_success, ErrorCode::kDnnl, "oneDNN sgemm failed (status " + std::to_string(st) + ")");
}

}  // namespace switchyard::kernels
