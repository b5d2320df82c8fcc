//! Switchyard runtime: loads models (GGUF, memory-mapped), builds their tokenizers, samples,
//! and runs generation over any [`switchyard_core::Backend`].
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod config;
pub mod engine;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod registry;
pub mod sampling;
pub mod tokenizer;

pub use model::{LoadError, Model};
