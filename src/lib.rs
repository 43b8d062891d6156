//! ferrite: an LLM serving engine. One process serves quantized LLMs (GGUF) and encoder
//! models (embeddings, rerank, classifiers, NER) under one memory budget over OpenAI-
//! and Ollama-compatible HTTP APIs, routing requests by `model` through a registry and
//! batching every concurrent request onto each model through a scheduler and a paged KV
//! cache.
//! `selftest` and `bench` prove a device: every kernel against the CPU reference, and
//! the speed of a 7B-shaped model on it.

pub mod api;
pub mod bench;
pub mod config;
pub mod device;
pub mod engine;
pub mod malloc_tuning;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod scratch;
pub mod selftest;
pub mod shutdown;
pub mod startup;
pub mod structured;
