"""Structured outputs, tool calling and the Responses API through the official OpenAI
Python SDK, against a running ferrite server.

Usage: python structured_check.py BASE_URL MODEL_ID

Plain `assert`s; exits non-zero on the first failure; prints each check as it passes.
"""

import json
import sys

import openai
from pydantic import BaseModel


class City(BaseModel):
    name: str
    country: str
    population: int


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string", "maxLength": 40}},
            "required": ["tz"],
            "additionalProperties": False,
        },
    },
}


def check_weather_args(args: dict) -> None:
    assert set(args) == {"city", "unit"}, args
    assert isinstance(args["city"], str) and len(args["city"]) <= 40, args
    assert args["unit"] in ("celsius", "fahrenheit"), args


def structured(client, model) -> None:
    msgs = [{"role": "user", "content": "Describe Paris as JSON: name, country, population."}]
    r = client.chat.completions.parse(
        model=model, messages=msgs, response_format=City, max_tokens=120, temperature=0
    )
    city = r.choices[0].message.parsed
    assert isinstance(city, City), r
    print(f"ok chat.completions.parse -> {city!r}")

    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Give me a JSON object about cats."}],
        response_format={"type": "json_object"},
        max_tokens=100,
        temperature=0,
    )
    obj = json.loads(r.choices[0].message.content)
    assert isinstance(obj, dict), obj
    print(f"ok json_object -> {r.choices[0].message.content!r}")

    # Sampled (temperature 1), streamed, several choices: still valid every time.
    stream = client.chat.completions.create(
        model=model,
        messages=msgs,
        response_format={"type": "json_schema", "json_schema": {"name": "City", "schema": City.model_json_schema(), "strict": True}},
        max_tokens=120,
        temperature=1.0,
        seed=3,
        n=3,
        stream=True,
    )
    texts = ["", "", ""]
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
    for t in texts:
        City.model_validate_json(t)
    print(f"ok json_schema streamed, n=3, sampled -> {texts[0]!r}")

    try:
        client.chat.completions.create(
            model=model,
            messages=msgs,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}},
        )
        raise AssertionError("a bad schema was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400, e
        print(f"ok bad schema -> 400: {e.body.get('message', '')[:80]!r}")


def tools(client, model) -> None:
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        r = client.chat.completions.create(
            model=model, messages=msgs, tools=[WEATHER, TIME], tool_choice=choice, max_tokens=100, temperature=0
        )
        c = r.choices[0]
        assert c.finish_reason == "tool_calls", c
        calls = c.message.tool_calls
        assert calls and calls[0].type == "function", c.message
        for call in calls:
            assert call.id, call
            args = json.loads(call.function.arguments)
            if call.function.name == "get_weather":
                check_weather_args(args)
            else:
                assert call.function.name == "get_time" and choice == "required", call
        if isinstance(choice, dict):
            assert all(call.function.name == "get_weather" for call in calls), calls
        print(f"ok tool_choice={choice!r} -> {[(x.function.name, x.function.arguments) for x in calls]}")

    # Streamed forced call: accumulate delta.tool_calls as the SDK's users do.
    stream = client.chat.completions.create(
        model=model, messages=msgs, tools=[WEATHER], tool_choice="required", max_tokens=100, temperature=0, stream=True
    )
    acc, finish = {}, None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                slot = acc.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
            finish = c.finish_reason or finish
    assert finish == "tool_calls", finish
    assert acc and all(v["id"] and v["name"] == "get_weather" for v in acc.values()), acc
    for v in acc.values():
        check_weather_args(json.loads(v["arguments"]))
    print(f"ok streamed tool call -> {acc}")

    # The stream helper parses the arguments into the function's Pydantic-free dict.
    with client.chat.completions.stream(
        model=model, messages=msgs, tools=[WEATHER], tool_choice="required", max_tokens=100, temperature=0
    ) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.tool_calls, final
    print("ok chat.completions.stream helper with tools")

    # Round trip: the call and its result go back; the model answers in text.
    call = r.choices[0].message.tool_calls[0]
    round_trip = msgs + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})},
    ]
    r = client.chat.completions.create(model=model, messages=round_trip, tools=[WEATHER], max_tokens=30, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls"), r
    print(f"ok tool round trip -> {r.choices[0].message.content!r}")

    # tool_choice none: text, no calls.
    r = client.chat.completions.create(
        model=model, messages=msgs, tools=[WEATHER], tool_choice="none", max_tokens=10, temperature=0
    )
    assert not r.choices[0].message.tool_calls and r.choices[0].finish_reason != "tool_calls", r
    print("ok tool_choice=none -> text")

    for bad, what in (
        (dict(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), "unknown tool"),
        (dict(messages=msgs + [{"role": "tool", "tool_call_id": "call_missing", "content": "x"}]), "orphan tool message"),
    ):
        kwargs = {"model": model, "messages": msgs, "max_tokens": 5, **bad}
        try:
            client.chat.completions.create(**kwargs)
            raise AssertionError(f"{what} was accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400, e
            print(f"ok {what} -> 400")


def responses(client, model) -> None:
    r = client.responses.create(model=model, input="Say hello.", instructions="Be brief.", max_output_tokens=12, temperature=0)
    assert r.object == "response" and r.status in ("completed", "incomplete"), r
    assert isinstance(r.output_text, str) and r.output_text, r
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage
    print(f"ok responses.create -> {r.output_text!r} ({r.status})")

    events, text = [], ""
    for ev in client.responses.create(model=model, input="Say hello.", max_output_tokens=12, temperature=0, stream=True):
        events.append(ev.type)
        if ev.type == "response.output_text.delta":
            text += ev.delta
        if ev.type in ("response.completed", "response.incomplete"):
            assert ev.response.output_text == text, (ev.response.output_text, text)
    assert events[0] == "response.created" and events[-1] in ("response.completed", "response.incomplete"), events
    assert "response.output_text.delta" in events, events
    print(f"ok responses stream -> {len(events)} events, {text!r}")

    # The stream helper wants `response.completed` (an output cut by max_output_tokens
    # ends with `response.incomplete`, as OpenAI's does): a short schema ends in time.
    greeting = {"type": "object", "properties": {"greeting": {"type": "string", "maxLength": 20}},
                "required": ["greeting"], "additionalProperties": False}
    fmt = {"format": {"type": "json_schema", "name": "Greeting", "schema": greeting, "strict": True}}
    with client.responses.stream(model=model, input="Say hello.", text=fmt, max_output_tokens=60, temperature=0) as s:
        final = s.get_final_response()
    assert "greeting" in json.loads(final.output_text), final
    print(f"ok responses.stream helper -> {final.output_text!r}")

    schema = City.model_json_schema()
    r = client.responses.create(
        model=model,
        input="Describe Paris as JSON.",
        text={"format": {"type": "json_schema", "name": "City", "schema": schema, "strict": True}},
        max_output_tokens=120,
        temperature=0,
    )
    City.model_validate_json(r.output_text)
    print(f"ok responses text.format json_schema -> {r.output_text!r}")

    p = client.responses.parse(model=model, input="Describe Paris as JSON.", text_format=City, max_output_tokens=120, temperature=0)
    assert isinstance(p.output_parsed, City), p
    print("ok responses.parse")

    tool = {"type": "function", "name": "get_weather", "description": "Weather", "parameters": WEATHER["function"]["parameters"], "strict": True}
    r = client.responses.create(model=model, input="Weather in Paris?", tools=[tool], tool_choice="required", max_output_tokens=100, temperature=0)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather", r.output
    check_weather_args(json.loads(calls[0].arguments))
    print(f"ok responses function call -> {calls[0].arguments}")

    follow = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "21 C, clear"},
    ]
    r = client.responses.create(model=model, input=follow, tools=[tool], max_output_tokens=20, temperature=0)
    assert r.status in ("completed", "incomplete"), r
    print(f"ok responses function_call_output round trip -> {r.output_text!r}")

    events = [ev.type for ev in client.responses.create(
        model=model, input="Weather in Paris?", tools=[tool], tool_choice="required", max_output_tokens=100, temperature=0, stream=True)]
    assert "response.function_call_arguments.done" in events and events[-1] == "response.completed", events
    print("ok responses streamed function call")

    try:
        client.responses.create(model=model, input="hi", previous_response_id="resp_123")
        raise AssertionError("previous_response_id was accepted")
    except openai.BadRequestError as e:
        assert "stateless" in str(e), e
        print("ok previous_response_id -> 400")


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="none", max_retries=0, timeout=300)
    print(f"openai {openai.__version__} against {base_url}, model {model}")
    structured(client, model)
    tools(client, model)
    responses(client, model)
    print("all structured-output checks passed")


if __name__ == "__main__":
    main()
