//! Detection of the GPU: with or without one, probing and loading give typed results, never a
//! panic. This runs everywhere, including CI machines without NVIDIA drivers.

mod common;

use switchyard_backend_cuda::{ops::GpuOps, probe, CudaBackend};
use switchyard_core::BackendError;

fn is_typed_unavailable(e: &BackendError) -> bool {
    matches!(e, BackendError::Unavailable { backend: "cuda", reason } if !reason.is_empty())
}

#[test]
fn no_gpu_is_a_typed_error_not_a_panic() {
    let cfg = common::qwen_like();
    let weights = common::MemWeights::default();
    match probe() {
        Ok(devices) => {
            assert!(!devices.is_empty());
            for d in &devices {
                eprintln!("found {d:?}");
                assert!(d.total_memory > 0 && d.compute_capability.0 >= 3, "{d:?}");
            }
            // A device that does not exist is a typed error too.
            let err = CudaBackend::load(devices.len() + 7, &cfg, &weights)
                .err()
                .expect("bad ordinal must fail");
            assert!(is_typed_unavailable(&err), "bad ordinal: {err:?}");
            // Missing weights are reported by name.
            match CudaBackend::load(0, &cfg, &weights) {
                Err(BackendError::MissingTensor(name)) => {
                    eprintln!("missing tensor reported: {name}")
                }
                Err(e) => panic!("expected MissingTensor, got {e}"),
                Ok(_) => panic!("loading without weights must fail"),
            }
        }
        Err(e) => {
            eprintln!("SKIPPED GPU part: no CUDA device ({e})");
            assert!(
                is_typed_unavailable(&e),
                "probe error is not Unavailable: {e:?}"
            );
            let err = CudaBackend::load(0, &cfg, &weights)
                .err()
                .expect("load without a GPU must fail");
            assert!(is_typed_unavailable(&err), "load without a GPU: {err:?}");
            let err = GpuOps::new(0)
                .err()
                .expect("GpuOps without a GPU must fail");
            assert!(is_typed_unavailable(&err), "GpuOps without a GPU: {err:?}");
        }
    }
}

#[test]
fn kernel_cache_location_is_reported() {
    let dir = switchyard_backend_cuda::kernel_cache_dir();
    eprintln!("kernel cache directory: {dir:?}");
    assert!(switchyard_backend_cuda::kernel_source().contains("attention_bf16"));
}
