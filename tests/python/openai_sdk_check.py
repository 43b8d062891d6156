"""Drives a running ferrite server with the official OpenAI Python SDK.

Usage: python openai_sdk_check.py BASE_URL MODEL_ID

Checks chat completions (plain and streamed), text completions (plain and streamed),
the model list, and that errors surface as the SDK's own exception types. Plain
`assert`s; exits non-zero on the first failure. Prints each check as it passes.
"""

import sys

import openai


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="none", max_retries=0, timeout=120)
    print(f"openai {openai.__version__} against {base_url}, model {model}")

    messages = [{"role": "user", "content": "What is the capital of France?"}]

    # Chat, non-streaming.
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=6, temperature=0)
    assert r.object == "chat.completion", r
    assert r.model == model, r.model
    assert len(r.choices) == 1 and r.choices[0].index == 0, r.choices
    msg = r.choices[0].message
    assert msg.role == "assistant", msg
    assert isinstance(msg.content, str) and msg.content, msg
    assert r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason
    u = r.usage
    assert u.prompt_tokens > 0 and u.prompt_tokens + u.completion_tokens == u.total_tokens, u
    print(f"ok chat.completions.create: {msg.content!r} ({u.completion_tokens} tokens)")

    # Chat, streamed, with the usage chunk.
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas, roles, finish, usage, ids = [], [], None, None, set()
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk", chunk
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == [], chunk
            continue
        choice = chunk.choices[0]
        if choice.delta.role:
            roles.append(choice.delta.role)
        if choice.delta.content:
            deltas.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
    text = "".join(deltas)
    assert len(ids) == 1, ids
    assert roles == ["assistant"], roles
    assert text == msg.content, (text, msg.content)
    assert finish == r.choices[0].finish_reason, finish
    assert usage is not None and usage.completion_tokens == u.completion_tokens, usage
    print(f"ok chat.completions.create(stream=True): {len(deltas)} deltas equal the plain answer")

    # Text completions, plain and streamed.
    c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert c.object == "text_completion", c
    assert isinstance(c.choices[0].text, str) and c.choices[0].text, c
    assert c.usage.prompt_tokens + c.usage.completion_tokens == c.usage.total_tokens, c.usage
    parts = [
        ch.choices[0].text
        for ch in client.completions.create(
            model=model, prompt="The capital of France is", max_tokens=4, temperature=0, stream=True
        )
        if ch.choices
    ]
    assert "".join(parts) == c.choices[0].text, (parts, c.choices[0].text)
    print(f"ok completions.create (plain and stream): {c.choices[0].text!r}")

    # Models.
    ids = [m.id for m in client.models.list()]
    assert model in ids, ids
    assert client.models.retrieve(model).id == model
    print(f"ok models.list: {ids}")

    # Errors become the SDK's exception types.
    try:
        client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=1)
    except openai.NotFoundError as e:
        assert e.status_code == 404, e.status_code
        assert e.code == "model_not_found", e.code
        assert "no-such-model" in e.message, e.message
        print(f"ok unknown model -> openai.NotFoundError: {e.message}")
    else:
        raise AssertionError("unknown model did not raise openai.NotFoundError")

    try:
        client.chat.completions.create(model=model, messages=messages, max_tokens=1, temperature=2.5)
    except openai.BadRequestError as e:
        assert e.status_code == 400, e.status_code
        assert e.param == "temperature", e.param
        print(f"ok temperature 2.5 -> openai.BadRequestError (param {e.param})")
    else:
        raise AssertionError("temperature 2.5 did not raise openai.BadRequestError")

    print("all OpenAI SDK checks passed")


if __name__ == "__main__":
    main()
