#pragma once
// Private: what every oneDNN kernel here shares: the CPU engine, and
// scratchpads owned by the calling thread. Debian's oneDNN
// is built without concurrent execution support, so in the default
// (library) mode all primitives share one scratchpad; two workers running
// matmuls at once would overwrite each other's intermediate results.
#include <dnnl.hpp>
#include <vector>

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

}  // namespace switchyard::kernels::detail
