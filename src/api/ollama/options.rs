//! Ollama's `options` onto ferrite's sampling, through the same `validate::common` the
//! OpenAI routes use (so ranges and messages are one piece of code): Ollama's defaults
//! where an option is absent (temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1,
//! num_predict -1 = until the context is full), `num_ctx` as a cap on the context.
//! `format` (structured output) maps onto the shared grammar machinery. Also the
//! request features ferrite refuses: `images`, `tools`, `think`.

use serde_json::Value;

use super::request::Options;
use crate::api::ApiLimits;
use crate::api::error::ApiError;
use crate::api::openai::CommonFields;
use crate::api::output_format::OutputGrammar;
use crate::api::validate::{self, Checked, Endpoint};

/// Ollama's defaults for options a request leaves out.
const DEFAULT_TEMPERATURE: f64 = 0.8;
const DEFAULT_TOP_K: i64 = 40;
const DEFAULT_TOP_P: f64 = 0.9;
const DEFAULT_REPEAT_PENALTY: f64 = 1.1;

/// Checked options of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Sampling parameters and the explicit token limit.
    pub checked: Checked,
    /// `num_ctx`, when given.
    pub num_ctx: Option<usize>,
}

/// Maps `options` (absent: all defaults) and the `stream` flag (default true).
pub fn resolve(
    options: Option<&Options>,
    stream: Option<bool>,
    limits: &ApiLimits,
) -> Result<Resolved, ApiError> {
    let empty = Options::default();
    let o = options.unwrap_or(&empty);
    let max_tokens = match o.num_predict {
        None | Some(-1) | Some(-2) => None,
        Some(n) if n >= 1 => Some(n),
        Some(n) => {
            return Err(ApiError::invalid(
                format!("`num_predict` must be -1, -2 or at least 1, got {n}."),
                Some("num_predict"),
            ));
        }
    };
    let num_ctx = match o.num_ctx {
        None => None,
        Some(n) if n >= 1 => Some(n as usize),
        Some(n) => {
            return Err(ApiError::invalid(
                format!("`num_ctx` must be at least 1, got {n}."),
                Some("num_ctx"),
            ));
        }
    };
    let common = CommonFields {
        temperature: Some(o.temperature.unwrap_or(DEFAULT_TEMPERATURE)),
        top_p: Some(o.top_p.unwrap_or(DEFAULT_TOP_P)),
        top_k: Some(o.top_k.unwrap_or(DEFAULT_TOP_K)),
        min_p: o.min_p,
        seed: o.seed.clone(),
        stop: o.stop.clone(),
        presence_penalty: o.presence_penalty,
        frequency_penalty: o.frequency_penalty,
        repetition_penalty: Some(o.repeat_penalty.unwrap_or(DEFAULT_REPEAT_PENALTY)),
        stream: Some(stream.unwrap_or(true)),
        ignore_eos: o.ignore_eos,
        speculative: o.speculative,
        ..CommonFields::default()
    };
    let checked = validate::common(
        &common,
        max_tokens.map(|m| (m, "num_predict")),
        None,
        limits,
    )
    .map_err(rename_param)?;
    Ok(Resolved { checked, num_ctx })
}

/// Ollama names a few options differently: say `repeat_penalty`, not ferrite's name.
fn rename_param(mut e: ApiError) -> ApiError {
    if e.param.as_deref() == Some("repetition_penalty") {
        e.message = e.message.replace("repetition_penalty", "repeat_penalty");
        e.param = Some("repeat_penalty".into());
    }
    e
}

impl Resolved {
    /// The completion limit for a prompt of `prompt_len` tokens on a model of `context`
    /// tokens (capped by `num_ctx` and the operator's cap).
    pub fn max_tokens(
        &self,
        prompt_len: usize,
        context: usize,
        cap: Option<usize>,
    ) -> Result<usize, ApiError> {
        let context = self.num_ctx.map_or(context, |n| n.min(context));
        validate::max_tokens(
            prompt_len,
            self.checked.max_tokens,
            Endpoint::Chat,
            context,
            cap,
        )
    }
}

/// `format`: structured output (`"json"` or a JSON schema), through the same grammar
/// machinery as OpenAI's `response_format`.
pub fn structured_output(format: Option<&Value>) -> Result<Option<OutputGrammar>, ApiError> {
    crate::api::output_format::ollama_format(format)
}

fn present(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// 400 naming `what` when `v` is given (non-empty, not `false`).
pub fn refuse_if(v: Option<&Value>, what: &str, why: &str) -> Result<(), ApiError> {
    if present(v) {
        return Err(ApiError::invalid(
            format!("`{what}` is not supported by this server{why}."),
            Some(what),
        )
        .with_code("unsupported_parameter"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(v: Value) -> Result<Resolved, ApiError> {
        let o: Options = serde_json::from_value(v).unwrap();
        resolve(Some(&o), None, &ApiLimits::default())
    }

    #[test]
    fn defaults_are_ollamas() {
        let r = resolve(None, None, &ApiLimits::default()).unwrap();
        let p = &r.checked.params;
        assert_eq!((p.temperature, p.top_k, p.top_p), (0.8, 40, 0.9));
        assert_eq!(p.repetition_penalty, 1.1);
        assert!(r.checked.stream);
        assert_eq!(r.checked.max_tokens, None);
        assert_eq!(r.max_tokens(10, 100, None).unwrap(), 90);
    }

    #[test]
    fn options_map_onto_sampling() {
        let r = opts(
            json!({"num_predict": 5, "temperature": 0, "top_k": 0, "top_p": 1,
            "min_p": 0.1, "seed": 42, "stop": ["\n", "User:"], "repeat_penalty": 1.0,
            "presence_penalty": 0.5, "frequency_penalty": -0.5, "num_ctx": 50, "num_gpu": 99}),
        )
        .unwrap();
        let p = &r.checked.params;
        assert_eq!(
            (p.temperature, p.top_k, p.top_p, p.min_p),
            (0.0, 0, 1.0, 0.1)
        );
        assert_eq!(p.seed, Some(42));
        assert_eq!(p.stop, vec!["\n".to_string(), "User:".to_string()]);
        assert_eq!(p.repetition_penalty, 1.0);
        assert_eq!((p.presence_penalty, p.frequency_penalty), (0.5, -0.5));
        assert_eq!(r.max_tokens(10, 2048, None).unwrap(), 5);
        // num_ctx caps the context: 10 + 45 > 50.
        let r = opts(json!({"num_predict": 45, "num_ctx": 50})).unwrap();
        assert!(r.max_tokens(10, 2048, None).is_err());
        assert_eq!(
            opts(json!({"num_ctx": 50}))
                .unwrap()
                .max_tokens(10, 2048, None)
                .unwrap(),
            40
        );
    }

    #[test]
    fn out_of_range_options_are_refused() {
        for (v, needle) in [
            (json!({"temperature": 3}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"top_k": -5}), "top_k"),
            (json!({"num_predict": 0}), "num_predict"),
            (json!({"num_ctx": 0}), "num_ctx"),
            (json!({"repeat_penalty": 0}), "repeat_penalty"),
            (json!({"repeat_penalty": 5}), "repeat_penalty"),
            (json!({"stop": 3}), "stop"),
        ] {
            let e = opts(v.clone()).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{v}");
            assert!(e.message.contains(needle), "{v}: {}", e.message);
        }
    }

    #[test]
    fn format_maps_to_a_grammar_and_images_and_tools_are_refused() {
        assert_eq!(structured_output(None).unwrap(), None);
        assert_eq!(structured_output(Some(&json!(""))).unwrap(), None);
        let json = structured_output(Some(&json!("json"))).unwrap().unwrap();
        assert_eq!(json.spec, crate::structured::GrammarSpec::JsonObject);
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let g = structured_output(Some(&schema)).unwrap().unwrap();
        assert_eq!(g.spec, crate::structured::GrammarSpec::JsonSchema(schema));
        let e = structured_output(Some(&json!("yaml"))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("format"));
        assert!(refuse_if(Some(&json!([])), "images", "").is_ok());
        assert!(refuse_if(Some(&json!(false)), "think", "").is_ok());
        assert!(refuse_if(Some(&json!(["aGk="])), "images", "").is_err());
    }
}
