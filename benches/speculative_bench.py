#!/usr/bin/env python3
"""One stream, speculative decoding on vs off, on one running ferrite server.

Sends a document-summary chat request (a document, then an instruction to summarise it
quoting its key sentences) with greedy decoding, alternating `"speculative": true` and
`false` REPS times each, and prints decode tok/s (completion tokens over the time after
the first token), the acceptance rate (from /metrics deltas) and whether both outputs
were identical. Standard library only.

Usage: speculative_bench.py BASE_URL DOCUMENT_FILE [REPS] [MAX_TOKENS]
"""
import json
import sys
import time
import urllib.request


def post_stream(url, body):
    """Streams a chat completion; returns (text, tokens, ttft_s, total_s)."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    t0 = time.perf_counter()
    first = None
    text = []
    tokens = 0
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            ev = json.loads(line[5:])
            if ev.get("usage"):
                tokens = ev["usage"]["completion_tokens"]
            for c in ev.get("choices", []):
                piece = c.get("delta", {}).get("content")
                if piece:
                    if first is None:
                        first = time.perf_counter()
                    text.append(piece)
    end = time.perf_counter()
    return "".join(text), tokens, (first or end) - t0, end - t0


def counters(base):
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    out = {"draft": 0.0, "accepted": 0.0}
    for line in text.splitlines():
        for key, name in (("draft", "ferrite_speculative_draft_tokens_total"),
                          ("accepted", "ferrite_speculative_accepted_tokens_total")):
            if line.startswith(name):
                out[key] += float(line.rsplit(" ", 1)[1])
    return out


def main():
    base, doc_file = sys.argv[1], sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    max_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    doc = open(doc_file).read()
    prompt = (f"Here is a document:\n\n{doc}\n\nSummarise this document in a few "
              "paragraphs, quoting its key sentences word for word.")
    url = base + "/v1/chat/completions"
    models = json.load(urllib.request.urlopen(base + "/v1/models", timeout=10))
    model = next(m["id"] for m in models["data"] if m.get("kind", "llm") == "llm")
    results = {True: [], False: []}
    outputs = {}
    for i in range(reps * 2 + 1):
        spec = i % 2 == 1 if i else True  # a warm-up run first (discarded)
        body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "max_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True}, "speculative": spec}
        before = counters(base)
        text, tokens, ttft, total = post_stream(url, body)
        after = counters(base)
        if i == 0:
            continue
        outputs.setdefault(spec, text)
        decode_s = max(total - ttft, 1e-9)
        results[spec].append({
            "tokens": tokens, "ttft_s": ttft, "decode_tok_s": (tokens - 1) / decode_s,
            "draft": after["draft"] - before["draft"],
            "accepted": after["accepted"] - before["accepted"]})
    rows = []
    for spec in (False, True):
        r = results[spec]
        med = sorted(x["decode_tok_s"] for x in r)[len(r) // 2]
        draft = sum(x["draft"] for x in r)
        acc = sum(x["accepted"] for x in r)
        rows.append((spec, med, r[0]["tokens"], draft, acc))
    print(f"prompt tokens ~{len(prompt) // 4}, {reps} runs each, greedy, max_tokens {max_tokens}")
    print(f"{'speculative':>12} {'decode tok/s (median)':>22} {'tokens':>7} {'drafted':>8} {'accepted':>9} {'rate':>6}")
    for spec, med, tokens, draft, acc in rows:
        rate = f"{acc / draft:.2f}" if draft else "-"
        print(f"{str(spec).lower():>12} {med:>22.1f} {tokens:>7} {int(draft):>8} {int(acc):>9} {rate:>6}")
    print(f"speed-up {rows[1][1] / rows[0][1]:.2f}x; outputs identical: {outputs[True] == outputs[False]}")
    json.dump({"off": results[False], "on": results[True],
               "identical": outputs[True] == outputs[False]},
              open(sys.argv[5], "w") if len(sys.argv) > 5 else sys.stderr, indent=1)


if __name__ == "__main__":
    main()
