#!/usr/bin/env python3
"""Makes the Shakespeare tasks for `moe eval --task` (data/tasks/*.jsonl), two from one sample of lines:

  shakespeare_next_line.jsonl  context: a few lines of a speech; choices: the line that really follows
                               (gold) and three random lines of similar length from other speeches.
  shakespeare_line_end.jsonl   the same, but the context runs on into the gold line, cut at a random
                               character in its first half; choices: the rest of that line and the
                               rests of the three other lines, cut at the same place.

Only text of the validation split is used (what `moe preprocess --tokenizer byte --val-fraction 0.05`
holds out), so the demo model never trained on it. The whole-line task needs more than the demo
model knows (it scores little above chance); finishing a line is within its reach. Python 3 standard
library only; the output is the same on every run (fixed seed).
Usage: scripts/make_shakespeare_task.py [--input F] [--output-dir D] [--items N] [--seed S]
"""
import argparse
import json
import math
import os
import random

CONTEXT_LINES = 4   # the speaker line counts when the context reaches the start of the speech
MIN_SPEECH_LINES = 2  # lines of the speech before the gold line
MIN_CHARS = 15      # shorter lines ("Ay.", "My lord?") say too little to tell apart
DISTRACTORS = 3
NEAREST = 12        # distractors are drawn from this many lines nearest in length to the gold line


def validation_text(data, val_fraction):
    """The whole lines of the validation split: the last ceil(F * tokens) tokens of the stream,
    where the byte tokenizer gives one token per byte plus the end-of-document token
    (data_pipeline/preprocess.cpp, finish())."""
    tokens = len(data) + 1
    cut = tokens - max(1, math.ceil(val_fraction * tokens))
    start = data.index(b"\n", cut - 1) + 1  # the first line that starts inside the split
    return data[start:].decode("utf-8")


def speeches(text):
    """Blocks separated by blank lines whose first line names the speaker ("NAME:")."""
    out = []
    for block in text.split("\n\n"):
        lines = [l for l in block.split("\n") if l]
        if len(lines) > 1 and lines[0].endswith(":"):
            out.append(lines)
    return out


def make_items(all_speeches, count, rng, line_end):
    targets = [(s, j) for s, lines in enumerate(all_speeches) for j in range(1 + MIN_SPEECH_LINES, len(lines))
               if len(lines[j]) >= MIN_CHARS]
    pool = sorted({(l, s) for s, lines in enumerate(all_speeches) for l in lines[1:] if len(l) >= MIN_CHARS})
    items = []
    for s, j in sorted(rng.sample(targets, min(count, len(targets)))):
        lines = all_speeches[s]
        gold = lines[j]
        others = sorted({l for l, t in pool if t != s and l != gold})
        tie = {l: rng.random() for l in others}  # equal lengths in random order, not alphabetical
        others = sorted(others, key=lambda l: (abs(len(l) - len(gold)), tie[l]))[:NEAREST]
        choices = [gold] + rng.sample(others, DISTRACTORS)
        context = "".join(l + "\n" for l in lines[max(0, j - CONTEXT_LINES):j])
        if line_end:
            cut = rng.randint(len(gold) // 4, len(gold) // 2)
            context += gold[:cut]
            choices = [c[cut:] for c in choices]
        gold = choices[0]
        rng.shuffle(choices)
        items.append({"context": context, "choices": [c + "\n" for c in choices], "gold": choices.index(gold)})
    return items


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--input", default="data/tinyshakespeare.txt")
    p.add_argument("--output-dir", default="data/tasks")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--seed", type=int, default=1337)
    a = p.parse_args()
    with open(a.input, "rb") as f:
        text = validation_text(f.read(), a.val_fraction)
    for name, line_end in (("shakespeare_next_line", False), ("shakespeare_line_end", True)):
        items = make_items(speeches(text), a.items, random.Random(a.seed), line_end)
        path = os.path.join(a.output_dir, name + ".jsonl")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for item in items:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
        print(f"{path}: {len(items)} items from {len(text)} characters of validation text")


if __name__ == "__main__":
    main()
