//! Incremental detokenization with arbitrary token ids, on a SentencePiece (byte fallback) and a
//! byte-level BPE vocabulary. Out-of-range ids are errors, never panics; while every id is
//! valid, the streamed deltas plus the flush equal the decode of all ids (after an invalid
//! byte-fallback group, which re-decodes text already sent: the text after it).
//!
//! Input: byte 0 picks the tokenizer (bit 0) and `skip_special` (bit 1); then little-endian u16
//! ids taken modulo (vocabulary size + 8), so a few are out of range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_runtime::tokenizer::IncrementalDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let tok = &switchyard_fuzz::tokenizers()[(sel & 1) as usize];
    let skip = sel & 2 != 0;
    let ids: Vec<u32> = rest
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])) % (tok.vocab_size as u32 + 8))
        .collect();
    let mut dec = IncrementalDecoder::new(skip);
    let mut streamed = String::new();
    for (i, &id) in ids.iter().enumerate() {
        match dec.push(tok, id) {
            Ok(d) => streamed.push_str(&d),
            Err(_) => {
                assert!(
                    ids[..=i].iter().any(|&x| x as usize >= tok.vocab_size),
                    "push failed with every id in range: {:?}",
                    &ids[..=i]
                );
                // The bad id stays in the window: later pushes and the flush fail too.
                let _ = dec.push(tok, 0);
                let _ = dec.flush(tok);
                let _ = tok.decode(&ids, skip);
                return;
            }
        }
    }
    streamed.push_str(&dec.flush(tok).expect("flush of valid ids"));
    let whole = tok.decode(&ids, skip).expect("decode of valid ids");
    match whole.rfind('\u{FFFD}') {
        None => assert_eq!(
            streamed, whole,
            "stream differs from the whole decode of {ids:?}"
        ),
        // An invalid byte-fallback group re-decodes text already sent (its bytes become
        // U+FFFD); what follows the last one must still arrive.
        Some(i) => assert!(
            streamed.ends_with(&whole[i + 3..]),
            "stream {streamed:?} lost the end of {whole:?} ({ids:?})"
        ),
    }
    let _ = tok.encode(&whole, false);
});
