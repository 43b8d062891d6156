//! Prompt token ids from validated input, using the served model's chat template and
//! tokenizer. This is CPU work that grows with the prompt, so handlers run it through
//! `blocking`, off the async runtime's worker threads.

use super::error::ApiError;
use super::validate::PromptInput;
use crate::model::ServedModel;
use crate::model::chat_template::ChatMessage;

/// Runs `f` on tokio's blocking pool.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("tokenization task failed: {e}")))?
}

/// Renders the conversation with the generation prompt and tokenizes it.
pub fn chat_ids(model: &ServedModel, messages: &[ChatMessage]) -> Result<Vec<u32>, ApiError> {
    chat_ids_with_tools(model, messages, None)
}

/// [`chat_ids`] with the template's `tools` variable set (OpenAI's tool list).
pub fn chat_ids_with_tools(
    model: &ServedModel,
    messages: &[ChatMessage],
    tools: Option<&serde_json::Value>,
) -> Result<Vec<u32>, ApiError> {
    let text = model
        .template
        .render_with(messages, tools, true, &serde_json::Map::new())
        .map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
    let mut ids = encode(model, &text, "messages")?;
    // Templates that write `{{ bos_token }}` themselves would otherwise get a second BOS
    // from the tokenizer.
    if let Some(bos) = model.tokenizer.bos_id
        && model.tokenizer.add_bos
        && ids.len() >= 2
        && ids[0] == bos
        && ids[1] == bos
    {
        ids.remove(0);
    }
    Ok(ids)
}

/// Token ids of every prompt of a text completion request.
pub fn completion_ids(model: &ServedModel, input: PromptInput) -> Result<Vec<Vec<u32>>, ApiError> {
    match input {
        PromptInput::Texts(texts) => texts.iter().map(|t| encode(model, t, "prompt")).collect(),
        PromptInput::Ids(prompts) => {
            let vocab = model.tokenizer.vocab_size();
            for ids in &prompts {
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    let msg = format!(
                        "Token id {bad} in `prompt` is out of range (vocabulary size {vocab})."
                    );
                    return Err(ApiError::invalid(msg, Some("prompt")));
                }
            }
            Ok(prompts)
        }
    }
}

fn encode(model: &ServedModel, text: &str, param: &str) -> Result<Vec<u32>, ApiError> {
    let ids = model.tokenizer.encode(text).map_err(|e| {
        ApiError::invalid(format!("Could not tokenize `{param}`: {e}"), Some(param))
    })?;
    if ids.is_empty() {
        let msg = format!("`{param}` is empty after tokenization.");
        return Err(ApiError::invalid(msg, Some(param)));
    }
    Ok(ids)
}
