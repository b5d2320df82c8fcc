//! Helpers shared by the fuzz targets: a minimal GGUF writer and two tiny tokenizers built
//! through the real GGUF-vocabulary path ([`Tokenizer::from_gguf`]), so no model file is needed.

use std::path::Path;
use std::sync::{Once, OnceLock};

use switchyard_runtime::gguf::GgufFile;
use switchyard_runtime::tokenizer::Tokenizer;

/// A GGUF metadata value to write.
pub enum Kv {
    /// Type 4.
    U32(u32),
    /// Type 6.
    F32(f32),
    /// Type 7.
    Bool(bool),
    /// Type 8.
    Str(String),
    /// Array of strings.
    Strs(Vec<String>),
    /// Array of f32.
    F32s(Vec<f32>),
    /// Array of i32.
    I32s(Vec<i32>),
}

fn put_str(v: &mut Vec<u8>, s: &str) {
    v.extend((s.len() as u64).to_le_bytes());
    v.extend(s.as_bytes());
}

/// GGUF v3 bytes: metadata, then tensors `(name, ggml dims, type id, data)` laid out in order
/// after the 32-byte-aligned header.
pub fn gguf_bytes(kvs: &[(&str, Kv)], tensors: &[(&str, &[u64], u32, &[u8])]) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend((tensors.len() as u64).to_le_bytes());
    v.extend((kvs.len() as u64).to_le_bytes());
    for (k, val) in kvs {
        put_str(&mut v, k);
        match val {
            Kv::U32(x) => {
                v.extend(4u32.to_le_bytes());
                v.extend(x.to_le_bytes());
            }
            Kv::F32(x) => {
                v.extend(6u32.to_le_bytes());
                v.extend(x.to_le_bytes());
            }
            Kv::Bool(b) => {
                v.extend(7u32.to_le_bytes());
                v.push(*b as u8);
            }
            Kv::Str(s) => {
                v.extend(8u32.to_le_bytes());
                put_str(&mut v, s);
            }
            Kv::Strs(a) => {
                v.extend(9u32.to_le_bytes());
                v.extend(8u32.to_le_bytes());
                v.extend((a.len() as u64).to_le_bytes());
                for s in a {
                    put_str(&mut v, s);
                }
            }
            Kv::F32s(a) => {
                v.extend(9u32.to_le_bytes());
                v.extend(6u32.to_le_bytes());
                v.extend((a.len() as u64).to_le_bytes());
                for x in a {
                    v.extend(x.to_le_bytes());
                }
            }
            Kv::I32s(a) => {
                v.extend(9u32.to_le_bytes());
                v.extend(5u32.to_le_bytes());
                v.extend((a.len() as u64).to_le_bytes());
                for x in a {
                    v.extend(x.to_le_bytes());
                }
            }
        }
    }
    let mut off = 0u64;
    for (name, dims, ty, data) in tensors {
        put_str(&mut v, name);
        v.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            v.extend(d.to_le_bytes());
        }
        v.extend(ty.to_le_bytes());
        v.extend(off.to_le_bytes());
        off += data.len() as u64;
        off = off.div_ceil(32) * 32;
    }
    while !v.len().is_multiple_of(32) {
        v.push(0);
    }
    for (_, _, _, data) in tensors {
        v.extend_from_slice(data);
        while !v.len().is_multiple_of(32) {
            v.push(0);
        }
    }
    v
}

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// The metadata of a small Gemma-like SentencePiece vocabulary (byte fallback, control and
/// user-defined tokens, multi-byte pieces).
pub fn llama_vocab_kvs() -> Vec<(&'static str, Kv)> {
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
    vec![
        ("general.architecture", Kv::Str("gemma3".into())),
        ("tokenizer.ggml.model", Kv::Str("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Kv::Strs(toks.iter().map(|t| t.0.clone()).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Kv::F32s((0..n).map(|i| -(i as f32)).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Kv::I32s(toks.iter().map(|t| t.1).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Kv::U32(2)),
        ("tokenizer.ggml.eos_token_id", Kv::U32(1)),
        ("tokenizer.ggml.unknown_token_id", Kv::U32(3)),
        ("tokenizer.ggml.add_bos_token", Kv::Bool(true)),
        ("tokenizer.ggml.add_space_prefix", Kv::Bool(false)),
        ("tokenizer.chat_template", Kv::Str(GEMMA_TEMPLATE.into())),
    ]
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

/// The metadata of a small Qwen2-like byte-level BPE vocabulary.
pub fn gpt2_vocab_kvs() -> Vec<(&'static str, Kv)> {
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
    vec![
        ("general.architecture", Kv::Str("qwen2".into())),
        ("tokenizer.ggml.model", Kv::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Kv::Str("qwen2".into())),
        (
            "tokenizer.ggml.tokens",
            Kv::Strs(toks.iter().map(|t| t.0.clone()).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Kv::I32s(toks.iter().map(|t| t.1).collect()),
        ),
        ("tokenizer.ggml.merges", Kv::Strs(merges)),
        ("tokenizer.ggml.eos_token_id", Kv::U32(n as u32 - 1)),
        ("tokenizer.ggml.add_bos_token", Kv::Bool(false)),
        ("tokenizer.chat_template", Kv::Str(CHATML_TEMPLATE.into())),
    ]
}

/// Qwen-style ChatML template.
pub const CHATML_TEMPLATE: &str = "{%- for message in messages %}{%- if loop.first and messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// Gemma-style template.
pub const GEMMA_TEMPLATE: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

fn build(kvs: &[(&str, Kv)]) -> Tokenizer {
    let g = GgufFile::from_bytes(Path::new("fuzz-vocab.gguf"), gguf_bytes(kvs, &[]))
        .expect("fuzz vocabulary GGUF parses");
    Tokenizer::from_gguf(&g).expect("fuzz vocabulary builds")
}

/// The two tokenizers, built once: `[llama (SentencePiece), gpt2 (byte-level BPE)]`.
pub fn tokenizers() -> &'static [Tokenizer; 2] {
    static T: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    T.get_or_init(|| [build(&llama_vocab_kvs()), build(&gpt2_vocab_kvs())])
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
