#!/usr/bin/env python3
"""Streaming OpenAI chat load generator, standard library only (for machines with no
network and no pip): N concurrent clients send `POST /v1/chat/completions` with
`stream: true` until R requests are done, and report aggregate output tok/s, time to
first token and inter-token latency (p50/p99) as JSON and one summary line.

Each request asks for exactly `--max-tokens` tokens (`ignore_eos`), so throughput does
not depend on what random weights happen to say. Tokens are counted from the final
usage chunk (`stream_options.include_usage`), else from the content chunks.

Usage: loadgen.py --url http://127.0.0.1:8080 [--concurrency 8] [--requests 16]
                  [--max-tokens 64] [--prompt-words 400] [--json out.json]
"""

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    i = round((len(s) - 1) * p)
    return s[min(i, len(s) - 1)]


def model_id(url, timeout):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    conn.request("GET", "/v1/models")
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body["data"][0]["id"]


def one_request(url, body, timeout):
    """Sends one streaming request; returns a record of its timings."""
    u = urllib.parse.urlparse(url)
    rec = {"ttft": None, "gaps": [], "tokens": 0, "error": None}
    t0 = time.perf_counter()
    try:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            rec["error"] = f"HTTP {resp.status}: {resp.read()[:200]!r}"
            return rec
        last = None
        chunks = 0
        usage = None
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            msg = json.loads(data)
            if msg.get("usage"):
                usage = msg["usage"].get("completion_tokens")
            choices = msg.get("choices") or []
            if not choices or not (choices[0].get("delta") or {}).get("content"):
                continue
            now = time.perf_counter()
            if last is None:
                rec["ttft"] = now - t0
            else:
                rec["gaps"].append(now - last)
            last = now
            chunks += 1
        rec["tokens"] = usage if usage is not None else chunks
        conn.close()
    except Exception as e:  # a failed request is counted, not fatal
        rec["error"] = repr(e)
    return rec


def run(args):
    model = args.model or model_id(args.url, args.timeout)
    prompt = "Write a story about a lighthouse." + " the" * args.prompt_words
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "max_tokens": args.max_tokens,
        "ignore_eos": True,
    }
    for _ in range(args.warmup):
        one_request(args.url, body, args.timeout)
    records = []
    lock = threading.Lock()
    next_i = [0]

    def client():
        while True:
            with lock:
                if next_i[0] >= args.requests:
                    return
                next_i[0] += 1
            r = one_request(args.url, body, args.timeout)
            with lock:
                records.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in records if r["error"] is None]
    tokens = sum(r["tokens"] for r in ok)
    gaps = [g for r in ok for g in r["gaps"]]
    ttfts = [r["ttft"] for r in ok if r["ttft"] is not None]
    ms = lambda v: None if v is None else v * 1e3
    return {
        "model": model,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "prompt_words": args.prompt_words,
        "errors": len(records) - len(ok),
        "first_error": next((r["error"] for r in records if r["error"]), None),
        "wall_s": wall,
        "output_tokens": tokens,
        "agg_tok_s": tokens / wall if wall > 0 else None,
        "ttft_ms_p50": ms(percentile(ttfts, 0.5)),
        "ttft_ms_p99": ms(percentile(ttfts, 0.99)),
        "itl_ms_p50": ms(percentile(gaps, 0.5)),
        "itl_ms_p99": ms(percentile(gaps, 0.99)),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--model", help="model id (default: the first of /v1/models)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt-words", type=int, default=400)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--json", help="write the result here")
    args = p.parse_args()
    res = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    fmt = lambda v, d: "n/a" if v is None else f"{v:.{d}f}"
    print(f"concurrency {res['concurrency']}: {res['requests']} requests x {res['max_tokens']} tokens, "
          f"{res['errors']} errors; {fmt(res['agg_tok_s'], 1)} output tok/s, "
          f"TTFT p50 {fmt(res['ttft_ms_p50'], 1)} ms p99 {fmt(res['ttft_ms_p99'], 1)} ms, "
          f"ITL p50 {fmt(res['itl_ms_p50'], 2)} ms p99 {fmt(res['itl_ms_p99'], 2)} ms")
    if res["errors"]:
        print(f"first error: {res['first_error']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
