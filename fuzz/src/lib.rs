//! Helpers shared by the fuzz targets: two tiny tokenizers written with the runtime's GGUF writer
//! ([`GgufWriter`]) and built through the real GGUF-vocabulary path ([`Tokenizer::from_gguf`]),
//! so no model file is needed.

use std::path::Path;
use std::sync::{Once, OnceLock};

use switchyard_runtime::gguf::{GgufFile, Value};
use switchyard_runtime::gguf_write::GgufWriter;
use switchyard_runtime::tokenizer::Tokenizer;

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// A GGUF holding only a small Gemma-like SentencePiece vocabulary (byte fallback, control and
/// user-defined tokens, multi-byte pieces).
pub fn llama_vocab() -> GgufWriter {
    let mut toks: Vec<(String, i32)> = vec![
        ("<pad>".into(), CONTROL),
        ("<eos>".into(), CONTROL),
        ("<bos>".into(), CONTROL),
        ("<unk>".into(), UNKNOWN),
        ("<start_of_turn>".into(), CONTROL),
        ("<end_of_turn>".into(), CONTROL),
        ("<b>".into(), USER_DEFINED),
        ("▁▁".into(), USER_DEFINED),
    ];
    for b in 0..=255u8 {
        toks.push((format!("<0x{b:02X}>"), BYTE));
    }
    for c in 'a'..='z' {
        toks.push((c.to_string(), NORMAL));
    }
    for t in [
        "▁", "▁t", "h", "he", "▁the", "▁a", "é", "日", "本", "語", "▁hello", "\n", "\n\n", "ll",
        "lo", "hel", "▁he", "▁hel", "▁hell", "model", "user", "👋", "💡", "ça",
    ] {
        toks.push((t.to_string(), NORMAL));
    }
    let n = toks.len();
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::Str("gemma3".into()))
        .kv("tokenizer.ggml.model", Value::Str("llama".into()))
        .kv_strs("tokenizer.ggml.tokens", toks.iter().map(|t| t.0.as_str()))
        .kv_f32s("tokenizer.ggml.scores", (0..n).map(|i| -(i as f32)))
        .kv_i32s("tokenizer.ggml.token_type", toks.iter().map(|t| t.1))
        .kv("tokenizer.ggml.bos_token_id", Value::U64(2))
        .kv("tokenizer.ggml.eos_token_id", Value::U64(1))
        .kv("tokenizer.ggml.unknown_token_id", Value::U64(3))
        .kv("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .kv("tokenizer.ggml.add_space_prefix", Value::Bool(false))
        .kv("tokenizer.chat_template", Value::Str(GEMMA_TEMPLATE.into()));
    w
}

/// GPT-2's byte → printable character map.
pub fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec!['\0'; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        out[b as usize] = char::from_u32(c).expect("valid");
    }
    out
}

/// A GGUF holding only a small Qwen2-like byte-level BPE vocabulary.
pub fn gpt2_vocab() -> GgufWriter {
    let bc = byte_chars();
    let enc = |s: &str| s.bytes().map(|b| bc[b as usize]).collect::<String>();
    let mut toks: Vec<(String, i32)> = bc.iter().map(|c| (c.to_string(), NORMAL)).collect();
    let mut merges = Vec::new();
    for (a, b) in [
        (" ", "t"),
        ("h", "e"),
        (" t", "he"),
        ("é", ""),
        ("l", "l"),
        ("he", "ll"),
        ("hell", "o"),
        (" ", "hello"),
        ("\n", "\n"),
    ] {
        if b.is_empty() {
            continue;
        }
        let (ea, eb) = (enc(a), enc(b));
        merges.push(format!("{ea} {eb}"));
        toks.push((format!("{ea}{eb}"), NORMAL));
    }
    // "é" as two bytes merged.
    let e = enc("é");
    let mut ch = e.chars();
    let (c0, c1) = (ch.next().unwrap(), ch.next().unwrap());
    merges.push(format!("{c0} {c1}"));
    toks.push((e, NORMAL));
    for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        toks.push((s.into(), CONTROL));
    }
    let n = toks.len();
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::Str("qwen2".into()))
        .kv("tokenizer.ggml.model", Value::Str("gpt2".into()))
        .kv("tokenizer.ggml.pre", Value::Str("qwen2".into()))
        .kv_strs("tokenizer.ggml.tokens", toks.iter().map(|t| t.0.as_str()))
        .kv_i32s("tokenizer.ggml.token_type", toks.iter().map(|t| t.1))
        .kv_strs("tokenizer.ggml.merges", merges)
        .kv("tokenizer.ggml.eos_token_id", Value::U64(n as u64 - 1))
        .kv("tokenizer.ggml.add_bos_token", Value::Bool(false))
        .kv("tokenizer.chat_template", Value::Str(CHATML_TEMPLATE.into()));
    w
}

/// Qwen-style ChatML template.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages %}{%- if loop.first and messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// Gemma-style template.
pub const GEMMA_TEMPLATE: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

fn build(w: &GgufWriter) -> Tokenizer {
    let g = GgufFile::from_bytes(Path::new("fuzz-vocab.gguf"), w.to_bytes())
        .expect("fuzz vocabulary GGUF parses");
    Tokenizer::from_gguf(&g).expect("fuzz vocabulary builds")
}

/// The two tokenizers, built once: `[llama (SentencePiece), gpt2 (byte-level BPE)]`.
pub fn tokenizers() -> &'static [Tokenizer; 2] {
    static T: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    T.get_or_init(|| [build(&llama_vocab()), build(&gpt2_vocab())])
}

/// Lets panics that project code catches on purpose pass: `ChatTemplate::render` turns a panic
/// inside minijinja into an error (minijinja 2.24 panics on `''[::-1]`, and overflows on
/// `s[:4:-1]`), but libfuzzer-sys's panic hook aborts at every panic, caught or not. A panic
/// that escapes the target is still a crash: libfuzzer-sys aborts when the target unwinds.
pub fn allow_caught_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Print, do not abort (an escaped panic still aborts, after unwinding).
        std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    });
}

