//! The content / tool-call split done while streaming.
//!
//! [`ToolStream::push`] returns the text that is safe to send as `content` now; it
//! holds back what may still become a call: leading whitespace, a partial opener at
//! the end (`<tool_`, `[TOOL_C`, `<|python`), and for Llama3 / Generic a `{` or a
//! ```` ```json ```` fence opening the output. From a complete opener (or such a
//! leading `{`) on, everything is buffered, and [`ToolStream::finish`] parses it.
//!
//! Invariant: the concatenation of every `push` result and `finish().content` equals
//! [`super::parse::parse`]'s content for the whole text, and the calls are the same.

use super::format::ToolFormat;
use super::parse::{Parsed, finalize, split};
use super::request::ToolSet;

/// Incremental splitter of one choice's output.
#[derive(Debug, Clone)]
pub struct ToolStream {
    format: ToolFormat,
    tools: ToolSet,
    /// Text received but not yet emitted.
    pending: String,
    /// Whether anything was emitted (then the output's start is behind us).
    emitted: bool,
    /// A call started: everything from here on waits for `finish`.
    buffering: bool,
}

impl ToolStream {
    /// A splitter for output in `format` with these tools.
    pub fn new(format: ToolFormat, tools: &ToolSet) -> Self {
        Self {
            format,
            tools: tools.clone(),
            pending: String::new(),
            emitted: false,
            buffering: false,
        }
    }

    /// Takes the next piece of output; returns the content that can be streamed now
    /// (possibly empty).
    pub fn push(&mut self, delta: &str) -> String {
        self.pending.push_str(delta);
        if self.buffering {
            return String::new();
        }
        if !self.tools.active() {
            self.emitted |= !self.pending.is_empty();
            return std::mem::take(&mut self.pending);
        }
        if !self.emitted {
            let t = self.pending.trim_start();
            if t.is_empty() {
                return String::new();
            }
            if self.format.bare_json_at_start() {
                match leading(t) {
                    Lead::Call => {
                        self.buffering = true;
                        return String::new();
                    }
                    Lead::Undecided => return String::new(),
                    Lead::Text => {}
                }
            }
        }
        let opener = self.format.opener();
        let cut = match self.pending.find(opener) {
            Some(i) => {
                self.buffering = true;
                i
            }
            None => self.pending.len() - partial_suffix(&self.pending, opener),
        };
        if !self.emitted && self.pending[..cut].trim().is_empty() {
            // Only whitespace so far: keep it with the call (or for later).
            return String::new();
        }
        let out: String = self.pending.drain(..cut).collect();
        self.emitted |= !out.is_empty();
        out
    }

    /// The end of the output: the content not yet streamed and every call.
    pub fn finish(self) -> Parsed {
        let (content, calls) = split(self.format, &self.pending, &self.tools, !self.emitted);
        if self.emitted {
            Parsed {
                content: (!content.is_empty()).then_some(content),
                calls,
            }
        } else {
            finalize(content, calls)
        }
    }
}

/// What the start of the output (whitespace trimmed) may be for Llama3 / Generic.
enum Lead {
    /// A bare `{` (maybe fenced): a call may follow.
    Call,
    /// Too short to tell (`` ` ``, ```` ```js ````, a fence with only whitespace after).
    Undecided,
    /// Text.
    Text,
}

fn leading(t: &str) -> Lead {
    if t.starts_with('{') {
        return Lead::Call;
    }
    const FENCE: &str = "```json";
    if t.len() < FENCE.len() && FENCE.starts_with(t) {
        return Lead::Undecided;
    }
    let Some(r) = t.strip_prefix("```") else {
        return Lead::Text;
    };
    let r = r.strip_prefix("json").unwrap_or(r).trim_start();
    if r.starts_with('{') {
        Lead::Call
    } else if r.is_empty() {
        Lead::Undecided
    } else {
        Lead::Text
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `marker`.
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
