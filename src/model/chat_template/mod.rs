//! Chat templates: the model's Jinja template (`tokenizer.chat_template`, or a file given
//! with `--chat-template`) rendered with minijinja the way Hugging Face renders it
//! (trim/lstrip blocks, Python string methods, `raise_exception`, `strftime_now`,
//! Python-style `tojson`, `namespace`, loop controls; `bos_token` / `eos_token`,
//! `tools`, `add_generation_prompt` and any extra variables in the context).
//!
//! Policies, chosen once here:
//! - A GGUF without a template gets [`ChatTemplate::missing`]: chat requests are
//!   answered with a 400 that says so (a base model fed ChatML answers nonsense);
//!   `/v1/completions` works as usual. `--chat-template FILE` supplies one.
//! - A template that refuses a system message (Gemma 2 raises "System role not
//!   supported") gets the conversation again with the system text folded into the
//!   first user turn, as Gemma 3's own template does; if it still refuses, its message
//!   reaches the client as a 400.

mod functions;

use minijinja::Environment;
use minijinja::value::Serde;
use serde::Serialize;

use functions::RAISED;

/// ChatML, for callers that want it explicitly (tests, synthetic models).
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// One message, with its content already flattened to text. Optional fields are left
/// out of the template's view when absent, so `message.tool_calls is defined` works.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text content.
    pub content: String,
    /// Author name (OpenAI's `name`).
    pub name: Option<String>,
    /// Tool calls of an assistant message, as OpenAI's JSON array.
    pub tool_calls: Option<serde_json::Value>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
    /// Show an empty `content` as `none` (set by tool-call preparation for templates
    /// that test an assistant tool-call message's `content is none`; most templates
    /// need the empty string instead).
    pub content_none: bool,
}

impl Serialize for ChatMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("role", &self.role)?;
        if self.content_none && self.content.is_empty() {
            m.serialize_entry("content", &())?;
        } else {
            m.serialize_entry("content", &self.content)?;
        }
        if let Some(n) = &self.name {
            m.serialize_entry("name", n)?;
        }
        if let Some(t) = &self.tool_calls {
            m.serialize_entry("tool_calls", t)?;
        }
        if let Some(id) = &self.tool_call_id {
            m.serialize_entry("tool_call_id", id)?;
        }
        m.end()
    }
}

impl ChatMessage {
    /// A message with just a role and text.
    pub fn text(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// A compiled chat template plus the special-token strings it may reference.
pub struct ChatTemplate {
    /// `None` when the model has no template.
    env: Option<Environment<'static>>,
    /// The Jinja source as given (`None` when the model has no template).
    source: Option<String>,
    bos_token: String,
    eos_token: String,
}

/// Why a template could not be compiled or rendered (a client error when rendering).
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The model has no chat template.
    #[error(
        "this model has no chat template (its GGUF lacks `tokenizer.chat_template`), so \
         chat messages cannot be formatted for it; use /v1/completions with a prompt, or \
         start ferrite with --chat-template FILE"
    )]
    Missing,
    /// The template itself refused the conversation (`raise_exception`).
    #[error("the model's chat template rejected the conversation: {0}")]
    Rejected(String),
    /// Compiling or rendering failed.
    #[error("chat template: {0}")]
    Failed(String),
}

fn failed(e: minijinja::Error) -> TemplateError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    match msg.find(RAISED) {
        Some(i) => {
            let raised = &msg[i + RAISED.len()..];
            let end = raised.find(" (in ").unwrap_or(raised.len());
            TemplateError::Rejected(raised[..end].trim().to_string())
        }
        None => TemplateError::Failed(msg),
    }
}

impl ChatTemplate {
    /// Compiles `source`.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(failed)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", functions::raise_exception);
        env.add_function("strftime_now", functions::strftime_now);
        env.add_filter("tojson", functions::tojson);
        env.add_test("iterable", functions::is_iterable);
        env.add_template_owned("chat", strip_generation_tags(source))
            .map_err(failed)?;
        Ok(Self {
            env: Some(env),
            source: Some(source.to_string()),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// ChatML (`<|im_start|>role\n…<|im_end|>`).
    pub fn chatml(bos_token: &str, eos_token: &str) -> Self {
        Self::new(CHATML, bos_token, eos_token).expect("ChatML compiles")
    }

    /// The template of a model that ships none: every render is [`TemplateError::Missing`].
    pub fn missing() -> Self {
        Self {
            env: None,
            source: None,
            bos_token: String::new(),
            eos_token: String::new(),
        }
    }

    /// The template's Jinja source (`None` when the model has none), for feature
    /// detection such as the tool-call format.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Whether the model has a template.
    pub fn is_present(&self) -> bool {
        self.env.is_some()
    }

    /// Renders the conversation, ending with the assistant's turn opener when
    /// `add_generation_prompt` is set.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with(
            messages,
            None,
            add_generation_prompt,
            &serde_json::Map::new(),
        )
    }

    /// Renders with `tools` (OpenAI's tool list; `None` leaves `tools` undefined) and
    /// `extra` variables (e.g. `enable_thinking`) in the context.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let first = self.render_once(messages, tools, add_generation_prompt, extra);
        match first {
            Err(TemplateError::Rejected(why)) if messages.iter().any(|m| m.role == "system") => {
                let folded = fold_system(messages);
                self.render_once(&folded, tools, add_generation_prompt, extra)
                    .map_err(|_| TemplateError::Rejected(why))
            }
            other => other,
        }
    }

    fn render_once(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let env = self.env.as_ref().ok_or(TemplateError::Missing)?;
        let tmpl = env.get_template("chat").map_err(failed)?;
        // Extra variables first, so they cannot replace the conversation itself.
        let mut ctx = extra.clone();
        let messages =
            serde_json::to_value(messages).map_err(|e| TemplateError::Failed(e.to_string()))?;
        ctx.insert("messages".into(), messages);
        // `None` is passed as `none` (as Hugging Face does): `tools is not none` is false.
        ctx.insert("tools".into(), tools.cloned().unwrap_or_default());
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        ctx.insert("bos_token".into(), self.bos_token.clone().into());
        ctx.insert("eos_token".into(), self.eos_token.clone().into());
        let ctx = minijinja::Value::from(Serde(&ctx));
        tmpl.render(ctx).map_err(failed)
    }
}

/// `source` without `{% generation %}` / `{% endgeneration %}` (Hugging Face's markers
/// of assistant text for training masks; they render their body unchanged).
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let Some(len) = rest[start..].find("%}") else {
            break;
        };
        let tag = &rest[start..start + len + 2];
        let inner =
            tag[2..tag.len() - 2].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        out.push_str(&rest[..start]);
        if inner != "generation" && inner != "endgeneration" {
            out.push_str(tag);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// The conversation with every system message's text moved to the front of the first
/// user message (separated by a blank line), for templates without a system role.
pub fn fold_system(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let system: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    let mut out: Vec<ChatMessage> = messages
        .iter()
        .filter(|m| m.role != "system")
        .cloned()
        .collect();
    let prefix = system.join("\n\n");
    match out.iter_mut().find(|m| m.role == "user") {
        Some(u) => u.content = format!("{prefix}\n\n{}", u.content),
        None => out.insert(0, ChatMessage::text("user", &prefix)),
    }
    out
}

#[cfg(test)]
mod tests;
