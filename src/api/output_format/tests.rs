use serde_json::json;

use super::*;

fn none() -> Guided<'static> {
    Guided::default()
}

#[test]
fn response_format_shapes_map_to_grammars() {
    let text = json!({"type": "text"});
    assert_eq!(requested(Some(&text), none()).unwrap(), None);
    let obj = json!({"type": "json_object"});
    assert_eq!(
        requested(Some(&obj), none()).unwrap().unwrap().spec,
        GrammarSpec::JsonObject
    );
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let rf = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}});
    let g = requested(Some(&rf), none()).unwrap().unwrap();
    assert_eq!(g.spec, GrammarSpec::JsonSchema(schema.clone()));
    assert_eq!(g.param, "response_format");
    // The Responses API's flat `text.format`.
    let flat = json!({"type": "json_schema", "name": "x", "schema": schema});
    assert_eq!(
        response_format_spec(&flat, "text.format").unwrap(),
        Some(GrammarSpec::JsonSchema(schema))
    );
    for bad in [
        json!({"type": "yaml"}),
        json!({}),
        json!({"type": "json_schema", "json_schema": {"schema": 3}}),
    ] {
        let e = requested(Some(&bad), none()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format"), "{bad}");
    }
}

#[test]
fn guided_fields_and_their_errors() {
    let rx = json!("[0-9]+");
    let g = requested(
        None,
        Guided {
            regex: Some(&rx),
            ..none()
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(g.spec, GrammarSpec::Regex("[0-9]+".into()));
    let choice = json!(["a", "b"]);
    let g = requested(
        None,
        Guided {
            choice: Some(&choice),
            ..none()
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(g.spec, GrammarSpec::Choice(vec!["a".into(), "b".into()]));
    let text_schema = json!("{\"type\": \"object\"}");
    let g = requested(
        None,
        Guided {
            json: Some(&text_schema),
            ..none()
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(g.spec, GrammarSpec::JsonSchema(json!({"type": "object"})));
    let so = json!({"grammar": "start: \"x\""});
    let g = requested(
        None,
        Guided {
            structured_outputs: Some(&so),
            ..none()
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (g.param, g.spec),
        (
            "structured_outputs",
            GrammarSpec::Lark("start: \"x\"".into())
        )
    );

    let empty = json!([]);
    let e = requested(
        None,
        Guided {
            choice: Some(&empty),
            ..none()
        },
    )
    .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("guided_choice"));
    let obj = json!({"type": "json_object"});
    let e = requested(
        Some(&obj),
        Guided {
            regex: Some(&rx),
            ..none()
        },
    )
    .unwrap_err();
    assert!(
        e.message.contains("Only one output constraint"),
        "{}",
        e.message
    );
}

#[test]
fn logit_bias_is_checked() {
    let b = logit_bias(Some(&json!({"7": 5, "2": -100}))).unwrap();
    assert_eq!(b, vec![(2, -100.0), (7, 5.0)]);
    assert!(logit_bias(Some(&json!({}))).unwrap().is_empty());
    assert!(logit_bias(None).unwrap().is_empty());
    for bad in [
        json!({"x": 1}),
        json!({"1": 101}),
        json!({"1": "a"}),
        json!([1]),
    ] {
        let e = logit_bias(Some(&bad)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("logit_bias"), "{bad}");
    }
    assert!(check_bias_ids(&b, 8).is_ok());
    let e = check_bias_ids(&b, 7).unwrap_err();
    assert!(e.message.contains("token id 7"), "{}", e.message);
}
