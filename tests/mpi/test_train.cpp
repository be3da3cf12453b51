// Training across ranks: the loss falls, two runs agree bit for bit, a run
// resumed from a checkpoint ends bit-identical to an uninterrupted one, every
// router kind trains with replicated parameters in sync, and the model's
// gradients match finite differences.
//
// The corpus is synthetic (words from a small list, chosen by a fixed LCG),
// written by rank 0 into a temporary directory, so the test needs no package.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/train/trainer.hpp"

namespace {

namespace fs = std::filesystem;
using namespace switchyard;
using namespace switchyard::layers;
using namespace switchyard::formats;
using namespace switchyard::train;

// A directory named by rank 0 and removed by it at the end.
class SharedTempDir {
 public:
  explicit SharedTempDir(comm::Communicator& comm) : comm_(comm) {
    std::int64_t pid = comm.rank() == 0 ? ::getpid() : 0;
    comm.broadcast(&pid, sizeof(pid), 0);
    path_ = fs::temp_directory_path() / ("sy_train_" + std::to_string(pid) + "_" + std::to_string(counter_++));
    if (comm.rank() == 0) fs::create_directories(path_);
    MPI_Barrier(MPI_COMM_WORLD);
  }
  ~SharedTempDir() {
    MPI_Barrier(MPI_COMM_WORLD);
    if (comm_.rank() == 0) fs::remove_all(path_);
  }
  std::string str(const std::string& sub = "") const { return sub.empty() ? path_.string() : (path_ / sub).string(); }

 private:
  comm::Communicator& comm_;
  fs::path path_;
  static inline int counter_ = 0;
};

class TrainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    comm_ = new comm::MpiCommunicator(MPI_COMM_WORLD);
    corpus_dir_ = new SharedTempDir(*comm_);
    if (comm_->rank() == 0) {
      static const char* kWords[] = {"the", "cat", "sat", "on",  "a",     "mat", "and",  "dog",
                                     "ran", "to",  "big", "red", "house", "in",  "rain", "sun"};
      std::uint64_t s = 12345;
      std::string text;
      while (text.size() < 60000) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        text += kWords[(s >> 33) % 16];
        text += ((s >> 20) % 9 == 0) ? ".\n" : " ";
      }
      std::ofstream(corpus_dir_->str("words")) << text;
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  static void TearDownTestSuite() {
    delete corpus_dir_;
    delete comm_;
  }

  // A model small enough to train in seconds; 4 experts allow up to 4 ranks.
  static TrainConfig tiny(const std::string& arch, const std::string& extra = "") {
    const std::string text = R"({"data": {"dir": ")" + corpus_dir_->str() +
                             R"(", "min_bytes": 1000},
      "model": {"arch": ")" + arch +
                             R"(", "hidden": 32, "ffn": 32, "experts": 4, "top_k": 2, "layers": 2,
                "context": 8, "embed": 8},
      "optimizer": {"type": "adamw", "lr": 0.01, "betas": [0.9, 0.95], "weight_decay": 0.01},
      "schedule": {"warmup_steps": 5, "min_lr": 0.001},
      "batch_tokens": 64, "steps": 60, "seed": 7, "aux_loss_coef": 0.01, "z_loss_coef": 0.001)" +
                             extra + "}";
    return parse_train_config(text, "tiny.json");
  }

  static inline comm::MpiCommunicator* comm_ = nullptr;
  static inline SharedTempDir* corpus_dir_ = nullptr;
};

std::vector<double> run_steps(Trainer& t, std::int64_t n) {
  std::vector<double> losses;
  for (std::int64_t i = 0; i < n; ++i) losses.push_back(t.train_step().loss);
  return losses;
}

double mean(const std::vector<double>& v, std::size_t lo, std::size_t hi) {
  double s = 0;
  for (std::size_t i = lo; i < hi; ++i) s += v[i];
  return s / static_cast<double>(hi - lo);
}

// True if every parameter value and optimizer slot of a and b has the same bits.
void expect_same_state(Trainer& a, Trainer& b) {
  const auto& pa = a.model().parameters();
  const auto& pb = b.model().parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    ASSERT_EQ(pa[i].name, pb[i].name);
    EXPECT_EQ(std::memcmp(pa[i].param->value.data(), pb[i].param->value.data(), pa[i].param->value.size() * 4), 0)
        << pa[i].name;
  }
  auto sa = a.optimizer().slots(), sb = b.optimizer().slots();
  for (std::size_t s = 0; s < sa.size(); ++s)
    for (std::size_t i = 0; i < pa.size(); ++i)
      EXPECT_EQ((*sa[s].values)[i], (*sb[s].values)[i]) << sa[s].name << " of " << pa[i].name;
  EXPECT_EQ(a.optimizer().num_steps(), b.optimizer().num_steps());
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST_F(TrainTest, LossFallsAndBeatsTheUnigramBaseline) {
  Trainer t(tiny("mixtral"), *comm_);
  const auto losses = run_steps(t, 60);
  for (double l : losses) ASSERT_TRUE(std::isfinite(l));
  EXPECT_LT(mean(losses, 50, 60), mean(losses, 0, 10) - 0.5) << "first " << losses.front() << " last " << losses.back();
  const EvalResult ev = t.evaluate(0, true);
  EXPECT_LT(ev.loss, ngram_baselines(t.corpus()).unigram);
  // Specialisation covers every (block, expert); token shares sum to 1 per block.
  ASSERT_EQ(ev.experts.size(), 2u * 4u);
  double share = 0;
  for (int e = 0; e < 4; ++e) share += ev.experts[static_cast<std::size_t>(e)].token_share;
  EXPECT_NEAR(share, 1.0, 1e-9);
}

TEST_F(TrainTest, InitialModelDoesNotDependOnRankCount) {
  // Each rank also builds the whole model alone (MPI_COMM_SELF): experts are
  // seeded by global index, so every tensor matches the sharded model's bits,
  // and the held-out loss agrees up to summation order.
  comm::MpiCommunicator self(MPI_COMM_SELF);
  Trainer world(tiny("qwen2_moe"), *comm_), alone(tiny("qwen2_moe"), self);
  for (const auto& p : world.model().parameters()) {
    const NamedParameter* q = nullptr;
    for (const auto& r : alone.model().parameters())
      if (r.name == p.name) q = &r;
    ASSERT_NE(q, nullptr) << p.name;
    EXPECT_EQ(p.param->value, q->param->value) << p.name;
  }
  EXPECT_NEAR(world.evaluate(3000, false).loss, alone.evaluate(3000, false).loss, 1e-5);
}

TEST_F(TrainTest, TwoRunsGiveIdenticalLossCurves) {
  Trainer a(tiny("qwen3_moe"), *comm_), b(tiny("qwen3_moe"), *comm_);
  const auto la = run_steps(a, 15), lb = run_steps(b, 15);
  for (std::size_t i = 0; i < la.size(); ++i) EXPECT_EQ(la[i], lb[i]) << "step " << i + 1;  // bitwise
  expect_same_state(a, b);
}

TEST_F(TrainTest, ResumedRunEndsBitIdenticalToUninterrupted) {
  SharedTempDir dir(*comm_);
  const TrainConfig cfg = tiny("deepseek_v3", R"(, "bias_update_speed": 0.001, "steps": 20)");
  Trainer full(cfg, *comm_);
  run_steps(full, 20);
  full.save(dir.str("full"));

  Trainer first(cfg, *comm_);
  run_steps(first, 10);
  first.save(dir.str("half"));
  first.save(dir.str("half"));  // saving over an existing checkpoint swaps it atomically

  Trainer resumed(cfg, *comm_);
  resumed.resume(dir.str("half"));
  EXPECT_EQ(resumed.step(), 10);
  run_steps(resumed, 10);
  expect_same_state(full, resumed);
  for (std::int64_t l = 0; l < 2; ++l)
    EXPECT_EQ(full.model().moe(l).selection_bias(), resumed.model().moe(l).selection_bias());
  resumed.save(dir.str("resumed"));

  // The saved files are byte for byte the same.
  MPI_Barrier(MPI_COMM_WORLD);
  if (comm_->rank() == 0) {
    int files = 0;
    for (const auto& f : fs::directory_iterator(dir.str("full"))) {
      const fs::path other = fs::path(dir.str("resumed")) / f.path().filename();
      ASSERT_TRUE(fs::exists(other)) << other;
      EXPECT_TRUE(file_bytes(f.path()) == file_bytes(other)) << f.path().filename();
      ++files;
    }
    EXPECT_EQ(files, 3 + comm_->size());  // index, replicated, config, one expert file per rank
    for (const auto& f : fs::directory_iterator(dir.str()))
      EXPECT_EQ(f.path().filename().string().find(".tmp-"), std::string::npos) << "left behind: " << f.path();
  }
}

TEST_F(TrainTest, EveryRouterKindTrainsWithReplicasInSync) {
  // GLM-4.5 and Llama 4 beside the first four: the other architectures'
  // routers are one of these (docs/routing.md).
  for (const std::string arch : {"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "glm4_moe", "llama4_text"}) {
    SCOPED_TRACE(arch);
    const bool biased = arch == "deepseek_v3" || arch == "glm4_moe";
    const std::string extra = biased ? R"(, "bias_update_speed": 0.001)" : "";
    Trainer t(tiny(arch, extra), *comm_);
    const auto losses = run_steps(t, 25);
    for (double l : losses) ASSERT_TRUE(std::isfinite(l));
    EXPECT_LT(mean(losses, 20, 25), mean(losses, 0, 5));
    // Replicated parameters are the same bits on every rank.
    for (const auto& p : t.model().parameters()) {
      if (!p.param->replicated) continue;
      std::vector<float> root = p.param->value;
      comm_->broadcast(root.data(), root.size() * sizeof(float), 0);
      EXPECT_EQ(std::memcmp(root.data(), p.param->value.data(), root.size() * 4), 0) << p.name;
    }
  }
}

// The topology loss in training. The router is replicated and sees only a
// token's content, never its rank, so the loss can favour only experts that
// are cheap from every rank on average: with all ranks but the last on node
// 0, node 0's experts, and fewer token copies cross nodes. (On a symmetric
// layout it moves nothing; docs/topology.md.)
TEST_F(TrainTest, TopologyLossMovesTokensTowardCheapLinks) {
  const int R = comm_->size(), me = comm_->rank();
  if (R < 3) GTEST_SKIP() << "needs an uneven layout: at least 3 ranks";
  std::vector<int> node_of_rank(static_cast<std::size_t>(R), 0);
  node_of_rank.back() = 1;
  comm::Topology topology = comm::virtual_nodes(R, R - 1);
  topology.cost(comm::LinkClass::kSelf) = comm::LinkCost{.latency_s = 0.0, .bandwidth_bytes_per_s = 2e10, .probe = {}};
  topology.cost(comm::LinkClass::kSameNode) =
      comm::LinkCost{.latency_s = 1e-6, .bandwidth_bytes_per_s = 1e10, .probe = {}};
  topology.cost(comm::LinkClass::kOtherNode) =
      comm::LinkCost{.latency_s = 5e-6, .bandwidth_bytes_per_s = 1e9, .probe = {}};
  // The share of the job's dispatched rows that crossed nodes over the last
  // 10 of 40 steps, and the last step's topology loss.
  const auto run = [&](double coef) {
    TrainConfig c = tiny("mixtral", R"(, "routing": {"topology_loss": )" + std::to_string(coef) + "}");
    Trainer t(c, *comm_, {.topology = topology});
    double across = 0, all = 0, loss = 0;
    for (int step = 0; step < 40; ++step) {
      const StepReport rep = t.train_step();
      loss = rep.topology_loss;
      if (step < 30) continue;
      for (const auto& block : rep.traffic)
        for (int r = 0; r < R; ++r) {
          all += static_cast<double>(block.send_rows[r]);
          if (node_of_rank[r] != node_of_rank[me]) across += static_cast<double>(block.send_rows[r]);
        }
    }
    double sums[2] = {across, all};
    comm_->allreduce_sum(sums, 2);
    return std::pair{sums[0] / sums[1], loss};
  };
  const auto [plain_across, plain_loss] = run(0.0);
  const auto [near_across, near_loss] = run(3.0);
  EXPECT_EQ(plain_loss, 0.0) << "without the loss it is not computed";
  EXPECT_GT(near_loss, 0.0);
  EXPECT_LT(near_across, plain_across - 0.05)
      << "across nodes: plain " << plain_across << ", with the loss " << near_across;
}

TEST_F(TrainTest, DenseGradientsMatchFiniteDifferences) {
  // Aux losses off: evaluate() reports the cross-entropy only.
  TrainConfig cfg = tiny("qwen2_moe", R"(, "aux_loss_coef": 0, "z_loss_coef": 0)");
  Trainer t(cfg, *comm_);
  run_steps(t, 5);  // away from the symmetric start
  CharLm& m = t.model();
  const std::int64_t B = 32, C = cfg.context;
  const auto pos = sample_positions(t.corpus(), C, 99, 0, comm_->rank(), B);
  std::vector<std::int32_t> ctx(B * C), tgt(B);
  gather_examples(t.corpus(), pos.data(), B, C, ctx.data(), tgt.data());
  const double global = static_cast<double>(B * comm_->size());
  m.zero_grad();
  m.forward_backward(*comm_, ctx.data(), tgt.data(), B, static_cast<float>(1.0 / global));
  allreduce_replicated_grads(*comm_, m.parameter_ptrs());
  const auto loss = [&] {
    double s = m.evaluate(*comm_, ctx.data(), tgt.data(), B, false).loss_sum;
    comm_->allreduce_sum(&s, 1);
    return s / global;
  };
  for (const std::string name : {"embed.weight", "in_proj.weight", "in_proj.bias", "blocks.0.norm.weight",
                                 "blocks.1.norm.weight", "final_norm.weight", "lm_head.weight", "lm_head.bias"}) {
    Parameter* p = nullptr;
    for (const auto& q : m.parameters())
      if (q.name == name) p = q.param;
    ASSERT_NE(p, nullptr) << name;
    // The entry with the largest gradient (the same on every rank).
    const auto it =
        std::max_element(p->grad.begin(), p->grad.end(), [](float a, float b) { return std::fabs(a) < std::fabs(b); });
    const std::size_t i = static_cast<std::size_t>(it - p->grad.begin());
    const double analytic = p->grad[i], h = 1e-3;
    const float saved = p->value[i];
    const double mid = loss();
    p->value[i] = saved + static_cast<float>(h);
    const double up = loss();
    p->value[i] = saved - static_cast<float>(h);
    const double down = loss();
    p->value[i] = saved;
    // NOTE: top-k routing makes the loss piecewise smooth: a perturbation
    // that flips some token's expert choice breaks one side's difference, so
    // the closest of the central and one-sided estimates is compared.
    double err = std::fabs(analytic - (up - down) / (2 * h));
    err = std::min(err, std::fabs(analytic - (up - mid) / h));
    err = std::min(err, std::fabs(analytic - (mid - down) / h));
    EXPECT_LE(err, 0.02 * std::fabs(analytic) + 1e-5) << name << "[" << i << "]: analytic " << analytic
                                                      << ", differences " << (up - mid) / h << ", " << (mid - down) / h;
  }
}

}  // namespace
