//! The prompt side of one chat turn, shared by chat completions and the Responses API:
//! the conversation and tools adapted to the model's template (`tools::prepare`),
//! rendered and tokenized; the output grammar compiled (a forced tool call's, else the
//! request's own constraint); and the control tokens whose text the tool-call parser
//! must see. CPU work: run it through `prompt::blocking`.

use super::error::ApiError;
use super::output_format::{self, OutputGrammar};
use super::prompt;
use super::tools::grammar::{SpecialMarkers, forced_lark};
use super::tools::render::ToolSupport;
use super::tools::{ToolFormat, ToolSet, prepare};
use crate::model::ServedModel;
use crate::model::chat_template::ChatMessage;
use crate::structured::{CompiledGrammar, GrammarSpec};

/// A turn ready to submit.
pub struct Turn {
    /// Prompt token ids.
    pub ids: Vec<u32>,
    /// The compiled output grammar, if any.
    pub grammar: Option<CompiledGrammar>,
    /// The model's tool-call format (for parsing the output).
    pub format: ToolFormat,
    /// Control tokens whose text the output must keep (tool-call markers).
    pub visible: Vec<u32>,
}

/// Prepares `messages` (+ `tools`) for `model` and compiles the output grammar.
pub fn prepare_turn(
    model: &ServedModel,
    messages: Vec<ChatMessage>,
    tools: Option<&ToolSet>,
    grammar: Option<&OutputGrammar>,
) -> Result<Turn, ApiError> {
    let tok = &model.tokenizer;
    let support = ToolSupport::of(&model.template, |t| tok.token_id(t).is_some());
    let prepared = prepare(&support, messages, tools);
    let ids = prompt::chat_ids_with_tools(model, &prepared.messages, prepared.tools_json.as_ref())?;
    let format = prepared.format;
    let control = |m: &str| tok.token_id(m).filter(|&id| tok.is_control(id));
    let special = SpecialMarkers::of(format, control);
    let forced = tools.filter(|t| t.forced()).map(|t| OutputGrammar {
        spec: GrammarSpec::Lark(forced_lark(format, t, &special)),
        param: "tool_choice",
    });
    let grammar = output_format::compile(model, forced.as_ref().or(grammar))?;
    let visible = match tools.filter(|t| t.active()) {
        Some(_) => format.markers().iter().filter_map(|m| control(m)).collect(),
        None => Vec::new(),
    };
    Ok(Turn {
        ids,
        grammar,
        format,
        visible,
    })
}
