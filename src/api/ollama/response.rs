//! Ollama's response objects: one line of a stream or one whole body, for `/api/chat`
//! (`message`) and `/api/generate` (`response`); the last one has `done: true`,
//! `done_reason` and the counters and durations (nanoseconds) Ollama reports.
//!
//! Durations: `total_duration` from arrival to the end; `prompt_eval_duration` from
//! arrival to the first token (queueing and prefill); `eval_duration` from the first
//! token to the end; `load_duration` 0 (ferrite loads models at start-up).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::engine::types::{FinishReason, Usage};

/// Which route a response belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/api/chat`: text in `message.content`.
    Chat,
    /// `/api/generate`: text in `response`.
    Generate,
}

/// `message` of a chat line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// Always `assistant`.
    pub role: &'static str,
    /// New text (a stream line) or all of it (a whole body).
    pub content: String,
}

/// The fields of the final line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Final {
    /// `stop`, `length` or `load`.
    pub done_reason: &'static str,
    /// Nanoseconds from arrival to the end.
    pub total_duration: u64,
    /// Nanoseconds loading the model (0).
    pub load_duration: u64,
    /// Prompt tokens.
    pub prompt_eval_count: usize,
    /// Nanoseconds from arrival to the first token.
    pub prompt_eval_duration: u64,
    /// Generated tokens.
    pub eval_count: usize,
    /// Nanoseconds from the first token to the end.
    pub eval_duration: u64,
}

/// One line of a stream, or a whole non-streaming body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line<'a> {
    /// The model name as the client sent it.
    pub model: &'a str,
    /// RFC 3339 UTC time of this line.
    pub created_at: String,
    /// Chat text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// Generate text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Whether this is the last line.
    pub done: bool,
    /// Present on the last line.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub last: Option<Final>,
}

impl<'a> Line<'a> {
    /// A line of `kind` carrying `text`; `last` set on the final one.
    pub fn new(kind: Kind, model: &'a str, text: String, last: Option<Final>) -> Self {
        let (message, response) = match kind {
            Kind::Chat => (
                Some(Message {
                    role: "assistant",
                    content: text,
                }),
                None,
            ),
            Kind::Generate => (None, Some(text)),
        };
        Self {
            model,
            created_at: now_rfc3339(),
            message,
            response,
            done: last.is_some(),
            last,
        }
    }

    /// JSON of the line (without the newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| error_json(&e.to_string()))
    }
}

/// Ollama's error object `{"error": "..."}` as JSON.
pub fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// When a request arrived and when its first token came.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Arrival.
    pub arrival: Instant,
    /// First token (set by `token`).
    pub first_token: Option<Instant>,
}

impl Timings {
    /// Timings of a request that arrived at `arrival`.
    pub fn new(arrival: Instant) -> Self {
        Self {
            arrival,
            first_token: None,
        }
    }

    /// Notes a token.
    pub fn token(&mut self) {
        self.first_token.get_or_insert_with(Instant::now);
    }

    /// The final fields, now.
    pub fn finish(&self, reason: &'static str, usage: Usage) -> Final {
        let now = Instant::now();
        let first = self.first_token.unwrap_or(now);
        let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Final {
            done_reason: reason,
            total_duration: ns(now - self.arrival),
            load_duration: 0,
            prompt_eval_count: usage.prompt_tokens,
            prompt_eval_duration: ns(first - self.arrival),
            eval_count: usage.completion_tokens,
            eval_duration: ns(now - first),
        }
    }
}

/// Ollama's spelling of a finish reason.
pub fn done_reason(f: FinishReason) -> &'static str {
    f.as_str()
}

/// The current time as RFC 3339 UTC with microseconds.
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_nanos())
}

/// `secs` (Unix) + `nanos` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds, what every
/// client's date parser takes; `...SSZ` when `nanos` is 0).
pub fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{:06}", nanos / 1000)
    };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{frac}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_691_176_965, 499_127_000),
            "2023-08-04T19:22:45.499127Z"
        );
    }

    #[test]
    fn lines_have_ollamas_fields() {
        let line = Line::new(Kind::Generate, "m:latest", "The".into(), None).to_json();
        let v: Value = serde_json::from_str(&line).unwrap();
        // Field order on the wire is Ollama's.
        let at = |k: &str| line.find(&format!("\"{k}\":")).unwrap();
        assert!(at("model") < at("created_at") && at("created_at") < at("response"));
        assert!(at("response") < at("done"), "{line}");
        assert_eq!(v.as_object().unwrap().len(), 4);
        assert_eq!(
            (v["response"].as_str(), v["done"].as_bool()),
            (Some("The"), Some(false))
        );
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
        };
        let last = Timings::new(Instant::now()).finish("stop", usage);
        let v: Value =
            serde_json::from_str(&Line::new(Kind::Chat, "m", String::new(), Some(last)).to_json())
                .unwrap();
        assert_eq!(v["message"], json!({"role": "assistant", "content": ""}));
        assert_eq!(v["done"], true);
        assert_eq!(v["done_reason"], "stop");
        assert_eq!(
            (v["prompt_eval_count"].as_u64(), v["eval_count"].as_u64()),
            (Some(3), Some(4))
        );
        for k in [
            "total_duration",
            "load_duration",
            "prompt_eval_duration",
            "eval_duration",
        ] {
            assert!(v[k].is_u64(), "{k}: {v}");
        }
        assert!(v.get("response").is_none());
    }
}
