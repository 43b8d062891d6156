"""LangChain's OpenAI chat model against a running ferrite server:
`with_structured_output` (JSON schema and function calling methods) and `bind_tools`.

Usage: python langchain_check.py BASE_URL MODEL_ID
"""

import json
import sys

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field


class Person(BaseModel):
    """A person."""

    name: str = Field(description="Full name", max_length=40)
    age: int = Field(description="Age in years", ge=0, le=150)


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"21 C and clear in {city}"


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    llm = ChatOpenAI(base_url=base_url + "/v1", api_key="none", model=model, temperature=0, max_tokens=120, max_retries=0)

    for method in ("json_schema", "function_calling"):
        structured = llm.with_structured_output(Person, method=method)
        p = structured.invoke("Invent a person.")
        assert isinstance(p, Person), p
        print(f"ok with_structured_output(method={method}) -> {p!r}")

    bound = llm.bind_tools([get_weather], tool_choice="get_weather")
    msg = bound.invoke([HumanMessage("What is the weather in Paris?")])
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "get_weather", msg
    assert isinstance(msg.tool_calls[0]["args"].get("city"), str), msg.tool_calls
    print(f"ok bind_tools -> {msg.tool_calls}")

    result = get_weather.invoke(msg.tool_calls[0]["args"])
    answer = llm.bind_tools([get_weather]).invoke(
        [HumanMessage("What is the weather in Paris?"), msg, ToolMessage(result, tool_call_id=msg.tool_calls[0]["id"])]
    )
    assert isinstance(answer.content, str), answer
    print(f"ok tool round trip -> {answer.content!r}")

    chunks = list(bound.stream([HumanMessage("What is the weather in Paris?")]))
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    assert full.tool_calls and full.tool_calls[0]["name"] == "get_weather", full
    print(f"ok bind_tools streamed -> {json.dumps(full.tool_calls[0]['args'])}")
    print("all LangChain checks passed")


if __name__ == "__main__":
    main()
