#include "switchyard/kernels/matmul.hpp"

#include <dnnl.hpp>
#include <string>

#include "switchyard/runtime/error.hpp"

namespace switchyard::kernels {
namespace {

using dt = dnnl::memory::data_type;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

}  // namespace

struct Linear::Impl {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  dnnl::memory weights;
};

Linear::Linear(const float* w, std::int64_t out_features, std::int64_t in_features)
    : out_(out_features), in_(in_features) {
  try {
    auto& eng = cpu_engine();
    const auto M = DNNL_RUNTIME_DIM_VAL;
    dnnl::memory::desc src_md({M, in_}, dt::f32, {in_, 1});
    // NOTE: Wᵀ viewed in place: element (k, n) of the K x N operand is w[n*K + k].
    dnnl::memory::desc w_md({in_, out_}, dt::f32, {1, in_});
    dnnl::memory::desc dst_md({M, out_}, dt::f32, {out_, 1});
    dnnl::matmul::desc desc(src_md, w_md, dst_md);
    auto pd = dnnl::matmul::primitive_desc(desc, eng);
    impl_ = std::make_unique<Impl>(Impl{pd, dnnl::matmul(pd), dnnl::memory(w_md, eng, const_cast<float*>(w))});
  } catch (const dnnl::error& e) {
    throw Error(ErrorCode::kDnnl, std::string("oneDNN matmul creation failed: ") + e.what() + " (status " +
                                      std::to_string(static_cast<int>(e.status)) + ")");
  }
}

Linear::~Linear() = default;
Linear::Linear(Linear&&) noexcept = default;
Linear& Linear::operator=(Linear&&) noexcept = default;

void Linear::run(const float* x, std::int64_t rows, float* y) const {
  if (rows == 0) return;
  try {
    auto& eng = cpu_engine();
    dnnl::memory src({{rows, in_}, dt::f32, {in_, 1}}, eng, const_cast<float*>(x));
    dnnl::memory dst({{rows, out_}, dt::f32, {out_, 1}}, eng, y);
    dnnl::stream stream(eng);
    impl_->prim.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, impl_->weights}, {DNNL_ARG_DST, dst}});
    stream.wait();
  } catch (const dnnl::error& e) {
    throw Error(ErrorCode::kDnnl, std::string("oneDNN matmul failed: ") + e.what());
  }
}

void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A,
          std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  const dnnl_status_t st =
      dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  check(st == dnnl_success, ErrorCode::kDnnl, "oneDNN sgemm failed (status " + std::to_string(st) + ")");
}

}  // namespace switchyard::kernels
