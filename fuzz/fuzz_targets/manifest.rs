//! Manifest loaders: the model registry's TOML manifests and the Neuron artifact manifest
//! (parse + validate). Errors, never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = switchyard_runtime::registry::parse_manifest(text, "fuzz.toml") {
        let _ = switchyard_runtime::registry::cached_path(&m);
    }
    if let Ok(m) = switchyard_backend_neuron::Manifest::parse(text, Path::new("manifest.toml")) {
        let (b, s) = m.largest();
        let buckets: Vec<(usize, usize)> = m
            .buckets
            .iter()
            .map(|x| (x.batch_size, x.seq_len))
            .collect();
        assert!(
            switchyard_backend_neuron::manifest::pick_bucket(&buckets, b, s).is_some(),
            "a validated manifest has a bucket for its largest step"
        );
    }
});
