#pragma once
// Private: what every oneDNN kernel here shares: the CPU engine, and
// scratchpads owned by the calling thread. Debian's oneDNN
// is built without concurrent execution support, so in the default
// (library) mode all primitives share one scratchpad; two workers running
// matmuls at once would overwrite each other's intermediate results.
#include <algorithm>
#include <cstdint>
#include <dnnl.hpp>
#include <vector>

#include "switchyard/kernels/number_conversion.hpp"

namespace switchyard::kernels::detail {

/// The one CPU engine all primitives and memories use.
inline dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

/// Attributes with `ops` and a user-provided scratchpad.
inline dnnl::primitive_attr user_scratchpad_attr(const dnnl::post_ops& ops = {}) {
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

/// Scratchpad memory for `pd` on this thread's buffer (grown as needed).
inline dnnl::memory thread_scratchpad(const dnnl::primitive_desc_base& pd, const dnnl::engine& engine) {
  thread_local std::vector<unsigned char> buffer;
  const dnnl::memory::desc md = pd.scratchpad_desc();
  if (buffer.size() < md.get_size()) buffer.resize(md.get_size());
  return dnnl::memory(md, engine, buffer.data());
}

/// Whether this oneDNN runs matmuls on bf16 operands on this CPU. Debian's
/// oneDNN 2.6 needs AVX-512 for them; on an AVX2-only machine every bf16
/// kernel here widens its operands to float32 instead. That gives the same
/// numbers class: a product of two bf16 values is exact in float32 and sums
/// accumulate in float32 either way; only the speed-up is lost. Probed once.
inline bool bf16_matmul_native() {
  static const bool native = [] {
    try {
      using dt = dnnl::memory::data_type;
      const dnnl::memory::desc a({4, 16}, dt::bf16, {16, 1}), b({16, 16}, dt::bf16, {16, 1}),
          c({4, 16}, dt::f32, {16, 1});
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), cpu_engine());
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return native;
}

// oneDNN's matmul kernels compute a row with other code depending on the
// row count of the call (AVX2: one row and row tails; AVX-512 brgemm, seen
// on an AMX Xeon: blocking chosen by shape), so a row's bits would depend on
// its batch. Every matmul therefore runs in blocks of kFixedRows rows, the
// tail padded, through one primitive of that row count: a row then gets the
// same bits in any batch, which the step's bitwise schedule independence
// rests on (docs/task-graph.md; tests/unit/test_matmul_rows.cpp checks it).
// NOTE: a multiple of every row-block height of the AVX2 kernels (6, 8, 16, ...): with
// 128, the last two rows of a block (128 = 21·6 + 2) take the tail path.
constexpr std::int64_t kFixedRows = 96;

/// A thread-local buffer of at least `bytes` bytes, one per `slot`; zero-filled when grown.
inline unsigned char* thread_buffer(int slot, std::size_t bytes) {
  thread_local std::vector<unsigned char> buffers[4];
  auto& b = buffers[slot];
  if (b.size() < bytes) b.assign(bytes, 0);
  return b.data();
}

/// Runs `run(x, n, y, mul)` on `rows` dense rows (`x_row` and `y_row` bytes
/// each; `mul`, if given, `mul_width` floats per row) in blocks of
/// kFixedRows rows, the last one padded through this thread's buffers 0-2.
template <typename Run>
void run_in_row_blocks(std::int64_t rows, const void* x, std::size_t x_row, void* y, std::size_t y_row,
                       const float* mul, std::int64_t mul_width, Run&& run) {
  constexpr std::int64_t B = kFixedRows;
  const auto* xc = static_cast<const unsigned char*>(x);
  auto* yc = static_cast<unsigned char*>(y);
  for (std::int64_t first = 0; first < rows; first += B) {
    const std::int64_t n = std::min(B, rows - first);
    const float* mb = mul ? mul + first * mul_width : nullptr;
    if (n == B) {
      run(xc + first * x_row, B, yc + first * y_row, mb);
      continue;
    }
    unsigned char* xs = thread_buffer(0, B * x_row);
    unsigned char* ys = thread_buffer(1, B * y_row);
    auto* ms = mb ? reinterpret_cast<float*>(thread_buffer(2, sizeof(float) * B * mul_width)) : nullptr;
    std::copy(xc + first * x_row, xc + (first + n) * x_row, xs);
    if (ms) std::copy(mb, mb + n * mul_width, ms);
    run(xs, B, ys, ms);
    std::copy(ys, ys + n * y_row, yc + first * y_row);
  }
}

/// `n` bf16 values (raw bits) widened to float32 in `buffer` (grown as needed).
inline const float* widen_bf16(const std::uint16_t* x, std::int64_t n, std::vector<float>& buffer) {
  if (buffer.size() < static_cast<std::size_t>(n)) buffer.resize(static_cast<std::size_t>(n));
  convert_from_bf16(x, n, buffer.data());
  return buffer.data();
}

}  // namespace switchyard::kernels::detail
