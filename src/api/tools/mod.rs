//! Tool calling (OpenAI `tools` / `tool_choice` / `parallel_tool_calls`), the building
//! blocks the chat and Responses handlers put together:
//!
//! - [`request`]: the request fields -> a validated [`ToolSet`] (400s name the param).
//! - [`format`]: which native tool-call format a model speaks ([`ToolFormat`]), detected
//!   from its chat template (and vocabulary).
//! - [`render`]: the conversation and tool list as the template gets them, with a generic
//!   fallback for templates that know nothing of tools ([`render::prepare`]).
//! - [`parse`]: model output -> content plus calls, for every format ([`parse::parse`]).
//! - [`stream`]: the same split done incrementally while streaming ([`stream::ToolStream`]).
//! - [`grammar`]: the Lark grammar (llguidance) that forces a call for `required` or a
//!   named function ([`grammar::forced_lark`]).
//!
//! Invariant shared by `parse` and `stream`: a call naming a tool outside the
//! [`ToolSet`], or one that does not parse, stays in the content verbatim; the content
//! is exactly the text outside the recognised calls.

pub mod format;
pub mod grammar;
mod json;
pub mod parse;
pub mod render;
pub mod request;
pub mod stream;

pub use format::ToolFormat;
pub use parse::{Parsed, ParsedCall, parse};
pub use render::{Prepared, prepare};
pub use request::{FunctionTool, ToolChoice, ToolSet};
pub use stream::ToolStream;
