"""Drives a running ferrite server with the official `ollama` Python client, unchanged.

Usage: python ollama_client_check.py BASE_URL MODEL ALIAS ENCODER

Checks list, show, ps, chat and generate with and without streaming, embed (and the
older embeddings), an alias with a tag, and that an unknown model raises the client's
own `ResponseError` with status 404. Plain `assert`s; exits non-zero on the first failure.
"""

import json
import sys

import ollama


def main() -> None:
    base_url, model, alias, encoder = sys.argv[1:5]
    client = ollama.Client(host=base_url, timeout=120)
    opts = {"num_predict": 6, "temperature": 0, "seed": 1}

    names = [m.model for m in client.list().models]
    assert f"{model}:latest" in names and alias in names, names
    print(f"ok list: {names}")

    show = client.show(model)
    assert show.modelinfo["llama.context_length"] > 0, show
    assert "completion" in (show.capabilities or []), show
    print(f"ok show: {show.details.family} {show.details.quantization_level}")

    running = client.ps().models
    assert any(m.model == f"{model}:latest" for m in running), running
    print(f"ok ps: {[m.model for m in running]}")

    r = client.generate(model=model, prompt="What is the capital of France?", options=opts)
    assert r.done and r.done_reason in ("stop", "length"), r
    assert isinstance(r.response, str) and r.response, r
    assert r.eval_count and r.prompt_eval_count and r.total_duration, r
    print(f"ok generate: {r.response!r} ({r.eval_count} tokens)")

    parts = list(client.generate(model=alias, prompt="Name a color.", system="Be brief.",
                                 stream=True, options=opts))
    assert len(parts) >= 2 and parts[-1].done and not parts[0].done, parts
    text = "".join(p.response for p in parts)
    assert text, parts
    print(f"ok generate stream via alias {alias}: {text!r} in {len(parts)} parts")

    messages = [{"role": "user", "content": "Say hello."}]
    r = client.chat(model=f"{model}:latest", messages=messages, options=opts)
    assert r.message.role == "assistant" and r.message.content, r
    assert r.done and r.eval_count, r
    print(f"ok chat: {r.message.content!r}")

    parts = list(client.chat(model=model, messages=messages, stream=True, options=opts))
    assert parts[-1].done and len(parts) >= 2, parts
    streamed = "".join(p.message.content for p in parts)
    assert streamed == r.message.content, (streamed, r.message.content)
    print(f"ok chat stream: {streamed!r} in {len(parts)} parts (same text as unstreamed)")

    e = client.embed(model=encoder, input=["first text", "second text"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) == 384, len(e.embeddings)
    norm = sum(x * x for x in e.embeddings[0]) ** 0.5
    assert abs(norm - 1.0) < 1e-3, norm
    old = client.embeddings(model=encoder, prompt="first text")
    assert max(abs(a - b) for a, b in zip(old.embedding, e.embeddings[0])) < 1e-4
    print(f"ok embed: 2 x {len(e.embeddings[0])}, norm {norm:.4f}; embeddings agrees")

    try:
        client.chat(model="no-such-model:7b", messages=messages)
    except ollama.ResponseError as err:
        assert err.status_code == 404, err.status_code
        assert "no-such-model:7b" in err.error and "not found" in err.error, err.error
        print(f"ok unknown model: ResponseError {err.status_code} {err.error!r}")
    else:
        raise AssertionError("an unknown model did not raise")

    # Structured output: `format` as a JSON schema (what `format=Model.model_json_schema()`
    # sends), and a bad one as the client's own error.
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
              "sunny": {"type": "boolean"}}, "required": ["city", "sunny"], "additionalProperties": False}
    r = client.chat(model=model, messages=messages, format=schema, options={"num_predict": 60, "temperature": 0})
    obj = json.loads(r.message.content)
    assert set(obj) == {"city", "sunny"} and isinstance(obj["sunny"], bool), obj
    print(f"ok chat format=schema: {r.message.content!r}")
    try:
        client.generate(model=model, prompt="x", format={"type": "object", "properties": {"a": {"$ref": "#/x"}}})
    except ollama.ResponseError as err:
        assert err.status_code == 400 and "format" in err.error, err
        print(f"ok bad format: ResponseError {err.status_code}")
    else:
        raise AssertionError("a bad format did not raise")

    print("all ollama Python client checks passed")


if __name__ == "__main__":
    main()
