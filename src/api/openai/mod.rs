//! OpenAI wire types: what clients send (`request`) and what we answer (`response`).

mod request;
mod response;

pub use request::*;
pub use response::*;
