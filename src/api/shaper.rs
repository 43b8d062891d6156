//! The generated text of one choice, shaped into what the API returns: plain content,
//! or content plus tool calls when the request gave tools (through
//! [`crate::api::tools::ToolStream`]). Streaming surfaces `push` each piece of text and
//! send what comes back as content; `finish` gives the rest of the content and the
//! calls, each with a fresh `call_…` id. Without active tools it is a pass-through.
//!
//! Invariant: the streamed content followed by `finish().content` is the whole content
//! (text that was not a tool call), in order.

use crate::api::responses::object::FunctionCall;
use crate::api::tools::{ToolFormat, ToolSet, ToolStream};

/// What a choice produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Shaped {
    /// Text that is not a tool call (the rest of it, after streaming).
    pub content: String,
    /// Tool calls, in order.
    pub calls: Vec<FunctionCall>,
}

/// Per-choice shaping state.
#[derive(Debug, Default)]
pub struct Shaper {
    tools: Option<ToolStream>,
}

impl Shaper {
    /// A shaper for output in `format` when `tools` are active, else a pass-through.
    pub fn new(format: ToolFormat, tools: Option<&ToolSet>) -> Self {
        Self {
            tools: tools
                .filter(|t| t.active())
                .map(|t| ToolStream::new(format, t)),
        }
    }

    /// Text that can be released now.
    pub fn push(&mut self, text: &str) -> String {
        match &mut self.tools {
            Some(t) => t.push(text),
            None => text.to_string(),
        }
    }

    /// The rest of the content, and the calls.
    pub fn finish(self) -> Shaped {
        let Some(t) = self.tools else {
            return Shaped::default();
        };
        let parsed = t.finish();
        Shaped {
            content: parsed.content.unwrap_or_default(),
            calls: parsed
                .calls
                .into_iter()
                .map(|c| FunctionCall {
                    call_id: call_id(),
                    name: c.name,
                    arguments: c.arguments,
                })
                .collect(),
        }
    }

    /// The whole output of a non-streaming choice, shaped.
    pub fn shape_all(mut self, text: &str) -> Shaped {
        let mut content = self.push(text);
        let rest = self.finish();
        content.push_str(&rest.content);
        Shaped {
            content,
            calls: rest.calls,
        }
    }
}

/// A fresh tool call id (`call_` + 24 hex digits).
pub fn call_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("call_{}", &id[..24])
}
