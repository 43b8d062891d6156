use clap::Parser;

use super::*;
use crate::config::{Cli, CliCommand};

fn args(flags: &[&str]) -> ServeArgs {
    let argv = std::iter::once("ferrite")
        .chain(std::iter::once("serve"))
        .chain(flags.iter().copied());
    match Cli::parse_from(argv).command {
        CliCommand::Serve(a) => a,
        _ => unreachable!("serve was parsed"),
    }
}

fn names(flags: &[&str], file: &str) -> Vec<(String, SpecKind, Vec<String>)> {
    let a = args(flags);
    let file = ConfigFile::parse(file).unwrap();
    specs(&a, &file)
        .unwrap()
        .iter()
        .map(|s| (name_of(s, Path::new("models")), s.kind, s.aliases.clone()))
        .collect()
}

#[test]
fn defaults_serve_one_llm_and_one_encoder() {
    let got = names(&[], "");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(got[1].0, "all-MiniLM-L6-v2");
}

#[test]
fn repeated_flags_serve_several_named_models() {
    let got = names(
        &[
            "--model",
            "a=x/one.gguf",
            "--model",
            "y/two.gguf",
            "--encoder",
            "emb=x/enc",
            "--encoder",
            "hf:BAAI/bge-reranker-v2-m3",
            "--model-alias",
            "gpt-4o",
        ],
        "",
    );
    let short: Vec<(&str, SpecKind)> = got.iter().map(|(n, k, _)| (n.as_str(), *k)).collect();
    assert_eq!(
        short,
        [
            ("a", SpecKind::Llm),
            ("two", SpecKind::Llm),
            ("emb", SpecKind::Encoder),
            ("BAAI/bge-reranker-v2-m3", SpecKind::Encoder),
        ]
    );
    assert_eq!(got[0].2, ["gpt-4o"], "aliases go to the first LLM");
}

#[test]
fn a_config_file_replaces_the_defaults_of_the_kinds_it_lists() {
    let got = names(
        &["--encoder", "none"],
        "[[models]]\nname = \"chat\"\nsource = \"m/a.gguf\"\n[[models]]\nsource = \"m/b.gguf\"\n",
    );
    let short: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(short, ["chat", "b"]);
}

#[test]
fn none_with_other_values_is_refused() {
    let a = args(&["--model", "none", "--model", "x.gguf"]);
    let err = specs(&a, &ConfigFile::default()).unwrap_err().to_string();
    assert!(err.contains("--model none"), "{err}");
}
