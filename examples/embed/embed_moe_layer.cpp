// One MoE layer of a Hugging Face checkpoint, expert-parallel over the MPI
// job, inside a program of its own: what a training or serving loop does
// with Switchyard as a library. Each rank takes its contiguous share of the
// tokens of X.npy, runs the layer forward (and, with G.npy, backward), and
// rank 0 writes the whole output (and dL/dx) as .npy files.
//
//   mpirun -np 2 embed_moe_layer MODEL_DIR LAYER X.npy Y.npy [G.npy DX.npy]
#include <mpi.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "switchyard/comm/finalize.hpp"
#include "switchyard/comm/gather.hpp"
#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/formats/checkpoint.hpp"
#include "switchyard/formats/model_config.hpp"
#include "switchyard/formats/moe_checkpoint.hpp"
#include "switchyard/layers/moe_layer.hpp"
#include "switchyard/runtime/npy.hpp"
#include "switchyard/runtime/partition.hpp"

namespace sy = switchyard;

namespace {

// This rank's rows of an .npy matrix (contiguous blocks over the ranks).
std::vector<float> my_rows(const std::string& path, const sy::BlockPartition& tokens, int rank, std::int64_t* cols) {
  const sy::NpyMatrix m(path);
  *cols = m.cols();
  const float* first = m.data() + tokens.first(rank) * m.cols();
  return std::vector<float>(first, first + tokens.count(rank) * m.cols());
}

void run(int argc, char** argv) {
  sy::comm::MpiCommunicator comm(MPI_COMM_WORLD);
  const int R = comm.size(), me = comm.rank();
  const std::string model = argv[1], x_path = argv[3], y_path = argv[4];
  const std::int64_t layer_index = std::stoll(argv[2]);
  const bool backward = argc == 7;

  const sy::formats::ModelConfig config = sy::formats::load_model_config(model);
  sy::formats::Checkpoint ckpt(model);
  const sy::layers::ExpertPlacement placement(config.num_experts, R);
  sy::layers::MoeLayer layer(sy::formats::moe_config(config),
                             sy::formats::load_moe_weights(ckpt, config, layer_index, placement.local_experts(me)),
                             placement, me, sy::layers::MoeLayerOptions{.experts = {.inference_only = !backward}});

  std::int64_t H = 0;
  const sy::BlockPartition tokens(sy::NpyMatrix(x_path).rows(), R);
  const std::vector<float> x = my_rows(x_path, tokens, me, &H);
  const std::int64_t T = tokens.count(me);
  std::vector<float> y(x.size()), dx(x.size());
  sy::layers::MoeForwardContext context;
  layer.initialize(comm, {.max_tokens = T, .chunks = 1, .training = backward}, &context);
  layer.run(comm, sy::layers::MoeForwardArguments{
                      .x = x.data(), .num_tokens = T, .y = y.data(), .context = backward ? &context : nullptr});
  if (backward) {
    std::int64_t G = 0;
    const std::vector<float> g = my_rows(argv[5], tokens, me, &G);
    layer.run(comm, sy::layers::MoeBackwardArguments{.context = &context, .grad_y = g.data(), .grad_x = dx.data()});
  }
  const std::vector<float> all_y = sy::comm::gather_rows_to_root(comm, y, 0);
  const std::vector<float> all_dx = sy::comm::gather_rows_to_root(comm, dx, 0);
  if (me == 0) {
    sy::write_npy(y_path, all_y.data(), static_cast<std::int64_t>(all_y.size()) / H, H);
    if (backward) sy::write_npy(argv[6], all_dx.data(), static_cast<std::int64_t>(all_dx.size()) / H, H);
    std::printf("embed_moe_layer: layer %lld of %s on %d ranks: %zu tokens%s\n", static_cast<long long>(layer_index),
                model.c_str(), R, all_y.size() / static_cast<std::size_t>(H), backward ? ", forward and backward" : "");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && argc != 7) {
    std::fprintf(stderr, "usage: embed_moe_layer MODEL_DIR LAYER X.npy Y.npy [G.npy DX.npy]\n");
    return 2;
  }
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  int code = 0;
  try {
    run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "embed_moe_layer: error: %s\n", e.what());
    code = 1;
  }
  if (code != 0) MPI_Abort(MPI_COMM_WORLD, code);
  sy::comm::finalize_mpi();
  return code;
}
