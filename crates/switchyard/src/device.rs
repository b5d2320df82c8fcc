//! `--device auto|cpu|cuda[:N]|neuron`: picks and builds the backend.

use anyhow::{bail, Context, Result};
use switchyard_core::Backend;
use switchyard_runtime::engine::{check_draft_vocabulary, DraftModel, SpeculativeConfig};
use switchyard_runtime::Model;

/// Environment variable naming the Neuron artifact directory.
pub const NEURON_ARTIFACTS_ENV: &str = "SWITCHYARD_NEURON_ARTIFACTS";

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// A GPU when one is usable, else the CPU.
    Auto,
    /// The CPU backend.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// AWS Neuron: the NEFF artifacts named by `SWITCHYARD_NEURON_ARTIFACTS`.
    Neuron,
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "neuron" => Ok(Self::Neuron),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(format!(
                    "invalid device '{s}' (expected auto, cpu, cuda, cuda:N or neuron)"
                )),
            },
        }
    }
}

/// Builds the backend for `device`, logging why `auto` fell back to the CPU.
pub fn create_backend(device: Device, model: &Model) -> Result<Box<dyn Backend>> {
    // A weight the backend refuses (missing, wrong shape or type) is named with its file.
    let in_file =
        |e: switchyard_core::BackendError| anyhow::anyhow!("{}: {e}", model.path.display());
    match device {
        Device::Cpu => Ok(Box::new(
            switchyard_backend_cpu::CpuBackend::load(&model.config, model.weights())
                .map_err(in_file)?,
        )),
        Device::Cuda(n) => {
            let devices = switchyard_backend_cuda::probe()?;
            if n >= devices.len() {
                bail!(
                    "--device cuda:{n}: only {} CUDA device(s) found",
                    devices.len()
                );
            }
            Ok(Box::new(
                switchyard_backend_cuda::CudaBackend::load(n, &model.config, model.weights())
                    .map_err(in_file)?,
            ))
        }
        Device::Neuron => {
            switchyard_backend_neuron::probe()?;
            let Some(dir) = std::env::var_os(NEURON_ARTIFACTS_ENV).filter(|d| !d.is_empty()) else {
                bail!(
                    "--device neuron needs compiled NEFF artifacts: set {NEURON_ARTIFACTS_ENV} to \
                     the artifact directory (see crates/backend-neuron/README.md)"
                );
            };
            let backend =
                switchyard_backend_neuron::NeuronBackend::load(std::path::Path::new(&dir))?;
            if backend.manifest().vocab_size != model.config.vocab_size {
                bail!(
                    "the Neuron artifacts have a vocabulary of {} tokens, the model {}",
                    backend.manifest().vocab_size,
                    model.config.vocab_size
                );
            }
            Ok(Box::new(backend))
        }
        Device::Auto => match switchyard_backend_cuda::probe() {
            Ok(d) if !d.is_empty() => {
                tracing::info!(gpu = %d[0].name, "using CUDA device 0");
                Ok(Box::new(
                    switchyard_backend_cuda::CudaBackend::load(0, &model.config, model.weights())
                        .map_err(in_file)?,
                ))
            }
            // `auto` on a machine without a GPU is the normal case, not a warning.
            Ok(_) => {
                tracing::info!("device: cpu (--device auto: no CUDA device found)");
                create_backend(Device::Cpu, model)
            }
            Err(e) => {
                tracing::info!("device: cpu (--device auto: CUDA not usable here: {e})");
                create_backend(Device::Cpu, model)
            }
        },
    }
}

/// The draft model of `draft_model` speculative decoding, if `spec` names one, resolved as
/// `-m` resolves the target (alias, GGUF, manifest, HF directory or Hub repository) and its
/// vocabulary checked against `target`'s; its weights are not loaded yet ([`load_draft`]), so
/// a mismatch is reported before the target's weights are either.
pub(crate) fn open_draft(
    spec: Option<&SpeculativeConfig>,
    args: &crate::ModelArgs,
    target: &Model,
) -> Result<Option<(String, Model)>> {
    let Some(name) = spec.and_then(SpeculativeConfig::draft_model_name) else {
        return Ok(None);
    };
    let m = Model::load(name, !args.no_fetch)
        .with_context(|| format!("loading the draft model {name}"))?;
    check_draft_vocabulary(&target.tokenizer, &m.tokenizer).map_err(|e| {
        anyhow::anyhow!(
            "the draft model {name} ({}) does not share the tokenizer of the model {} ({}): \
             {e}; a draft model needs the same vocabulary",
            m.path.display(),
            args.model,
            target.path.display()
        )
    })?;
    Ok(Some((name.to_string(), m)))
}

/// Loads the draft model [`open_draft`] opened on the device the target runs on
/// (`target_kind`: the CPU, or the CUDA device `device` names).
pub(crate) fn load_draft(
    draft: Option<(String, Model)>,
    device: Device,
    target_kind: &str,
) -> Result<Option<DraftModel>> {
    let Some((name, m)) = draft else {
        return Ok(None);
    };
    let device = match (target_kind, device) {
        ("cpu", _) => Device::Cpu,
        ("cuda", Device::Cuda(n)) => Device::Cuda(n),
        ("cuda", _) => Device::Cuda(0),
        (other, _) => bail!(
            "--speculative-config: draft_model runs on the cpu and cuda backends, not {other}"
        ),
    };
    let backend = create_backend(device, &m).context("loading the draft model")?;
    tracing::info!(
        draft_model = name,
        file = %m.path.display(),
        backend = backend.capabilities().kind,
        "speculative decoding: draft model loaded"
    );
    Ok(Some(DraftModel {
        name,
        backend,
        tokenizer: m.tokenizer,
        config: m.config,
    }))
}

/// One line per backend for `switchyard info`.
pub fn describe_backends() -> Vec<String> {
    let mut v = vec!["cpu: available".to_string()];
    match switchyard_backend_cuda::probe() {
        Ok(devs) if devs.is_empty() => v.push("cuda: no device".into()),
        Ok(devs) => {
            for d in devs {
                v.push(format!(
                    "cuda:{}: {} ({:.1} GiB, compute {}.{})",
                    d.ordinal,
                    d.name,
                    d.total_memory as f64 / (1u64 << 30) as f64,
                    d.compute_capability.0,
                    d.compute_capability.1
                ));
            }
        }
        Err(e) => v.push(format!("cuda: unavailable ({e})")),
    }
    match switchyard_backend_neuron::probe() {
        Ok(n) => v.push(format!(
            "neuron: {} of {} NeuronCore(s) visible ({})",
            n.visible_cores,
            n.total_cores,
            n.library.display()
        )),
        Err(e) => v.push(format!("neuron: unavailable ({e})")),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("auto".parse(), Ok(Device::Auto));
        assert_eq!("cuda:3".parse(), Ok(Device::Cuda(3)));
        assert_eq!("cuda".parse(), Ok(Device::Cuda(0)));
        assert!("tpu"
            .parse::<Device>()
            .unwrap_err()
            .contains("invalid device 'tpu'"));
    }
}
