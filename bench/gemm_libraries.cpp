// gemm_libraries: the expert GEMM shapes of Switchyard's benchmark, side by
// side on the GEMM libraries available from Debian, single-threaded.
//
//   y[M, N] = x[M, K] · Wᵀ,   W stored [N, K] row-major (nn.Linear layout)
//   gate/up: K = hidden, N = ffn;   down: K = ffn, N = hidden
//
// Rows:
//   onednn_packed f32/bf16  kernels::PackedLinear (what Switchyard's experts
//                           run): weights reordered once into the layout the
//                           matmul picks (format `any`), one primitive per M,
//                           created in the warm-up. bf16: weights bf16, the
//                           f32 -> bf16 conversion of x is inside run() and so
//                           inside the timing; output f32.
//   dnnl_sgemm f32          oneDNN's BLAS-like sgemm on the plain row-major
//                           arrays, no prepacking.
//   openblas f32 (/bf16)    cblas_sgemm (and cblas_sbgemm where the library
//                           exports it; x conversion timed, like oneDNN's).
//   blis f32                bli_sgemm, BLIS's typed API (optional).
//
// Every row is checked against a float64 reference on a sample of output
// rows/columns: rel_err = max|y - ref| / max|ref|. bf16 rows also report the
// error against a float64 reference computed on the bf16-rounded x and W
// (what the kernel is asked to compute; ~1e-6 if it accumulates in f32).
#include <dlfcn.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <dnnl.hpp>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "switchyard/kernels/number_conversion.hpp"
#include "switchyard/kernels/packed_linear.hpp"

#ifdef SWITCHYARD_BENCH_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef SWITCHYARD_BENCH_HAVE_BLIS
// Only BLIS's own API: its BLAS/CBLAS prototypes would clash with OpenBLAS's.
#define BLIS_DISABLE_BLAS_DEFS
#define BLIS_DISABLE_CBLAS
#include <blis.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
namespace sk = switchyard::kernels;

// ---------------------------------------------------------------------------
// bf16 rounding (nearest even, as kernels::PackedLinear does).

float round_bf16(float f) { return sk::bf16_to_float(sk::float_to_bf16(f)); }

// ---------------------------------------------------------------------------
// One GEMM implementation under test, bound to one weight matrix W [N, K].

struct Runner {
  virtual ~Runner() = default;
  /// y[M, N] = x[M, K] · Wᵀ (x, y row-major, contiguous).
  virtual void run(const float* x, std::int64_t m, float* y) = 0;
  /// What kernel the library says it runs for this M (may be empty).
  virtual std::string kernel(std::int64_t m) const { return ""; }
};

struct Library {
  std::string name;   // JSON "library"
  std::string dtype;  // "f32" | "bf16"
  std::string skip;   // non-empty: not run, this is why
  // Builds a runner for W [n, k] (packing etc. happens here, untimed).
  std::function<std::unique_ptr<Runner>(const float* w, std::int64_t n, std::int64_t k)> make;
};

// --- oneDNN, prepacked, through Switchyard's own PackedLinear ---------------

struct PackedRunner final : Runner {
  sk::PackedLinear lin;
  sk::WeightType type;
  std::int64_t n, k;
  PackedRunner(const float* w, std::int64_t n_, std::int64_t k_, sk::WeightType t)
      : lin(w, n_, k_, t), type(t), n(n_), k(k_) {}
  void run(const float* x, std::int64_t m, float* y) override { lin.run(x, m, y); }
  // The implementation oneDNN picks for the descriptor PackedLinear builds
  // (weights laid out for 256 rows, then an M-row primitive on that layout).
  std::string kernel(std::int64_t m) const override {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    try {
      dnnl::engine eng(dnnl::engine::kind::cpu, 0);
      const dt t = type == sk::WeightType::kBF16 ? dt::bf16 : dt::f32;
      auto describe = [&](std::int64_t rows, const dnnl::memory::desc& wmd) {
        dnnl::memory::desc src({rows, k}, t, tag::ab), dst({rows, n}, dt::f32, tag::ab);
        return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wmd, dst), eng);
      };
      auto packed = describe(256, dnnl::memory::desc({k, n}, t, tag::any)).weights_desc();
      return describe(m, packed).impl_info_str();
    } catch (const dnnl::error&) {
      return "?";
    }
  }
};

// --- oneDNN dnnl_sgemm, plain row-major --------------------------------------

struct DnnlSgemmRunner final : Runner {
  const float* w;
  std::int64_t n, k;
  DnnlSgemmRunner(const float* w_, std::int64_t n_, std::int64_t k_) : w(w_), n(n_), k(k_) {}
  void run(const float* x, std::int64_t m, float* y) override {
    // Row-major: C[M,N] = A[M,K] · B^T with B = W [N, K].
    if (dnnl_sgemm('N', 'T', m, n, k, 1.0f, x, k, w, k, 0.0f, y, n) != dnnl_success)
      throw std::runtime_error("dnnl_sgemm failed");
  }
};

// --- OpenBLAS ------------------------------------------------------------------

#ifdef SWITCHYARD_BENCH_HAVE_OPENBLAS
struct OpenblasSgemmRunner final : Runner {
  const float* w;
  std::int64_t n, k;
  OpenblasSgemmRunner(const float* w_, std::int64_t n_, std::int64_t k_) : w(w_), n(n_), k(k_) {}
  void run(const float* x, std::int64_t m, float* y) override {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m), static_cast<blasint>(n),
                static_cast<blasint>(k), 1.0f, x, static_cast<blasint>(k), w, static_cast<blasint>(k), 0.0f, y,
                static_cast<blasint>(n));
  }
  std::string kernel(std::int64_t) const override { return openblas_get_corename(); }
};

#ifdef SWITCHYARD_BENCH_HAVE_SBGEMM
struct OpenblasSbgemmRunner final : Runner {
  std::vector<std::uint16_t> wb, xb;
  std::int64_t n, k;
  OpenblasSbgemmRunner(const float* w, std::int64_t n_, std::int64_t k_)
      : wb(static_cast<std::size_t>(n_ * k_)), n(n_), k(k_) {
    sk::convert_to_bf16(w, n_ * k_, wb.data());
  }
  void run(const float* x, std::int64_t m, float* y) override {
    xb.resize(static_cast<std::size_t>(m * k));  // conversion timed, as in PackedLinear
    sk::convert_to_bf16(x, m * k, xb.data());
    cblas_sbgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m), static_cast<blasint>(n),
                 static_cast<blasint>(k), 1.0f, reinterpret_cast<const bfloat16*>(xb.data()), static_cast<blasint>(k),
                 reinterpret_cast<const bfloat16*>(wb.data()), static_cast<blasint>(k), 0.0f, y,
                 static_cast<blasint>(n));
  }
  std::string kernel(std::int64_t) const override { return openblas_get_corename(); }
};
#endif

// The shared object that defines `sym` in this process (to catch another
// BLAS interposing OpenBLAS's cblas_sgemm).
std::string defining_object(void* sym) {
  Dl_info info{};
  if (sym && dladdr(sym, &info) && info.dli_fname) return info.dli_fname;
  return "?";
}
#endif

// --- BLIS ------------------------------------------------------------------------

#ifdef SWITCHYARD_BENCH_HAVE_BLIS
std::string blis_arch() { return bli_arch_string(bli_arch_query_id()); }

struct BlisSgemmRunner final : Runner {
  const float* w;
  std::int64_t n, k;
  BlisSgemmRunner(const float* w_, std::int64_t n_, std::int64_t k_) : w(w_), n(n_), k(k_) {}
  void run(const float* x, std::int64_t m, float* y) override {
    float one = 1.0f, zero = 0.0f;
    // General strides: x [M,K] (rs K, cs 1); Wᵀ as [K,N] over W [N,K] (rs 1, cs K).
    bli_sgemm(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, m, n, k, &one, const_cast<float*>(x), k, 1, const_cast<float*>(w),
              1, k, &zero, y, n, 1);
  }
  std::string kernel(std::int64_t) const override { return blis_arch(); }
};
#endif

// ---------------------------------------------------------------------------
// Shapes, reference, timing.

struct Shape {
  std::string proj;
  std::int64_t k, n;
};

std::vector<std::int64_t> spread(std::int64_t count, std::int64_t limit) {
  std::vector<std::int64_t> v;
  const std::int64_t s = std::min(count, limit);
  for (std::int64_t i = 0; i < s; ++i) v.push_back(s == 1 ? 0 : i * (count - 1) / (s - 1));
  return v;
}

struct Reference {
  std::vector<std::int64_t> rows, cols;
  std::vector<double> exact, rounded;  // [rows.size() * cols.size()]
};

Reference make_reference(const std::vector<float>& x, const std::vector<float>& w, std::int64_t m, std::int64_t k,
                         std::int64_t n) {
  Reference r;
  r.rows = spread(m, 32);
  r.cols = spread(n, 256);
  for (std::int64_t i : r.rows)
    for (std::int64_t j : r.cols) {
      double e = 0, q = 0;
      const float* xr = x.data() + i * k;
      const float* wr = w.data() + j * k;
      for (std::int64_t t = 0; t < k; ++t) {
        e += static_cast<double>(xr[t]) * wr[t];
        q += static_cast<double>(round_bf16(xr[t])) * round_bf16(wr[t]);
      }
      r.exact.push_back(e);
      r.rounded.push_back(q);
    }
  return r;
}

double rel_error(const std::vector<float>& y, std::int64_t n, const Reference& r, const std::vector<double>& ref) {
  double num = 0, den = 0;
  std::size_t idx = 0;
  for (std::int64_t i : r.rows)
    for (std::int64_t j : r.cols) {
      const double v = y[static_cast<std::size_t>(i * n + j)], want = ref[idx++];
      if (!std::isfinite(v)) return std::numeric_limits<double>::infinity();
      num = std::max(num, std::abs(v - want));
      den = std::max(den, std::abs(want));
    }
  return den > 0 ? num / den : num;
}

struct Timing {
  int samples = 0, calls_per_sample = 1, warmup = 0;
  double ms_median = 0, ms_min = 0, ms_max = 0;  // per call
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct TimingOptions {
  int iters = 7, warmup = 2;
  double min_sample_ms = 5, max_case_s = 4;
};

// Times several runners on the same case, interleaved: warm-up each, then
// round-robin one sample of each per round, so that load changes on a shared
// machine hit every library alike. A sample is enough back-to-back calls to
// last min_sample_ms (per-call time = sample / calls). A runner whose
// estimated cost exceeds max_case_s gets fewer samples (at least one); its
// `samples` count shows it.
std::vector<Timing> time_interleaved(const std::vector<Runner*>& rs, const float* x, std::int64_t m, float* y,
                                     const TimingOptions& o) {
  std::vector<Timing> ts(rs.size());
  std::vector<std::vector<double>> ms(rs.size());
  for (std::size_t i = 0; i < rs.size(); ++i) {
    Timing& t = ts[i];
    double call_s = 0;
    const auto start = Clock::now();
    for (int w = 0; w < std::max(1, o.warmup); ++w) {
      const auto t0 = Clock::now();
      rs[i]->run(x, m, y);
      call_s = seconds_since(t0);
      ++t.warmup;
      if (seconds_since(start) > o.max_case_s / 4) break;
    }
    t.calls_per_sample = std::max(1, static_cast<int>(std::ceil(o.min_sample_ms * 1e-3 / std::max(call_s, 1e-9))));
    const double sample_s = t.calls_per_sample * call_s;
    t.samples = std::clamp(static_cast<int>(o.max_case_s / std::max(sample_s, 1e-9)), 1, std::max(1, o.iters));
  }
  for (int round = 0; round < std::max(1, o.iters); ++round)
    for (std::size_t i = 0; i < rs.size(); ++i) {
      if (round >= ts[i].samples) continue;
      const auto t0 = Clock::now();
      for (int c = 0; c < ts[i].calls_per_sample; ++c) rs[i]->run(x, m, y);
      ms[i].push_back(seconds_since(t0) * 1e3 / ts[i].calls_per_sample);
    }
  for (std::size_t i = 0; i < rs.size(); ++i) {
    auto& v = ms[i];
    std::sort(v.begin(), v.end());
    ts[i].ms_min = v.front();
    ts[i].ms_max = v.back();
    ts[i].ms_median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  }
  return ts;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

bool wanted(const std::vector<std::string>& list, const std::string& v) {
  return list.empty() || std::find(list.begin(), list.end(), v) != list.end();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Expert GEMM shapes on oneDNN (prepacked and sgemm), OpenBLAS and BLIS, side by side"};
  std::vector<std::int64_t> ms = {1, 16, 256, 4096};
  std::vector<std::string> projs = {"gate_up", "down"}, libs, dtypes = {"f32", "bf16"};
  std::int64_t hidden = 1024, ffn = 2048;
  TimingOptions topt;
  int threads = 1;
  unsigned seed = 1;
  std::string json_path;
  app.add_option("--m", ms, "Row counts M (tokens per expert)")
      ->delimiter(',')
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 20));
  app.add_option("--proj", projs, "Projections: gate_up (K=hidden, N=ffn), down (K=ffn, N=hidden)")
      ->delimiter(',')
      ->check(CLI::IsMember({"gate_up", "down"}));
  app.add_option("--hidden", hidden, "Hidden size")->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 20));
  app.add_option("--ffn", ffn, "Expert FFN size")->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 20));
  app.add_option("--libs", libs, "Only these: onednn_packed,dnnl_sgemm,openblas,blis (default all)")->delimiter(',');
  app.add_option("--dtype", dtypes, "Data types: f32,bf16")->delimiter(',')->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--iters", topt.iters, "Timed samples per case (median, min, max)");
  app.add_option("--warmup", topt.warmup, "Warm-up calls per case (at least 1; creates oneDNN primitives)");
  app.add_option("--min-sample-ms", topt.min_sample_ms, "A sample repeats the call until it lasts this long");
  app.add_option("--max-case-s", topt.max_case_s, "Time budget per case; slow cases get fewer samples");
  app.add_option("--threads", threads, "Threads for every library (OpenMP, OpenBLAS, BLIS)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--seed", seed, "Seed of the random x and W");
  app.add_option("--json", json_path, "Append one JSON line per (library, dtype, M, K, N) to this file");
  CLI11_PARSE(app, argc, argv);

  try {
    omp_set_num_threads(threads);
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    const char* l2 = std::getenv("OPENBLAS_L2_SIZE");
    const dnnl_version_t* dv = dnnl_version();
    std::printf("gemm_libraries: %d thread(s); oneDNN %d.%d.%d (%s)\n", threads, dv->major, dv->minor, dv->patch,
                dv->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other runtime");

    std::vector<Library> all;
    for (const char* dt : {"f32", "bf16"}) {
      const auto wt = std::string(dt) == "bf16" ? sk::WeightType::kBF16 : sk::WeightType::kF32;
      all.push_back({"onednn_packed", dt, "", [wt](const float* w, std::int64_t n, std::int64_t k) {
                       return std::unique_ptr<Runner>(new PackedRunner(w, n, k, wt));
                     }});
    }
    all.push_back({"dnnl_sgemm", "f32", "", [](const float* w, std::int64_t n, std::int64_t k) {
                     return std::unique_ptr<Runner>(new DnnlSgemmRunner(w, n, k));
                   }});
    all.push_back(
        {"dnnl_sgemm", "bf16", "oneDNN has no BLAS-like bf16 GEMM call (only the int8 gemm_u8s8s32/s8s8s32)", nullptr});

#ifdef SWITCHYARD_BENCH_HAVE_OPENBLAS
    openblas_set_num_threads(threads);
    const std::string sgemm_from = defining_object(reinterpret_cast<void*>(&cblas_sgemm));
    std::printf("OpenBLAS: %s; core %s; OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s\n  cblas_sgemm from %s\n",
                openblas_get_config(), openblas_get_corename(), coretype ? coretype : "(unset)", l2 ? l2 : "(unset)",
                sgemm_from.c_str());
    const bool interposed = sgemm_from.find("openblas") == std::string::npos;
    all.push_back({"openblas", "f32", interposed ? "cblas_sgemm resolves to " + sgemm_from + ", not OpenBLAS" : "",
                   [](const float* w, std::int64_t n, std::int64_t k) {
                     return std::unique_ptr<Runner>(new OpenblasSgemmRunner(w, n, k));
                   }});
#ifdef SWITCHYARD_BENCH_HAVE_SBGEMM
    all.push_back({"openblas", "bf16", interposed ? "cblas_sbgemm resolves elsewhere" : "",
                   [](const float* w, std::int64_t n, std::int64_t k) {
                     return std::unique_ptr<Runner>(new OpenblasSbgemmRunner(w, n, k));
                   }});
#else
    all.push_back(
        {"openblas", "bf16", "this OpenBLAS does not export cblas_sbgemm (built without BUILD_BFLOAT16)", nullptr});
#endif
#else
    (void)coretype;
    (void)l2;
    std::printf("OpenBLAS: not found at configure time\n");
    all.push_back({"openblas", "f32", "OpenBLAS not found at configure time", nullptr});
#endif

#ifdef SWITCHYARD_BENCH_HAVE_BLIS
    bli_thread_set_num_threads(threads);
    const char* blis_env = std::getenv("BLIS_ARCH_TYPE");
    std::printf("BLIS: %s; sub-configuration %s; BLIS_ARCH_TYPE=%s\n", bli_info_get_version_str(), blis_arch().c_str(),
                blis_env ? blis_env : "(unset)");
    all.push_back({"blis", "f32", "", [](const float* w, std::int64_t n, std::int64_t k) {
                     return std::unique_ptr<Runner>(new BlisSgemmRunner(w, n, k));
                   }});
#else
    std::printf("BLIS: not found at configure time\n");
    all.push_back({"blis", "f32", "BLIS not found at configure time", nullptr});
#endif
    all.push_back({"blis", "bf16", "BLIS 0.9 has no bf16 GEMM", nullptr});

    std::vector<Library> chosen;
    for (auto& l : all)
      if (wanted(libs, l.name) && wanted(dtypes, l.dtype)) chosen.push_back(l);

    std::vector<Shape> shapes;
    for (const auto& p : projs) shapes.push_back(p == "gate_up" ? Shape{p, hidden, ffn} : Shape{p, ffn, hidden});
    const std::int64_t m_max = *std::max_element(ms.begin(), ms.end());

    std::ofstream jout;
    if (!json_path.empty()) {
      jout.open(json_path, std::ios::app);
      if (!jout) throw std::runtime_error(json_path + ": cannot open for appending");
    }

    std::printf("\n%-14s %-4s %-7s %5s %5s %5s %3s %10s %22s %9s %9s  %-5s %s\n", "library", "type", "proj", "M", "K",
                "N", "n", "ms/call", "GFLOP/s med [min-max]", "err", "err_bf16", "check", "kernel");
    bool all_ok = true;
    std::map<std::string, std::string> skipped;  // "library dtype" -> why
    const auto t_start = Clock::now();
    std::mt19937 rng(seed);
    for (const auto& s : shapes) {
      // nn.Linear-like data: x ~ U(-1, 1), W ~ U(-1/sqrt(K), 1/sqrt(K)).
      std::vector<float> x(static_cast<std::size_t>(m_max * s.k)), w(static_cast<std::size_t>(s.n * s.k));
      std::uniform_real_distribution<float> ux(-1.0f, 1.0f),
          uw(-1.0f / std::sqrt(float(s.k)), 1.0f / std::sqrt(float(s.k)));
      for (auto& v : x) v = ux(rng);
      for (auto& v : w) v = uw(rng);
      std::vector<Reference> refs;
      for (std::int64_t m : ms) refs.push_back(make_reference(x, w, m, s.k, s.n));
      std::vector<float> y(static_cast<std::size_t>(m_max * s.n));

      // Every library's runner for this shape (weights packed here, untimed).
      std::vector<std::unique_ptr<Runner>> runners(chosen.size());
      std::vector<std::string> skips(chosen.size());
      for (std::size_t li = 0; li < chosen.size(); ++li) {
        skips[li] = chosen[li].skip;
        if (!skips[li].empty()) {
          skipped[chosen[li].name + " " + chosen[li].dtype] = skips[li];
          continue;
        }
        try {
          runners[li] = chosen[li].make(w.data(), s.n, s.k);
        } catch (const std::exception& e) {
          skips[li] = std::string("setup failed: ") + e.what();
          skipped[chosen[li].name + " " + chosen[li].dtype] = skips[li];
        }
      }
      std::vector<Runner*> live;
      std::vector<std::size_t> live_index;
      for (std::size_t li = 0; li < chosen.size(); ++li)
        if (runners[li]) {
          live.push_back(runners[li].get());
          live_index.push_back(li);
        }

      for (std::size_t mi = 0; mi < ms.size(); ++mi) {
        const std::int64_t m = ms[mi];
        const std::vector<Timing> times = time_interleaved(live, x.data(), m, y.data(), topt);
        for (std::size_t li = 0; li < chosen.size(); ++li) {
          const Library& lib = chosen[li];
          json line = {{"bench", "gemm_libraries"},
                       {"library", lib.name},
                       {"dtype", lib.dtype},
                       {"proj", s.proj},
                       {"M", m},
                       {"K", s.k},
                       {"N", s.n},
                       {"threads", threads}};
          if (!runners[li]) {
            line["skipped"] = skips[li];
            if (jout) jout << line.dump() << '\n';
            continue;
          }
          Runner& runner = *runners[li];
          const Timing& t =
              times[static_cast<std::size_t>(std::find(live_index.begin(), live_index.end(), li) - live_index.begin())];
          // Correctness: a fresh call into a NaN-filled output.
          std::fill(y.begin(), y.begin() + m * s.n, std::numeric_limits<float>::quiet_NaN());
          runner.run(x.data(), m, y.data());
          const double err = rel_error(y, s.n, refs[mi], refs[mi].exact);
          const bool bf16 = lib.dtype == "bf16";
          const double err_r = bf16 ? rel_error(y, s.n, refs[mi], refs[mi].rounded) : 0.0;
          const bool ok = bf16 ? (err_r <= 1e-5 && err <= 3e-2) : err <= 1e-5;
          all_ok = all_ok && ok;
          const double gflop = 2.0 * double(m) * double(s.k) * double(s.n) * 1e-9;
          const std::string kernel = runner.kernel(m);
          std::printf("%-14s %-4s %-7s %5lld %5lld %5lld %3d %10.4f %8.1f [%5.1f-%5.1f] %9.2e %9s  %-5s %s\n",
                      lib.name.c_str(), lib.dtype.c_str(), s.proj.c_str(), (long long)m, (long long)s.k, (long long)s.n,
                      t.samples, t.ms_median, gflop / (t.ms_median * 1e-3), gflop / (t.ms_max * 1e-3),
                      gflop / (t.ms_min * 1e-3), err, bf16 ? fmt("%9.2e", err_r).c_str() : "-", ok ? "ok" : "FAIL",
                      kernel.c_str());
          std::fflush(stdout);
          line.update({{"samples", t.samples},
                       {"calls_per_sample", t.calls_per_sample},
                       {"warmup", t.warmup},
                       {"ms_median", t.ms_median},
                       {"ms_min", t.ms_min},
                       {"ms_max", t.ms_max},
                       {"gflops_median", gflop / (t.ms_median * 1e-3)},
                       {"gflops_min", gflop / (t.ms_max * 1e-3)},
                       {"gflops_max", gflop / (t.ms_min * 1e-3)},
                       {"rel_err", err},
                       {"rel_err_bf16_inputs", bf16 ? json(err_r) : json(nullptr)},
                       {"check", ok ? "ok" : "fail"},
                       {"kernel", kernel}});
          if (bf16) line["src_conversion"] = "timed";
          if (jout) jout << line.dump() << '\n';
        }
      }
    }
    std::printf("\nskipped:\n");
    for (const auto& [what, why] : skipped) std::printf("  %s: %s\n", what.c_str(), why.c_str());
    std::printf(
        "total %.1f s; correctness %s (f32: rel err <= 1e-5; bf16: <= 1e-5 vs bf16-rounded inputs, "
        "<= 3e-2 vs exact)\n",
        seconds_since(t_start), all_ok ? "ok" : "FAILED");
    return all_ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gemm_libraries: %s\n", e.what());
    return 2;
  }
}
