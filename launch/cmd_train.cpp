#include <cstdio>

#include "framework/config.h"
#include "framework/error.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "launch/trainer.h"
#include "parallel/comm.h"

namespace moe {

int cmd_train(int argc, char** argv) {
  Args a(argc, argv, {"config", "set..."}, {});
  if (a.help()) {
    puts("usage: moe train --config FILE.yaml [--set key=value]...\n"
         "\n"
         "Trains the model described by the config (docs/cli.md lists every key). Resumes from the newest\n"
         "committed checkpoint in <run.out_dir>/checkpoints unless checkpoint.resume says otherwise.\n"
         "Run under mpirun for data parallelism: mpirun -np 4 moe train --config ...\n"
         "SIGTERM, SIGINT or SIGUSR1: save a checkpoint at the next step boundary and exit; so do\n"
         "train.stop_after (steps) and train.time_limit (minutes), running again continues the run.\n"
         "checkpoint.init_from PATH starts from a checkpoint's weights (fresh optimizer, step 0).\n"
         "\n"
         "  --config FILE   YAML config (required)\n"
         "  --set K=V       override one key, e.g. --set train.steps=100 (repeatable)");
    return 0;
  }
  if (!a.positional().empty()) throw error("moe train: unexpected argument '", a.positional()[0], "' (see --help)");
  Config cfg = load_config(a.required("config"), a.all("set"));
  Comm comm(nullptr, nullptr);
  if (comm.size() == 1) return train(cfg, comm);
  // With several ranks, one rank's failure must end the whole job now, with its message, instead
  // of leaving the others waiting in a collective.
  try {
    return train(cfg, comm);
  } catch (const Error& e) {
    comm.abort(e.what(), 2);
  } catch (const std::exception& e) {
    comm.abort(std::string("internal error: ") + e.what(), 3);
  }
}

}  // namespace moe
