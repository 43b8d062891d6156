#!/usr/bin/env python3
"""sentence-transformers (torch, CPU) against a running ferrite on the same model, documents and
threads, side by side (issue 15). Driven by benches/run_st_compare.sh, which makes the venv and
starts ferrite; direct use:

    python3 benches/st_compare.py --url http://127.0.0.1:PORT --model-dir DIR [--threads 2]

Workloads (each timed --reps times after one warm-up, median reported):
  rerank-20 / rerank-50  one query and 20 / 50 documents of ~77 tokens. The default encoder is an
                         embedding model, so rerank is what ferrite's /v1/rerank does with it and
                         what a sentence-transformers rerank service does with it: embed the query
                         and every document (one batch), rank by cosine. ferrite: one POST
                         /v1/rerank; sentence-transformers: model.encode([query] + docs) + cosine.
  embeddings             --texts texts of ~77 tokens, in requests / encode() batches of --batch.
Also checked: whether both put the same 10 documents first in the same order, the largest
score difference (ferrite's relevance_score is the cosine here), and the embeddings' worst cosine
between the two (ferrite's reduced precision against torch f32).
"""

import argparse
import json
import statistics
import time
import urllib.request

WORDS = ("river mountain engine battery contract protein satellite harbor algorithm vaccine "
         "orchestra glacier market language reactor forest telescope insurance bridge volcano "
         "pension router cathedral enzyme tariff monsoon lattice archive turbine estuary").split()


def document(seed, words):
    x = (seed * 0x9E3779B97F4A7C15 + 1) & (2**64 - 1)
    out = []
    for _ in range(words):
        x ^= (x << 13) & (2**64 - 1)
        x ^= x >> 7
        x ^= (x << 17) & (2**64 - 1)
        out.append(WORDS[x % len(WORDS)])
    return " ".join(out)


def post(url, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def timed(reps, f):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--model", default="all-MiniLM-L6-v2", help="the id ferrite serves")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--doc-tokens", type=int, default=77)
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json")
    args = ap.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    st = SentenceTransformer(args.model_dir, device="cpu")
    tok = st.tokenizer

    # Word count giving ~doc-tokens tokens (special tokens included) on average.
    words = args.doc_tokens
    while words > 1 and np.mean([len(tok(document(s, words))["input_ids"]) for s in range(20)]) > args.doc_tokens:
        words -= 1
    docs50 = [document(1000 + d, words) for d in range(50)]
    mean_tokens = float(np.mean([len(tok(d)["input_ids"]) for d in docs50]))
    query = "which documents talk about rivers, harbors and the market for turbines?"
    texts = [document(5000 + i, words) for i in range(args.texts)]

    def st_rerank(docs):
        e = st.encode([query] + docs, batch_size=max(64, len(docs) + 1), normalize_embeddings=True)
        scores = e[1:] @ e[0]
        return [int(i) for i in np.argsort(-scores, kind="stable")], scores

    def fe_rerank(docs):
        r = post(args.url, "/v1/rerank", {"model": args.model, "query": query, "documents": docs})
        scores = np.zeros(len(docs), dtype=np.float32)
        for x in r["results"]:
            scores[x["index"]] = x["relevance_score"]
        return [x["index"] for x in r["results"]], scores

    def st_embed():
        return st.encode(texts, batch_size=args.batch, normalize_embeddings=True)

    def fe_embed():
        out = []
        for i in range(0, len(texts), args.batch):
            r = post(args.url, "/v1/embeddings", {"model": args.model, "input": texts[i:i + args.batch]})
            out.extend(d["embedding"] for d in sorted(r["data"], key=lambda d: d["index"]))
        return np.array(out, dtype=np.float32)

    rows = []
    for n in (20, 50):
        docs = docs50[:n]
        (st_order, st_scores), (fe_order, fe_scores) = st_rerank(docs), fe_rerank(docs)
        top10 = st_order[:10] == fe_order[:10]
        score_err = float(np.max(np.abs(st_scores - fe_scores)))
        t_st = timed(args.reps, lambda: st_rerank(docs))
        t_fe = timed(args.reps, lambda: fe_rerank(docs))
        rows.append({"workload": f"rerank {n} docs", "st_ms": t_st * 1e3, "ferrite_ms": t_fe * 1e3,
                     "ratio": t_fe / t_st, "same_top10": top10, "max_score_diff": score_err})
    a, b = st_embed(), fe_embed()
    worst = float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
    t_st = timed(max(1, args.reps // 2), st_embed)
    t_fe = timed(max(1, args.reps // 2), fe_embed)
    rows.append({"workload": f"embeddings {args.texts} texts, batches of {args.batch}",
                 "st_ms": t_st * 1e3, "ferrite_ms": t_fe * 1e3, "ratio": t_fe / t_st,
                 "st_texts_s": args.texts / t_st, "ferrite_texts_s": args.texts / t_fe,
                 "worst_cosine_ferrite_vs_st": worst})

    print(f"\nmodel {args.model_dir}; {args.threads} threads (torch.set_num_threads, "
          f"RAYON_NUM_THREADS); documents ~{mean_tokens:.1f} tokens; median of {args.reps}")
    print(f"torch {torch.__version__}, sentence-transformers "
          f"{__import__('sentence_transformers').__version__}\n")
    print("| workload | sentence-transformers | ferrite | ferrite / ST | check |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "st_texts_s" in r:
            print(f"| {r['workload']} | {r['st_ms']:.1f} ms ({r['st_texts_s']:.0f} texts/s) | "
                  f"{r['ferrite_ms']:.1f} ms ({r['ferrite_texts_s']:.0f} texts/s) | {r['ratio']:.2f} | "
                  f"worst cosine to ST {r['worst_cosine_ferrite_vs_st']:.5f} |")
        else:
            print(f"| {r['workload']} | {r['st_ms']:.1f} ms | {r['ferrite_ms']:.1f} ms | {r['ratio']:.2f} | "
                  f"same top 10: {r['same_top10']}, largest score difference {r['max_score_diff']:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "doc_tokens_mean": mean_tokens, "threads": args.threads}, f, indent=2)


if __name__ == "__main__":
    main()
