// switchyard: the command-line launcher. Run it plainly or under mpirun/srun.
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>

#include "cli_runner.hpp"
#include "commands.hpp"
#include "switchyard/comm/finalize.hpp"
#include "switchyard/comm/mpi_communicator.hpp"
#include "switchyard/comm/watchdog.hpp"
#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/settings.hpp"

using namespace switchyard;

namespace {

// Reads every SWITCHYARD_* setting on every rank and agrees on the outcome
// (collective over MPI_COMM_WORLD): false, after the lowest failing rank has
// printed its one error line, if any rank found a bad value.
bool settings_valid_everywhere() {
  std::string message;
  try {
    load_settings();
  } catch (const std::exception& e) {
    message = e.what();
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int first_failing = message.empty() ? size : rank;
  MPI_Allreduce(MPI_IN_PLACE, &first_failing, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (first_failing == rank) launch::print_error(message);
  return first_failing == size;
}

// The subcommands and the options each one fills when it is parsed.
struct CommandLine {
  CLI::App app{"Switchyard: expert-parallel Mixture-of-Experts runtime"};
  launch::ForwardOptions forward;
  launch::InspectOptions inspect;
  launch::BenchOptions bench;
  launch::TrainOptions train;
  launch::TopoOptions topo;
  launch::PlacementCommandOptions placement;
  CLI::App* forward_cmd = nullptr;
  CLI::App* inspect_cmd = nullptr;
  CLI::App* bench_cmd = nullptr;
  CLI::App* train_cmd = nullptr;
  CLI::App* env_cmd = nullptr;
  CLI::App* topo_cmd = nullptr;
  CLI::App* placement_cmd = nullptr;
  double timeout_s = -1;  // --timeout of the multi-rank commands; < 0: SWITCHYARD_TIMEOUT_S

  CommandLine() {
    app.require_subcommand(1);
    forward_cmd = app.add_subcommand("forward", "Run one MoE layer of a checkpoint across ranks");
    launch::add_forward_options(*forward_cmd, &forward);
    inspect_cmd = app.add_subcommand("inspect", "Describe a checkpoint's MoE layers (no MPI needed)");
    launch::add_inspect_options(*inspect_cmd, &inspect);
    bench_cmd = app.add_subcommand("bench", "Time the MoE layer on synthetic data beside same-run limits");
    launch::add_bench_options(*bench_cmd, &bench);
    train_cmd = app.add_subcommand("train", "Train a small MoE character language model across ranks");
    launch::add_train_options(*train_cmd, &train);
    topo_cmd = app.add_subcommand("topo", "Show the nodes, each rank's cores and the measured cost of each link class");
    launch::add_topo_options(*topo_cmd, &topo);
    placement_cmd = app.add_subcommand("placement", "Plan which ranks hold each expert from routing statistics");
    launch::add_placement_options(*placement_cmd, &placement);
    env_cmd = app.add_subcommand("env", "List every SWITCHYARD_* setting, its value and where it came from");
    for (CLI::App* cmd : {forward_cmd, bench_cmd, train_cmd, topo_cmd}) {
      cmd->add_option("--timeout", timeout_s,
                      "Seconds a collective or exchange may go without completing before every rank ends the job, "
                      "naming the operation and the ranks it waited on (default: SWITCHYARD_TIMEOUT_S, 600)")
          ->check(CLI::Range(0.1, 1e6));
    }
  }
};

// Parses the command line on every rank and agrees on errors (collective):
// true when --help was asked for.
bool parse_command_line(comm::Communicator& comm, CLI::App& app, int argc, char** argv) {
  bool help = false;
  launch::collective_step(comm, [&] {
    if (argc > 1 && argv[1][0] != '-') {
      const std::string name = argv[1];
      check_arg(name == "forward" || name == "inspect" || name == "train" || name == "bench" || name == "env" ||
                    name == "topo" || name == "placement",
                "unknown subcommand '" + name +
                    "'; expected forward, inspect, train, bench, topo, placement or env (see --help)");
    }
    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
      help = true;
    } catch (const CLI::CallForAllHelp&) {
      help = true;
    } catch (const CLI::ParseError& e) {
      throw std::runtime_error(std::string(e.what()) + " (see --help)");
    }
  });
  return help;
}

// Rank 0 prints the help of the subcommand asked about, else of the program.
void print_help(comm::Communicator& comm, const CLI::App& app) {
  if (comm.rank() != 0) return;
  const CLI::App* shown = app.get_subcommands().empty() ? &app : app.get_subcommands().front();
  std::printf("%s", shown->help().c_str());
}

void run_subcommand(const CommandLine& cli, comm::Communicator& comm) {
  if (cli.forward_cmd->parsed()) {
    launch::run_forward(cli.forward, comm);
  } else if (cli.inspect_cmd->parsed()) {
    launch::run_inspect(cli.inspect, comm);
  } else if (cli.bench_cmd->parsed()) {
    launch::run_bench(cli.bench, comm);
  } else if (cli.train_cmd->parsed()) {
    launch::run_train(cli.train, comm);
  } else if (cli.topo_cmd->parsed()) {
    launch::run_topo(cli.topo, comm);
  } else if (cli.placement_cmd->parsed()) {
    launch::run_placement(cli.placement, comm);
  } else if (cli.env_cmd->parsed()) {
    launch::run_env(comm);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  // NOTE: SERIALIZED: the task-graph executor calls MPI from its one
  // communication thread while the main thread waits.
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  // NOTE: before the communicator, which reads settings and logs as it is
  // built: a bad value then ends every rank with one line, like any bad flag.
  if (!settings_valid_everywhere()) {
    comm::finalize_mpi();
    return 1;
  }
  comm::MpiCommunicator comm(MPI_COMM_WORLD);
  int exit_code = 0;
  try {
    CommandLine cli;
    if (parse_command_line(comm, cli.app, argc, argv)) {
      print_help(comm, cli.app);
    } else {
      if (cli.timeout_s > 0) comm::set_operation_timeout(cli.timeout_s);
      run_subcommand(cli, comm);
    }
  } catch (const launch::AgreedExit& e) {
    exit_code = e.code;
  } catch (const std::exception& e) {
    // NOTE: an error outside an agreed step may leave other ranks inside a
    // collective; only an abort is sure to end them.
    launch::report_error(e);
    comm.abort(1);
  }
  comm::finalize_mpi();
  return exit_code;
}
