//! Which native tool-call format a model speaks, detected from its chat template.
//!
//! Detection rules ([`ToolFormat::detect`]), first match wins:
//! 1. No template, or a template that never uses the variable `tools` (checked as a
//!    whole word, so `tool_calls` does not count): [`ToolFormat::Generic`] — the template
//!    cannot show tools, so [`super::render::prepare`] adds its own instructions.
//! 2. The source contains `[TOOL_CALLS]`: Mistral; [`ToolFormat::MistralArgs`] when it
//!    also contains `[ARGS]` (Mistral Small 3.2 / Devstral / Ministral 3, tekken v11+),
//!    else [`ToolFormat::Mistral`] (Nemo, v3: a JSON array after the marker).
//! 3. The source contains `<tool_call>`: [`ToolFormat::Hermes`] (Qwen 2.5/3, Hermes 2/3,
//!    QwQ, and the many templates that copied it).
//! 4. The source contains `<|python_tag|>`, or both `<|start_header_id|>` and
//!    `"parameters"`: [`ToolFormat::Llama3`] (Llama 3.1 / 3.2 / 3.3).
//! 5. Otherwise the vocabulary decides: a token spelled `<tool_call>` -> Hermes,
//!    `[TOOL_CALLS]` -> Mistral (MistralArgs when `[ARGS]` is a token too),
//!    `<|python_tag|>` -> Llama3; none -> Generic (the template shows the tools its own
//!    way; calls are still recognised in the Hermes shape or as bare JSON).

/// A family of tool-call output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolFormat {
    /// `<tool_call>\n{"name": .., "arguments": {..}}\n</tool_call>`, one block per call
    /// (Qwen 2.5 / 3, Hermes 2 Pro / 3).
    Hermes,
    /// `{"name": .., "parameters": {..}}` as the whole message, optionally after
    /// `<|python_tag|>`, several separated by `;` (Llama 3.1 / 3.2 / 3.3).
    Llama3,
    /// `[TOOL_CALLS] [{"name": .., "arguments": {..}}, ..]` (Mistral v3, Nemo).
    Mistral,
    /// `[TOOL_CALLS]name[ARGS]{..}`, the marker repeated per call (Mistral Small 3.2,
    /// Devstral, Ministral 3). Parsed like `Mistral`, which accepts both shapes.
    MistralArgs,
    /// Ferrite's own, for templates without tool support: Hermes-style tags, also a
    /// bare `{"name": .., "arguments": ..}` object opening the message.
    Generic,
}

impl ToolFormat {
    /// The format of a model with this template `source` (`None`: no template);
    /// `has_token` says whether the vocabulary has a token spelled exactly so. See the
    /// module docs for the rules.
    pub fn detect(source: Option<&str>, has_token: impl Fn(&str) -> bool) -> Self {
        let Some(src) = source.filter(|s| references_tools(s)) else {
            return Self::Generic;
        };
        if src.contains("[TOOL_CALLS]") {
            return if src.contains("[ARGS]") {
                Self::MistralArgs
            } else {
                Self::Mistral
            };
        }
        if src.contains("<tool_call>") {
            return Self::Hermes;
        }
        if src.contains("<|python_tag|>")
            || (src.contains("<|start_header_id|>") && src.contains("\"parameters\""))
        {
            return Self::Llama3;
        }
        if has_token("<tool_call>") {
            Self::Hermes
        } else if has_token("[TOOL_CALLS]") {
            if has_token("[ARGS]") {
                Self::MistralArgs
            } else {
                Self::Mistral
            }
        } else if has_token("<|python_tag|>") {
            Self::Llama3
        } else {
            Self::Generic
        }
    }

    /// The marker strings of this format, any of which may be a control token the
    /// model emits (the decoder must keep them in the text the parser sees).
    pub fn markers(self) -> &'static [&'static str] {
        match self {
            Self::Hermes | Self::Generic => &["<tool_call>", "</tool_call>"],
            Self::Llama3 => &["<|python_tag|>"],
            Self::Mistral => &["[TOOL_CALLS]"],
            Self::MistralArgs => &["[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"],
        }
    }

    /// The string that opens a call anywhere in the output.
    pub fn opener(self) -> &'static str {
        match self {
            Self::Hermes | Self::Generic => "<tool_call>",
            Self::Llama3 => "<|python_tag|>",
            Self::Mistral | Self::MistralArgs => "[TOOL_CALLS]",
        }
    }

    /// Whether a bare JSON object opening the message (after whitespace, possibly in a
    /// ```` ```json ```` fence) is a call too.
    pub fn bare_json_at_start(self) -> bool {
        matches!(self, Self::Llama3 | Self::Generic)
    }
}

/// Whether `source` uses the variable `tools` (a whole identifier).
pub fn references_tools(source: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    source.match_indices("tools").any(|(i, _)| {
        let before = source[..i].chars().next_back();
        let after = source[i + 5..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: fn(&str) -> bool = |_| false;

    #[test]
    fn detection_rules() {
        let chatml = crate::model::chat_template::CHATML;
        assert_eq!(ToolFormat::detect(None, NONE), ToolFormat::Generic);
        assert_eq!(ToolFormat::detect(Some(chatml), NONE), ToolFormat::Generic);
        // Not referencing `tools`: the vocabulary is not consulted.
        assert_eq!(
            ToolFormat::detect(Some(chatml), |t| t == "<tool_call>"),
            ToolFormat::Generic
        );
        let uses = |body: &str| format!("{{% if tools %}}{body}{{% endif %}}");
        let d = |body: &str| ToolFormat::detect(Some(&uses(body)), NONE);
        assert_eq!(d("[TOOL_CALLS]["), ToolFormat::Mistral);
        assert_eq!(d("[TOOL_CALLS]x[ARGS]"), ToolFormat::MistralArgs);
        assert_eq!(d("<tool_call>"), ToolFormat::Hermes);
        assert_eq!(d("<|python_tag|>"), ToolFormat::Llama3);
        assert_eq!(
            d("<|start_header_id|>{\"parameters\": 1}"),
            ToolFormat::Llama3
        );
        assert_eq!(d("anything"), ToolFormat::Generic);
        let v = |tok: &'static str| {
            ToolFormat::detect(Some(&uses("x")), move |t: &str| t == tok || t == "[ARGS]")
        };
        assert_eq!(v("<tool_call>"), ToolFormat::Hermes);
        assert_eq!(v("[TOOL_CALLS]"), ToolFormat::MistralArgs);
        assert_eq!(v("<|python_tag|>"), ToolFormat::Llama3);
    }

    #[test]
    fn tools_as_a_whole_word() {
        assert!(references_tools("{% if tools %}"));
        assert!(references_tools("{{ tools|tojson }}"));
        assert!(!references_tools("{{ message.tool_calls }}"));
        assert!(!references_tools("{{ xml_tools }}"));
        assert!(!references_tools("{{ toolset }}"));
    }
}
