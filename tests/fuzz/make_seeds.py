#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/) from files moe itself writes
and small hand-made ones, so every target starts from inputs its parser accepts.

usage: tests/fuzz/make_seeds.py <moe binary>     (from the project root; needs the shared data)
Multi-file inputs join their files with the part marker of fuzz_common.h.
"""
import hashlib, json, os, shutil, struct, subprocess, sys, tempfile

MARK = b"\n----8<----\n"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
SHAKESPEARE = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")


def put(target, name, data):
    os.makedirs(os.path.join(OUT, target), exist_ok=True)
    with open(os.path.join(OUT, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(path):
    with open(path, "rb") as f:
        return f.read()


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def main():
    moe = os.path.abspath(sys.argv[1])
    shutil.rmtree(OUT, ignore_errors=True)
    text = read(SHAKESPEARE)
    tmp = tempfile.mkdtemp()
    try:
        # config: the shipped configs, one with overrides.
        for name in ("tiny", "shakespeare", "bench-cpu"):
            put("config", name, read(os.path.join(ROOT, "configs", name + ".yaml")))
        put("config", "tiny-overrides", read(os.path.join(ROOT, "configs", "tiny.yaml")) + MARK +
            b"train.lr=3e-4\nmodel.n_layers=3\ntrain.precision=bf16\nrun.seed=7\n")

        # tokenizer.json: a small vocabulary moe trains, then a text to encode.
        corpus = os.path.join(tmp, "c.txt")
        with open(corpus, "wb") as f:
            f.write(text[:20000])
        tok = os.path.join(tmp, "tok.json")
        run(moe, "tokenizer", "train", "--input", corpus, "--vocab-size", "300", "--output", tok)
        put("tokenizer_json", "bpe300", read(tok) + MARK + text[:300])
        run(moe, "tokenizer", "train", "--input", corpus, "--vocab-size", "280", "--pre-tokenizer", "llama3",
            "--output", tok)
        put("tokenizer_json", "bpe280-llama3", read(tok) + MARK + "naïve café — ünïcödé 123".encode())

        # SentencePiece: the committed test models.
        sp = os.path.join(ROOT, "tests", "golden", "sentencepiece")
        sample = read(os.path.join(sp, "sample.txt"))[:300]
        for name in ("llama_bpe", "unigram", "suffix"):
            put("sentencepiece", name, read(os.path.join(sp, name + ".model")) + MARK + sample)

        # jsonl lines.
        for i, line in enumerate([b'{"text": "hello world"}', b'{"id": 3, "text": "a\\nb\\u00e9\\ud83d\\ude00"}',
                                  b'{"text": "x", "text": "last wins", "meta": {"a": [1, 2.5e3, null, true]}}',
                                  b'{"title": "no text field"}', b'  {"text":"\\"quoted\\" \\\\ \\/"}  ']):
            put("jsonl", "line%d" % i, line)

        # corpus files: options byte (fuzz_corpus.cpp) + contents.
        snippet = text[:600]
        jsonl = b"".join(json.dumps({"text": text[i:i + 80].decode()}).encode() + b"\n" for i in range(0, 400, 80))
        for mode, body, name in [(0, snippet, "txt"), (8 | 16, snippet, "split-pieces"), (4, jsonl, "jsonl"),
                                 (1 | 32, snippet, "txt-gz"), (2 | 32 | 16, snippet, "txt-zst-pieces"),
                                 (4 | 1 | 32, jsonl, "jsonl-gz"), (4 | 2 | 32, jsonl, "jsonl-zst")]:
            put("corpus", name, bytes([mode]) + body)

        # shards and Megatron pairs: what preprocess writes for a little text.
        for fmt in ("shards", "megatron"):
            out = os.path.join(tmp, "data-" + fmt)
            run(moe, "preprocess", "--input", corpus, "--tokenizer", "byte", "--output", out, "--format", fmt,
                "--val-fraction", "0.5")
            for split in ("train", "val"):
                d = os.path.join(out, split)
                stem = "data_text_document" if fmt == "megatron" else "shard-00000"
                bin_, idx = read(os.path.join(d, stem + ".bin"))[:1024], read(os.path.join(d, stem + ".idx"))
                # The .bin is cut to keep seeds small; the manifest then disagrees, which the
                # fuzzer learns to mend, and one seed keeps the whole pair.
                put("shards", fmt + "-" + split, read(os.path.join(d, "manifest.json")) + MARK + bin_ + MARK + idx)
                if fmt == "megatron":
                    put("megatron_idx", split, idx)
        small = os.path.join(tmp, "small.txt")
        with open(small, "wb") as f:
            f.write(text[:700])
        out = os.path.join(tmp, "data-small")
        run(moe, "preprocess", "--input", small, "--tokenizer", "byte", "--output", out, "--val-fraction", "0.5")
        d = os.path.join(out, "train")
        put("shards", "whole", read(os.path.join(d, "manifest.json")) + MARK + read(os.path.join(d, "shard-00000.bin")) +
            MARK + read(os.path.join(d, "shard-00000.idx")))

        # progress.json, as RunState::to_json writes it.
        state = {"version": 1, "fingerprint": hashlib.sha256(b"args").hexdigest(),
                 "stream": {"tokens": 4096, "doc_starts": 3, "shard_sha256": [hashlib.sha256(b"s").hexdigest()]},
                 "input": {"file": 0, "offset": 12000, "line": 40, "doc_line": 38, "mid_doc": True, "skip": 5,
                           "done": False},
                 "counts": {"documents": 3, "empty": 0, "bad_lines": 1, "invalid_docs": 0, "invalid_bytes": 0,
                            "text_bytes": 11000, "doc_tokens": 12, "doc_invalid": False,
                            "first_bad": "in.jsonl:7: not JSON"},
                 "val": None}
        put("progress_json", "running", json.dumps(state))
        state["input"]["done"] = True
        state["val"] = {"bytes": 3000, "sha256_bin": [hashlib.sha256(b"v").hexdigest()]}
        put("progress_json", "finishing", json.dumps(state))

        # checkpoint metadata: COMMITTED, meta.json, config.yaml, the target of `latest`.
        meta = {"expert_parallel": 1, "metrics_rows": 7, "optimizer_steps": 7, "sampler": {"next_step": 7, "seed": 1},
                "step": 7, "tokenizer": "byte", "tokenizer_hash": hashlib.sha256(b"byte").hexdigest(), "tokens": 70,
                "val_loss": 5.1, "val_loss_step": 7, "world_size": 1, "skip_samples": [[3, 5], [9, 10]]}
        config = read(os.path.join(ROOT, "configs", "tiny.yaml"))
        committed = {"files": {"config.yaml": hashlib.sha256(config).hexdigest(),
                               "meta.json": hashlib.sha256(json.dumps(meta).encode()).hexdigest(),
                               "state.h5": hashlib.sha256(b"h5").hexdigest()}, "step": 7}
        put("checkpoint_meta", "full", json.dumps(committed) + MARK.decode() + json.dumps(meta) + MARK.decode() +
            config.decode() + MARK.decode() + "step-00000007")
        put("checkpoint_meta", "dangling-latest", json.dumps(committed) + MARK.decode() + "{}" + MARK.decode() +
            "run: {}\n" + MARK.decode() + "step-00000009")

        # safetensors: one file, and an index over two.
        f32 = struct.pack("<6f", 1, -2, 3.5, 0, 1e-3, 7)
        bf16 = struct.pack("<4H", 0x3f80, 0xc000, 0x0000, 0x7f80)
        one = safetensors({"model.embed_tokens.weight": ("F32", [2, 3], f32), "lm_head.weight": ("BF16", [2, 2], bf16),
                           "q": ("I8", [3], b"\x01\xff\x02")}, {"format": "pt"})
        put("safetensors", "single", MARK + one)
        a = safetensors({"a.weight": ("F32", [6], f32)})
        b = safetensors({"b.weight": ("BF16", [4], bf16), "c": ("F8_E4M3", [2], b"\x38\xb8")})
        index = {"metadata": {"total_size": 38},
                 "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors",
                                "c": "model-00002-of-00002.safetensors"}}
        put("safetensors", "index", json.dumps(index).encode() + MARK + a + MARK + b)

        # HF config.json: what moe export writes for the tiny config (trained for two steps).
        run_dir = os.path.join(tmp, "run")
        run(moe, "train", "--config", os.path.join(ROOT, "configs", "tiny.yaml"), "--set", "data.path=" +
            os.path.join(tmp, "data-shards"), "--set", "train.steps=2", "--set", "run.out_dir=" + run_dir,
            "--set", "train.eval_every=0")
        export = os.path.join(tmp, "export")
        run(moe, "export", "--checkpoint", os.path.join(run_dir, "checkpoints"), "--format", "safetensors",
            "--output", export)
        put("hf_config", "tiny", read(os.path.join(export, "config.json")))

        # completion requests.
        for i, body in enumerate([{"prompt": "ROMEO:", "max_tokens": 20, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                                   "seed": 3, "stop": ["\n\n"], "stream": True},
                                  {"prompt": "x", "model": "m", "n": 1, "echo": False, "logit_bias": {},
                                   "stream_options": {"include_usage": True}},
                                  {"prompt": "", "max_tokens": 0, "temperature": 0}]):
            put("completion_request", "req%d" % i, json.dumps(body))
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
