//! The generated text of one choice, shaped into what the API returns: plain content,
//! or content plus tool calls when the request gave tools. Streaming surfaces `push`
//! each piece of text and send what comes back as content; `finish` gives the rest of
//! the content and the calls. Without tools it is a pass-through.
//!
//! Invariant: the streamed content followed by `finish().content` is the whole content
//! (text that was not a tool call), in order.

use crate::api::responses::object::FunctionCall;

/// What a choice produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Shaped {
    /// Text that is not a tool call (the rest of it, after streaming).
    pub content: String,
    /// Tool calls, in order, each with a fresh `call_…` id.
    pub calls: Vec<FunctionCall>,
}

/// Per-choice shaping state.
#[derive(Debug, Default)]
pub struct Shaper {}

impl Shaper {
    /// Text that can be released now.
    pub fn push(&mut self, text: &str) -> String {
        text.to_string()
    }

    /// The rest of the content, and the calls.
    pub fn finish(self) -> Shaped {
        Shaped::default()
    }
}

/// A fresh tool call id (`call_` + 24 hex digits).
pub fn call_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("call_{}", &id[..24])
}
