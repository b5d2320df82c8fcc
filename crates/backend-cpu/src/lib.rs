//! CPU backend of Switchyard: runs gemma3 / qwen2 / qwen3 / qwen3moe / llama / phi3 decoder models over a packed batch of
//! many sequences, with weights kept in their GGUF encoding (memory-mapped, never expanded to
//! f32), quantized SIMD matmul kernels chosen at run time, and a paged f16 KV cache.
#![deny(missing_docs)]

mod hugebuf;
pub mod kernels;
mod model;
mod moe;
pub mod ops;
mod step;
mod team;

pub use model::CpuBackend;
