//! AWS Neuron (Trainium / Inferentia) backend of Switchyard.
//!
//! The Neuron runtime library (`libnrt.so`) is loaded at run time with `libloading` through a
//! hand-written function table ([`ffi`]), so the crate builds without the Neuron SDK and a
//! machine without Neuron devices gets a typed [`BackendError::Unavailable`]:
//!
//! ```no_run
//! match switchyard_backend_neuron::probe() {
//!     Ok(info) => println!("{} NeuronCore(s) visible", info.visible_cores),
//!     Err(e) => eprintln!("no Neuron: {e}"),
//! }
//! ```
//!
//! Neuron runs precompiled NEFF graphs with static shapes. [`NeuronBackend::load`] reads an
//! artifact directory ([`manifest`]) holding one NEFF per (batch size, sequence length) bucket
//! and reports the buckets through `capabilities().shape_buckets`; the engine then keeps every
//! step within the largest bucket, and each step runs on the smallest bucket that holds it,
//! padded (see `README.md` for the graph interface and how to produce artifacts).
//!
//! Library search: `$NEURON_RT_LIB`, then `/opt/aws/neuron/lib`, then the loader path.
#![deny(missing_docs)]

mod backend;
pub mod ffi;
pub mod manifest;
pub mod runtime;

use std::path::PathBuf;

use switchyard_core::BackendError;

pub use backend::{NeuronBackend, PaddingSnapshot, PaddingStats};
pub use ffi::{NrtError, NrtStatus};
pub use manifest::Manifest;

/// What the Neuron runtime reports before `nrt_init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeuronInfo {
    /// The `libnrt` that was loaded.
    pub library: PathBuf,
    /// NeuronCores (virtual cores) in the instance.
    pub total_cores: u32,
    /// NeuronCores visible to this process (`NEURON_RT_VISIBLE_CORES`).
    pub visible_cores: u32,
}

pub(crate) fn no_cores_error() -> BackendError {
    BackendError::Unavailable {
        backend: "neuron",
        reason: "the Neuron runtime sees no NeuronCore (no Neuron device, the neuron driver not \
                 loaded, or NEURON_RT_VISIBLE_CORES excludes every core)"
            .into(),
    }
}

/// Finds `libnrt` and counts NeuronCores, or says why there are none (library missing, no core
/// visible). Does not initialize the runtime. Never panics.
pub fn probe() -> Result<NeuronInfo, BackendError> {
    let lib = ffi::NrtLib::load().map_err(backend::to_backend_error)?;
    let unavailable = |e: NrtError| BackendError::Unavailable {
        backend: "neuron",
        reason: e.to_string(),
    };
    let total_cores = lib.total_cores().map_err(unavailable)?;
    let visible_cores = lib.visible_cores().map_err(unavailable)?;
    if visible_cores == 0 {
        return Err(no_cores_error());
    }
    Ok(NeuronInfo {
        library: lib.path.clone(),
        total_cores,
        visible_cores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip() {
        for s in NrtStatus::ALL {
            assert_eq!(NrtStatus::from_raw(s.as_raw()), s);
            assert!(s.to_string().contains(&format!("({})", s.as_raw())));
        }
        assert_eq!(NrtStatus::check(0), Ok(()));
        assert_eq!(NrtStatus::from_raw(1002), NrtStatus::ExecBadInput);
        assert_eq!(NrtStatus::from_raw(4242), NrtStatus::Unknown(4242));
        assert!(NrtStatus::Resource.is_out_of_memory());
    }

    #[test]
    fn buckets_pick_the_smallest_fit() {
        use manifest::pick_bucket;
        let b = [(1, 16), (4, 16), (4, 64), (1, 64)];
        assert_eq!(pick_bucket(&b, 1, 1), Some(0));
        assert_eq!(pick_bucket(&b, 2, 3), Some(1));
        assert_eq!(pick_bucket(&b, 1, 17), Some(3));
        assert_eq!(pick_bucket(&b, 3, 40), Some(2));
        assert_eq!(pick_bucket(&b, 5, 1), None);
        assert_eq!(pick_bucket(&b, 1, 65), None);
    }

    #[test]
    fn manifest_validation() {
        let text = |buckets: &str| {
            format!(
                "model = \"m\"\nvocab_size = 8\n[kv]\nblock_size = 4\nnum_blocks = 8\n\
                 bytes_per_token = 8\nmax_blocks_per_seq = 4\n{buckets}"
            )
        };
        let ok: Manifest = toml::from_str(&text(
            "[[buckets]]\nbatch_size = 1\nseq_len = 8\nneff = \"a\"\n\
             [[buckets]]\nbatch_size = 2\nseq_len = 16\nneff = \"b\"\n",
        ))
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.largest(), (2, 16));
        assert_eq!(ok.tensors.logits, "logits");
        let no_cover: Manifest = toml::from_str(&text(
            "[[buckets]]\nbatch_size = 4\nseq_len = 8\nneff = \"a\"\n\
             [[buckets]]\nbatch_size = 1\nseq_len = 16\nneff = \"b\"\n",
        ))
        .unwrap();
        assert!(no_cover.validate().unwrap_err().contains("largest"));
        let too_long: Manifest = toml::from_str(&text(
            "[[buckets]]\nbatch_size = 1\nseq_len = 32\nneff = \"a\"\n",
        ))
        .unwrap();
        assert!(too_long
            .validate()
            .unwrap_err()
            .contains("max_blocks_per_seq"));
        let empty = Manifest {
            buckets: Vec::new(),
            ..ok
        };
        assert!(empty.validate().unwrap_err().contains("no [[buckets]]"));
    }

    /// Fuzz find (manifest): `max_blocks_per_seq × block_size` overflowed in `validate` (a
    /// panic with overflow checks, a wrong "fits" without), and the KV state size the backend
    /// computes from the sizes could overflow too.
    #[test]
    fn manifest_sizes_that_overflow_are_rejected() {
        let text = |kv: &str| {
            format!(
                "model = \"m\"\nvocab_size = 8\n[kv]\n{kv}\n\
                 [[buckets]]\nbatch_size = 1\nseq_len = 16\nneff = \"a\"\n"
            )
        };
        for kv in [
            "block_size = 4\nnum_blocks = 1\nbytes_per_token = 1\n\
             max_blocks_per_seq = 4611686018427387904",
            "block_size = 16\nnum_blocks = 1152921504606846976\nbytes_per_token = 16\n\
             max_blocks_per_seq = 1",
        ] {
            let e = Manifest::parse(&text(kv), std::path::Path::new("m.toml")).unwrap_err();
            assert!(e.contains("overflows"), "{e}");
        }
    }

    #[test]
    fn missing_library_is_unavailable() {
        // Only this test touches NEURON_RT_LIB in this binary.
        std::env::set_var("NEURON_RT_LIB", "/nonexistent/libnrt.so.1");
        let e = probe().unwrap_err();
        std::env::remove_var("NEURON_RT_LIB");
        match e {
            BackendError::Unavailable { backend, reason } => {
                assert_eq!(backend, "neuron");
                assert!(reason.contains("/nonexistent/libnrt.so.1"), "{reason}");
                assert!(reason.contains("NEURON_RT_LIB"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
