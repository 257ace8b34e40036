"""Per-step agreement of training runs with a reference run, from their metrics.jsonl.

Every layout of the same global batch must train the same model to float round-off: the same
logged steps, and loss, grad norm, validation loss and aux loss within a relative tolerance.

As a module (the test scripts' Python): load(run_dir) and worst_difference(ref, rows, name).
As a command: same_losses.py REF_DIR RUN_DIR... prints each run's worst difference and exits 1 on
the first disagreement.
"""
import json
import os
import sys

KEYS = ("loss", "grad_norm", "val_loss", "aux_loss")


def load(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def worst_difference(ref, rows, name, tolerance=1e-5):
    """The largest relative difference over the steps and keys; AssertionError past the tolerance."""
    assert len(rows) == len(ref), (name, len(rows), len(ref))
    worst = 0.0
    for a, b in zip(ref, rows):
        assert a["step"] == b["step"], (name, a["step"], b["step"])
        for key in KEYS:
            if key in a:
                rel = abs(a[key] - b[key]) / max(abs(a[key]), 1e-12)
                assert rel <= tolerance, (name, a["step"], key, a[key], b[key])
                worst = max(worst, rel)
    return worst


if __name__ == "__main__":
    reference = load(sys.argv[1])
    for run in sys.argv[2:]:
        name = os.path.basename(run)
        try:
            worst = worst_difference(reference, load(run), name)
        except AssertionError as e:
            print(f"{name}: differs from {os.path.basename(sys.argv[1])}: {e}")
            sys.exit(1)
        print(f"{name}: {len(reference)} rows, worst relative loss/grad-norm difference from one process {worst:.2e}")
