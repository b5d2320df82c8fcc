//! Switchyard runtime: loads models (GGUF or Hugging Face safetensors, memory-mapped), builds
//! their tokenizers, samples, and runs generation over any [`switchyard_core::Backend`].
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod config;
pub mod constraint;
pub mod engine;
pub mod generate;
pub mod generation;
pub mod gguf;
pub mod gguf_write;
pub mod hf;
pub mod hub;
mod mmap;
pub mod model;
pub mod registry;
pub mod safetensors;
pub mod sampling;
pub mod tokenizer;

pub use generation::GenerationDefaults;
pub use mmap::set_read_into_memory;
pub use model::{LoadError, Model, Weights};
