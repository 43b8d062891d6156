//! The shapes rerank documents arrive in, all accepted on both rerank routes:
//! plain strings, `{"text": ...}` objects (Cohere/Jina), and `{"content": ...,
//! "metadata": {...}}` objects (what RAG stacks send for their retrieved chunks).
//!
//! Invariant: a parsed document keeps its metadata verbatim so it can be echoed back.

use serde_json::Value;

use crate::api::error::ApiError;

/// One document to score.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The text the model reads.
    pub text: String,
    /// Caller's metadata, echoed back untouched.
    pub metadata: Option<Value>,
}

/// Parses the document list of field `param`: present, non-empty, at most `max`
/// items, each a string or an object with a string `text` or `content`.
pub fn parse(value: Option<&Value>, param: &str, max: usize) -> Result<Vec<Document>, ApiError> {
    let Some(value) = value else {
        return Err(ApiError::invalid(
            format!("`{param}` is required."),
            Some(param),
        ));
    };
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(
            format!("`{param}` must be an array of documents."),
            Some(param),
        ));
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            format!("`{param}` must not be empty."),
            Some(param),
        ));
    }
    if items.len() > max {
        return Err(ApiError::invalid(
            format!(
                "`{param}` has {} documents; this server accepts at most {max} per request.",
                items.len()
            ),
            Some(param),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| one(item, param, i))
        .collect()
}

fn one(item: &Value, param: &str, i: usize) -> Result<Document, ApiError> {
    let bad = || {
        ApiError::invalid(
            format!(
                "`{param}[{i}]` must be a string or an object with a string `text` or `content`."
            ),
            Some(param),
        )
    };
    match item {
        Value::String(s) => Ok(Document {
            text: s.clone(),
            metadata: None,
        }),
        Value::Object(obj) => {
            let text = obj
                .get("text")
                .or_else(|| obj.get("content"))
                .and_then(Value::as_str)
                .ok_or_else(bad)?;
            Ok(Document {
                text: text.to_string(),
                metadata: obj.get("metadata").cloned(),
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn all_three_shapes_parse_and_keep_metadata() {
        let v = json!(["a", {"text": "b"}, {"content": "c", "metadata": {"source": "x.pdf", "page": 3}}]);
        let docs = parse(Some(&v), "documents", 10).unwrap();
        assert_eq!(docs[0].text, "a");
        assert_eq!(docs[1].text, "b");
        assert_eq!(docs[2].text, "c");
        assert_eq!(
            docs[2].metadata,
            Some(json!({"source": "x.pdf", "page": 3}))
        );
        assert_eq!(docs[0].metadata, None);
    }

    #[test]
    fn bad_lists_are_400s_naming_the_field() {
        for (v, needle) in [
            (json!([]), "must not be empty"),
            (json!("a"), "must be an array"),
            (json!(["a", 3]), "`documents[1]`"),
            (json!([{"title": "no text"}]), "`documents[0]`"),
            (json!([{"text": 5}]), "`documents[0]`"),
            (json!(["a", "b", "c"]), "at most 2"),
        ] {
            let e = parse(Some(&v), "documents", 2).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.contains(needle), "{v}: {}", e.message);
            assert_eq!(e.param.as_deref(), Some("documents"));
        }
        assert!(
            parse(None, "texts", 2)
                .unwrap_err()
                .message
                .contains("required")
        );
    }
}
