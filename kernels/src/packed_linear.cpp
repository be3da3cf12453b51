#include "switchyard/kernels/packed_linear.hpp"

#include "dnnl_support.hpp"

#include <algorithm>
#include <dnnl.hpp>
#include <string>

#include "switchyard/kernels/number_conversion.hpp"
#include "switchyard/runtime/error.hpp"

namespace switchyard::kernels {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

dnnl::algorithm eltwise_of(Activation act) {
  switch (act) {
    case Activation::kSilu: return dnnl::algorithm::eltwise_swish;
    case Activation::kGelu: return dnnl::algorithm::eltwise_gelu_erf;
    case Activation::kGeluTanh: return dnnl::algorithm::eltwise_gelu_tanh;
    case Activation::kRelu: return dnnl::algorithm::eltwise_relu;
  }
  return dnnl::algorithm::eltwise_relu;
}

}  // namespace

struct PackedLinear::Impl {
  bool bf16 = false;  // bf16 weights and inputs (computed in `type`)
  dt type;            // what the kernel reads: bf16, or float32 where bf16 is not native
  Epilogue epilogue;
  Activation act;
  dnnl::memory::desc packed_md;
  dnnl::memory packed;
  std::map<std::pair<std::int64_t, bool>, std::pair<dnnl::matmul::primitive_desc, dnnl::matmul>>
      by_rows;  // (rows, bf16 output)
  std::vector<std::uint16_t> x_bf16;
  std::vector<float> x_wide, y_wide;  // bf16 inputs widened, float32 outputs before rounding (not native)

  dnnl::matmul::primitive_desc describe(std::int64_t rows, std::int64_t in, std::int64_t out,
                                        const dnnl::memory::desc& weights, dt dst_type = dt::f32) const {
    dnnl::memory::desc src({rows, in}, type, tag::ab), dst({rows, out}, dst_type, tag::ab);
    dnnl::post_ops ops;
    if (epilogue == Epilogue::kActivation)
      ops.append_eltwise(1.0f, eltwise_of(act), act == Activation::kSilu ? 1.0f : 0.0f, 0.0f);
    if (epilogue == Epilogue::kMultiply)
      ops.append_binary(dnnl::algorithm::binary_mul, dnnl::memory::desc({rows, out}, dt::f32, tag::ab));
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), detail::user_scratchpad_attr(ops),
                                        detail::cpu_engine());
  }

  // Packs weights given as a plain [in, out] view (Wᵀ, strides {1, in}) of `type`.
  void pack(void* plain, std::int64_t in, std::int64_t out) {
    // NOTE: the layout chosen for a mid-size row count serves every count;
    // the brgemm kernels pick it by ISA and shape, not by rows.
    packed_md = describe(256, in, out, dnnl::memory::desc({in, out}, type, tag::any)).weights_desc();
    packed = dnnl::memory(packed_md, detail::cpu_engine());
    dnnl::memory src(dnnl::memory::desc({in, out}, type, dnnl::memory::dims{1, in}), detail::cpu_engine(), plain);
    dnnl::stream s(detail::cpu_engine());
    dnnl::reorder(src, packed).execute(s, src, packed);
    s.wait();
  }
};

PackedLinear::PackedLinear(const float* w, std::int64_t out_features, std::int64_t in_features, WeightType type,
                           Epilogue epilogue, Activation act)
    : impl_(std::make_unique<Impl>()), out_(out_features), in_(in_features) {
  impl_->bf16 = type == WeightType::kBF16;
  impl_->type = impl_->bf16 && detail::bf16_matmul_native() ? dt::bf16 : dt::f32;
  impl_->epilogue = epilogue;
  impl_->act = act;
  try {
    if (!impl_->bf16) {
      impl_->pack(const_cast<float*>(w), in_, out_);
    } else {
      std::vector<std::uint16_t> bf(static_cast<std::size_t>(in_ * out_));
      convert_to_bf16(w, static_cast<std::int64_t>(bf.size()), bf.data());
      pack_bf16(bf.data());
    }
  } catch (const dnnl::error& e) {
    throw Error(ErrorCode::kDnnl, std::string("oneDNN weight packing failed: ") + e.what());
  }
}

PackedLinear::PackedLinear(const std::uint16_t* w_bf16, std::int64_t out_features, std::int64_t in_features,
                           Epilogue epilogue, Activation act)
    : impl_(std::make_unique<Impl>()), out_(out_features), in_(in_features) {
  impl_->bf16 = true;
  impl_->type = detail::bf16_matmul_native() ? dt::bf16 : dt::f32;
  impl_->epilogue = epilogue;
  impl_->act = act;
  try {
    pack_bf16(w_bf16);
  } catch (const dnnl::error& e) {
    throw Error(ErrorCode::kDnnl, std::string("oneDNN weight packing failed: ") + e.what());
  }
}

void PackedLinear::pack_bf16(const std::uint16_t* w) {
  if (impl_->type == dt::bf16) return impl_->pack(const_cast<std::uint16_t*>(w), in_, out_);
  std::vector<float> wide;
  impl_->pack(const_cast<float*>(detail::widen_bf16(w, in_ * out_, wide)), in_, out_);
}

PackedLinear::~PackedLinear() = default;
PackedLinear::PackedLinear(PackedLinear&&) noexcept = default;

std::size_t PackedLinear::weight_bytes() const { return impl_->packed_md.get_size(); }

void PackedLinear::run(const float* x, std::int64_t rows, float* y, const float* mul) {
  if (rows == 0) return;
  Impl& m = *impl_;
  if (m.bf16) {
    m.x_bf16.resize(static_cast<std::size_t>(rows * in_));
    convert_to_bf16(x, rows * in_, m.x_bf16.data());
    run_bf16(m.x_bf16.data(), rows, y, false, mul);
  } else {
    execute(x, rows, y, false, mul);
  }
}

void PackedLinear::run_bf16(const std::uint16_t* x, std::int64_t rows, void* y, bool y_bf16, const float* mul) {
  Impl& m = *impl_;
  check(m.bf16, ErrorCode::kInternal, "PackedLinear::run_bf16 needs bf16 weights");
  if (rows == 0) return;
  if (m.type == dt::bf16) return execute(x, rows, y, y_bf16, mul);
  // Not native: float32 kernel on the widened input, output rounded after the epilogue as the bf16 kernel does.
  const float* wide = detail::widen_bf16(x, rows * in_, m.x_wide);
  if (!y_bf16) return execute(wide, rows, y, false, mul);
  m.y_wide.resize(static_cast<std::size_t>(rows * out_));
  execute(wide, rows, m.y_wide.data(), false, mul);
  convert_to_bf16(m.y_wide.data(), rows * out_, static_cast<std::uint16_t*>(y));
}

void PackedLinear::execute(const void* x, std::int64_t rows, void* y, bool y_bf16, const float* mul) {
  const std::size_t x_row = (impl_->type == dt::bf16 ? 2 : 4) * in_, y_row = (y_bf16 ? 2 : 4) * out_;
  detail::run_in_row_blocks(
      rows, x, x_row, y, y_row, mul, out_,
      [&](const void* xb, std::int64_t n, void* yb, const float* mb) { execute_rows(xb, n, yb, y_bf16, mb); });
}

void PackedLinear::execute_rows(const void* x, std::int64_t rows, void* y, bool y_bf16, const float* mul) {
  Impl& m = *impl_;
  try {
    const auto key = std::make_pair(rows, y_bf16);
    auto it = m.by_rows.find(key);
    if (it == m.by_rows.end()) {
      const auto pd = m.describe(rows, in_, out_, m.packed_md, y_bf16 ? dt::bf16 : dt::f32);
      it = m.by_rows.emplace(key, std::make_pair(pd, dnnl::matmul(pd))).first;
    }
    auto& eng = detail::cpu_engine();
    dnnl::memory src({{rows, in_}, m.type, tag::ab}, eng, const_cast<void*>(x));
    dnnl::memory dst({{rows, out_}, y_bf16 ? dt::bf16 : dt::f32, tag::ab}, eng, y);
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, src},
        {DNNL_ARG_WEIGHTS, m.packed},
        {DNNL_ARG_DST, dst},
        {DNNL_ARG_SCRATCHPAD, detail::thread_scratchpad(it->second.first, eng)}};
    if (m.epilogue == Epilogue::kMultiply) {
      check(mul != nullptr, ErrorCode::kInternal, "PackedLinear: multiply epilogue needs its operand");
      args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1] =
          dnnl::memory({{rows, out_}, dt::f32, tag::ab}, eng, const_cast<float*>(mul));
    }
    dnnl::stream s(eng);
    it->second.second.execute(s, args);
    s.wait();
  } catch (const dnnl::error& e) {
    throw Error(ErrorCode::kDnnl, std::string("oneDNN packed matmul failed: ") + e.what());
  }
}

}  // namespace switchyard::kernels
