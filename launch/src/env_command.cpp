#include <cstdio>
#include <string>

#include "cli_runner.hpp"
#include "commands.hpp"
#include "switchyard/runtime/settings.hpp"

namespace switchyard::launch {

void run_env(comm::Communicator& comm) {
  collective_step(comm, [&] {
    const auto values = list_settings();
    if (comm.rank() != 0) return;
    for (const auto& v : values) {
      const std::string assignment = std::string(v.spec->name) + "=" + v.text;
      std::printf("%-32s %-11s %s (%s)\n", assignment.c_str(), v.source(), std::string(v.spec->doc).c_str(),
                  setting_allowed(*v.spec).c_str());
    }
  });
}

}  // namespace switchyard::launch
