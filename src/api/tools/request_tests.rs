//! Unit tests of `request`: shapes accepted, each bad input a 400 naming its param.

use super::*;
use serde_json::json;

fn weather() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": true
    }})
}

fn chat(tools: Value, choice: Option<Value>) -> Result<Option<ToolSet>, ApiError> {
    let f = ToolFields {
        tools: Some(&tools),
        tool_choice: choice.as_ref(),
        ..ToolFields::default()
    };
    tool_set(&f, Shape::Chat)
}

fn assert_400<T: std::fmt::Debug>(r: Result<T, ApiError>, param: &str) -> String {
    let e = r.expect_err("expected a 400");
    assert_eq!(e.status.as_u16(), 400, "{e}");
    assert_eq!(e.param.as_deref(), Some(param), "{e}");
    e.message
}

#[test]
fn chat_shape_parses_with_defaults() {
    let set = chat(
        json!([weather(), {"type": "function", "function": {"name": "noop"}}]),
        None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(set.choice, ToolChoice::Auto);
    assert!(set.parallel && set.active() && !set.forced());
    assert_eq!(set.tools[0].name, "get_weather");
    assert_eq!(
        set.tools[0].description.as_deref(),
        Some("Weather in a city")
    );
    assert!(set.tools[0].strict);
    assert_eq!(
        set.tools[1].parameters,
        json!({"type": "object", "properties": {}})
    );
    let list = set.to_chat_json();
    assert_eq!(list[0]["function"]["name"], "get_weather");
    assert_eq!(list[0]["type"], "function");
    assert_eq!(list[1]["function"]["parameters"]["type"], "object");
}

#[test]
fn responses_shape_and_choices() {
    let tools =
        json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
    let choice = json!({"type": "function", "name": "get_weather"});
    let par = json!(false);
    let f = ToolFields {
        tools: Some(&tools),
        tool_choice: Some(&choice),
        parallel_tool_calls: Some(&par),
        ..ToolFields::default()
    };
    let set = tool_set(&f, Shape::Responses).unwrap().unwrap();
    assert_eq!(set.choice, ToolChoice::Function("get_weather".into()));
    assert!(!set.parallel && set.forced());
    assert_eq!(set.allowed().len(), 1);
    // The chat shape is not the flat one.
    assert_400(tool_set(&f, Shape::Chat), "tools");
    for (c, want) in [
        (json!("none"), ToolChoice::None),
        (json!("auto"), ToolChoice::Auto),
        (json!("required"), ToolChoice::Required),
        (
            json!({"type": "function", "function": {"name": "get_weather"}}),
            ToolChoice::Function("get_weather".into()),
        ),
    ] {
        let set = chat(json!([weather()]), Some(c)).unwrap().unwrap();
        assert_eq!(set.choice, want);
    }
    let none = chat(json!([weather()]), Some(json!("none")))
        .unwrap()
        .unwrap();
    assert!(!none.active() && none.allowed().is_empty());
}

#[test]
fn no_tools_is_plain_chat() {
    assert_eq!(tool_set(&ToolFields::default(), Shape::Chat).unwrap(), None);
    assert_eq!(chat(json!([]), Some(json!("none"))).unwrap(), None);
    assert_eq!(chat(json!([]), Some(json!("auto"))).unwrap(), None);
    let null = Value::Null;
    let f = ToolFields {
        tools: Some(&null),
        tool_choice: Some(&null),
        ..ToolFields::default()
    };
    assert_eq!(tool_set(&f, Shape::Chat).unwrap(), None);
}

#[test]
fn bad_tools_name_the_param() {
    let f = |spec: Value| json!([{"type": "function", "function": spec}]);
    assert_400(chat(json!({"a": 1}), None), "tools");
    assert_400(chat(json!([1]), None), "tools");
    assert_400(chat(json!([{"type": "code_interpreter"}]), None), "tools");
    assert_400(chat(json!([{"type": "function"}]), None), "tools");
    assert_400(chat(f(json!({})), None), "tools");
    assert_400(chat(f(json!({"name": ""})), None), "tools");
    assert_400(chat(f(json!({"name": "has space"})), None), "tools");
    assert_400(chat(f(json!({"name": "x".repeat(65)})), None), "tools");
    chat(f(json!({"name": "x".repeat(64)})), None).unwrap();
    chat(f(json!({"name": "a-B_9"})), None).unwrap();
    let msg = assert_400(
        chat(f(json!({"name": "f", "parameters": "x"})), None),
        "tools",
    );
    assert!(msg.contains("parameters"), "{msg}");
    assert_400(
        chat(f(json!({"name": "f", "parameters": []})), None),
        "tools",
    );
    assert_400(
        chat(f(json!({"name": "f", "strict": "yes"})), None),
        "tools",
    );
    assert_400(
        chat(f(json!({"name": "f", "description": 3})), None),
        "tools",
    );
    let msg = assert_400(chat(json!([weather(), weather()]), None), "tools");
    assert!(msg.contains("twice"), "{msg}");
}

#[test]
fn bad_choices_name_the_param() {
    let msg = assert_400(
        chat(
            json!([weather()]),
            Some(json!({"type": "function", "function": {"name": "nope"}})),
        ),
        "tool_choice",
    );
    assert!(msg.contains("nope"), "{msg}");
    assert_400(chat(json!([]), Some(json!("required"))), "tool_choice");
    assert_400(
        chat(
            json!([]),
            Some(json!({"type": "function", "function": {"name": "f"}})),
        ),
        "tool_choice",
    );
    assert_400(
        chat(json!([weather()]), Some(json!("always"))),
        "tool_choice",
    );
    assert_400(chat(json!([weather()]), Some(json!(3))), "tool_choice");
    assert_400(
        chat(json!([weather()]), Some(json!({"type": "web_search"}))),
        "tool_choice",
    );
    let t = json!([weather()]);
    let p = json!("yes");
    let f = ToolFields {
        tools: Some(&t),
        parallel_tool_calls: Some(&p),
        ..ToolFields::default()
    };
    assert_400(tool_set(&f, Shape::Chat), "parallel_tool_calls");
}

#[test]
fn legacy_functions_map_onto_tools() {
    let funcs = json!([{"name": "get_weather", "parameters": {"type": "object"}}]);
    let call = json!({"name": "get_weather"});
    let f = ToolFields {
        functions: Some(&funcs),
        function_call: Some(&call),
        ..ToolFields::default()
    };
    let set = tool_set(&f, Shape::Chat).unwrap().unwrap();
    assert_eq!(set.tools[0].name, "get_weather");
    assert_eq!(set.choice, ToolChoice::Function("get_weather".into()));
    let bad = json!({"name": "other"});
    let f2 = ToolFields {
        function_call: Some(&bad),
        ..f
    };
    assert_400(tool_set(&f2, Shape::Chat), "function_call");
    let tools = json!([weather()]);
    let both = ToolFields {
        tools: Some(&tools),
        ..f
    };
    assert_400(tool_set(&both, Shape::Chat), "functions");
    let not_array = json!({"name": "x"});
    let f3 = ToolFields {
        functions: Some(&not_array),
        ..ToolFields::default()
    };
    assert_400(tool_set(&f3, Shape::Chat), "functions");
}
