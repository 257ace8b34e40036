#!/usr/bin/env bash
# Crash safety: kill -9 the trainer at random moments (during start-up, between steps, and while
# a checkpoint is being written), restart the same command each time, and the finished run must equal a run that was
# never interrupted, bit for bit: same state.h5 bytes (parameters and AdamW moments), same exported
# weights, same eval loss, and a metrics.jsonl with every step exactly once and the same losses.
# One process (5 kills), then `mpirun -np 2` with FSDP and expert parallelism (10 kills; kill -9 of one
# rank ends the job; each rank writes its own shards of the checkpoint). Saves every 3 steps, so
# kills often land in or near a save. Usage: kill_resume.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"

python3 - "$MOE" "$SRC" "$TMP" <<'PY'
import filecmp, json, os, random, re, signal, subprocess, sys, time

moe, src, tmp = sys.argv[1:]
rng = random.Random(int(os.environ.get("KILL_SEED", "0")) or None)
seed_used = rng.randrange(1 << 30)
rng.seed(seed_used)
print(f"kill_resume: seed {seed_used} (KILL_SEED={seed_used} replays the kill times)", flush=True)
STEPS = 60
STEP_LINE = re.compile(r"step\s+(\d+)/")

def train_cmd(out, mpi):
    cmd = [moe, "train", "--config", f"{src}/configs/tiny.yaml", "--set", f"data.path={tmp}/data",
           "--set", f"run.out_dir={out}", "--set", f"train.steps={STEPS}", "--set", "train.eval_every=9",
           "--set", "checkpoint.every=3", "--set", "checkpoint.keep_last=2", "--set", "train.log_every=1"]
    if mpi:
        cmd = ["mpirun", "-np", "2"] + cmd + ["--set", "train.micro_batch=2", "--set", "parallel.ep=2"]
    return cmd

def descendants(pid):
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out

def exe_name(pid):
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""

def kill9(proc, mpi):
    if not mpi:
        proc.kill()
        return
    # One rank dies, as when its node fails; mpirun then ends the job.
    ranks = [p for p in descendants(proc.pid) if exe_name(p) == os.path.basename(moe)]
    if ranks:
        try:
            os.kill(rng.choice(ranks), signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        for p in descendants(proc.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()

def tmp_entries(ckpt_dir):
    """Every *.tmp entry (a save in progress or abandoned) as (name, inode, ctime): a folder that a
    new save recreates under an old name counts as new."""
    out = set()
    try:
        names = os.listdir(ckpt_dir)
    except FileNotFoundError:
        return out
    for n in names:
        if n.endswith(".tmp"):
            try:
                st = os.lstat(f"{ckpt_dir}/{n}")
                out.add((n, st.st_ino, st.st_ctime_ns))
            except FileNotFoundError:
                pass
    return out

def latest_step(log, start):
    """The highest "step N/..." the log shows after byte `start` (0 if none)."""
    with open(log) as f:
        f.seek(start)
        steps = [int(m.group(1)) for m in map(STEP_LINE.match, f) if m]
    return max(steps, default=0)

def run(out, mpi, log):
    with open(log, "a") as f:
        return subprocess.Popen(train_cmd(out, mpi), stdout=f, stderr=subprocess.STDOUT)

def reference(out, mpi):
    """Runs uninterrupted; returns (seconds to the first logged step, seconds per step after it)."""
    log = f"{out}.log"
    t0, first = time.time(), None
    p = run(out, mpi, log)
    while p.poll() is None:
        if first is None and latest_step(log, 0) > 0:
            first = time.time() - t0
        time.sleep(0.002)
    if p.returncode != 0:
        sys.exit(f"FAIL: uninterrupted run exited {p.returncode}:\n" + open(log).read())
    total = time.time() - t0
    first = first or total
    return first, (total - first) / STEPS

def killed_run(out, mpi, kills, startup, step_s):
    """Kills the run `kills` times, then lets it finish; returns how many kills hit a save in progress.
    Each round has a target step, increasing over the rounds and spread over the run; the moment
    rotates between: a random time in the first step after the target, as soon as a save starts
    writing after the target, and a random time during start-up (no target)."""
    ckpt_dir, log = f"{out}/checkpoints", f"{out}.log"
    targets = sorted(rng.sample(range(2, STEPS - 10), kills))  # room for a save after each target
    mid_save = 0
    for i, target in enumerate(targets):
        stale = tmp_entries(ckpt_dir)
        start = os.path.getsize(log) if os.path.exists(log) else 0
        p = run(out, mpi, log)
        mode = ("step", "save", "start-up")[i % 3]
        deadline = time.time() + 60
        alive = lambda: p.poll() is None and time.time() < deadline
        if mode == "start-up":
            # Before the first step: a random part of the reference run's start-up, cut short when
            # this run (faster to start on a machine less loaded than then) logs a step.
            until = time.time() + rng.uniform(0.1, 1.0) * startup
            while time.time() < until and latest_step(log, start) == 0 and alive():
                time.sleep(0.002)
        else:
            while latest_step(log, start) < target and alive():
                time.sleep(0.001)
            if mode == "step":
                time.sleep(rng.uniform(0, step_s))
            else:
                # A save's folder lives for milliseconds; a poller starved by a loaded machine can
                # miss it. After two save intervals without one, kill anyway (a step kill), so the
                # run never ends before its kill.
                # Never later than a few steps before the end: a kill after the final save would
                # leave the next round nothing to run.
                polls, give_up = 0, min(target + 6, STEPS - 4)
                while not (tmp_entries(ckpt_dir) - stale) and alive():
                    polls += 1
                    if polls % 50 == 0 and latest_step(log, start) > give_up:
                        break
        if p.poll() is not None:
            sys.exit(f"FAIL: the run ended before kill {i + 1} (exit {p.returncode}):\n" + open(log).read()[-3000:])
        kill9(p, mpi)
        p.wait()
        new = sorted(n for n, _, _ in tmp_entries(ckpt_dir) - stale)
        mid_save += bool(new)
        print(f"  kill {i + 1} ({mode}{'' if mode == 'start-up' else ' ' + str(target)}"
              f"{', mpirun -np 2' if mpi else ''}): reached step {latest_step(log, start)}, "
              f"{'during a save, left ' + ', '.join(new) if new else 'no save in progress'}", flush=True)
    p = run(out, mpi, log)
    if p.wait() != 0:
        sys.exit(f"FAIL: the final restart exited {p.returncode}:\n" + open(log).read()[-3000:])
    return mid_save

def same(ref, out, mpi):
    a, b = f"{ref}/checkpoints/latest", f"{out}/checkpoints/latest"
    # state.h5 holds no timestamps: equal state, equal bytes (parameters and both moments).
    if not filecmp.cmp(f"{a}/state.h5", f"{b}/state.h5", shallow=False):
        sys.exit(f"FAIL: {b}/state.h5 differs from the uninterrupted run's")
    for run_dir in (ref, out):
        subprocess.run([moe, "export", "--checkpoint", f"{run_dir}/checkpoints/latest", "--format", "safetensors",
                        "--output", f"{run_dir}/hf", "--dtype", "f32"], check=True, stdout=subprocess.DEVNULL)
    if not filecmp.cmp(f"{ref}/hf/model.safetensors", f"{out}/hf/model.safetensors", shallow=False):
        sys.exit("FAIL: exported weights differ")
    ev = [json.loads(subprocess.run([moe, "eval", "--checkpoint", c, "--data", f"{tmp}/data", "--json"], check=True,
                                    capture_output=True, text=True).stdout) for c in (a, b)]
    if ev[0]["step"] != STEPS or ev[0]["step"] != ev[1]["step"] or ev[0]["loss"] != ev[1]["loss"]:
        sys.exit(f"FAIL: eval differs: {ev}")
    # metrics.jsonl: every step once, in order, with the uninterrupted run's losses.
    rows = [[json.loads(l) for l in open(f"{d}/metrics.jsonl")] for d in (ref, out)]
    train = [[(r["step"], r["loss"]) for r in rs if "loss" in r] for rs in rows]
    evals = [[(r["step"], r["val_loss"]) for r in rs if "val_loss" in r] for rs in rows]
    if [s for s, _ in train[1]] != list(range(1, STEPS + 1)) or train[0] != train[1] or evals[0] != evals[1]:
        sys.exit(f"FAIL: metrics.jsonl of the killed run is not the uninterrupted history:\n{train[1]}\n{evals[1]}")

total_kills = mid_save = 0
for mpi, kills in ((False, 5), (True, 10)):
    ref, out = f"{tmp}/ref{int(mpi)}", f"{tmp}/killed{int(mpi)}"
    startup, step_s = reference(ref, mpi)
    mid_save += killed_run(out, mpi, kills, startup, step_s)
    total_kills += kills
    same(ref, out, mpi)
    print(f"ok: {'mpirun -np 2' if mpi else '1 process'}: {kills} kills, final state bitwise equal", flush=True)
if mid_save == 0:
    sys.exit("FAIL: no kill landed during a save (the watcher never saw a .tmp folder)")
print(f"ok: {total_kills} kill -9s, {mid_save} of them during a save")
PY
