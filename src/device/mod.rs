//! Device choice: `--device auto` (the default) takes the first GPU when this binary has
//! the CUDA backend (`--features cuda`) and finds a driver and a device, else the CPU,
//! and says why; `--device cuda[:N]` insists on GPU N and fails with the reason when it
//! cannot have it; `--device cpu` never touches CUDA.
//!
//! Also here, device-independent pieces of the GPU path that are plain logic (so they
//! are compiled and tested everywhere): `kernels` (sources, the `Device` interface and
//! checked launch wrappers), `memory_budget` (KV cache sizing from device memory) and
//! `memory_gate` (admission pause on memory pressure); `gpu_monitor` (NVML sampling,
//! `cuda` feature) drives the gate; `emulator`, the kernels built for the host as a
//! [`kernels::Device`] (tests and `ferrite selftest --device emulator`).

use anyhow::{Result, bail};

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod emulator;
#[cfg(feature = "cuda")]
pub mod gpu_monitor;
pub mod kernels;
pub mod memory_budget;
pub mod memory_gate;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// The host CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

/// The resolved `--device`, with the reason for the log.
#[derive(Debug, Clone)]
pub struct DeviceChoice {
    /// Where the model runs.
    pub kind: DeviceKind,
    /// Why (what was found, or why not).
    pub reason: String,
    /// The operator named the device (`cpu`, `cuda[:N]`): no fallback.
    pub explicit: bool,
}

impl DeviceKind {
    /// Resolves `--device` (`auto`, `cpu`, `cuda[:N]`).
    pub fn resolve(spec: &str) -> Result<DeviceChoice> {
        let choice = |kind, reason: String, explicit| DeviceChoice {
            kind,
            reason,
            explicit,
        };
        match spec {
            "cpu" => Ok(choice(DeviceKind::Cpu, "--device cpu".into(), true)),
            "auto" => Ok(match gpu(0) {
                Ok(found) => choice(DeviceKind::Cuda(0), found, false),
                Err(why) => choice(DeviceKind::Cpu, why, false),
            }),
            s if s == "cuda" || s.starts_with("cuda:") => {
                let n = match s.strip_prefix("cuda:") {
                    None => 0,
                    Some(n) => n.parse::<usize>().map_err(|_| {
                        anyhow::anyhow!(
                            "--device {s}: expected cuda or cuda:N with N a device index"
                        )
                    })?,
                };
                match gpu(n) {
                    Ok(found) => Ok(choice(DeviceKind::Cuda(n), found, true)),
                    Err(why) => bail!("--device {s}: {why}"),
                }
            }
            other => bail!("--device {other}: expected auto, cpu or cuda[:N]"),
        }
    }

    /// Name shown in `/health` and logs (`cpu`, `cuda:0`).
    pub fn name(self) -> String {
        match self {
            DeviceKind::Cpu => "cpu".into(),
            DeviceKind::Cuda(n) => format!("cuda:{n}"),
        }
    }
}

/// GPU `n` described, or why it cannot be used.
#[cfg(feature = "cuda")]
fn gpu(n: usize) -> std::result::Result<String, String> {
    let info = cuda::probe(n)?;
    Ok(format!(
        "{} (compute capability {}.{}, {} MiB)",
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        info.total_memory >> 20
    ))
}

#[cfg(not(feature = "cuda"))]
fn gpu(_n: usize) -> std::result::Result<String, String> {
    Err("this binary was built without the CUDA backend (build with --features cuda)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_bad_specs() {
        let c = DeviceKind::resolve("cpu").unwrap();
        assert_eq!((c.kind, c.explicit), (DeviceKind::Cpu, true));
        for bad in ["gpu", "cuda:x", "cuda:-1", ""] {
            assert!(DeviceKind::resolve(bad).is_err(), "{bad}");
        }
        assert_eq!(DeviceKind::Cuda(3).name(), "cuda:3");
    }

    #[test]
    fn auto_falls_back_to_the_cpu_with_a_reason_and_cuda_fails_without_a_gpu() {
        // Holds on machines without a usable GPU (CI); on a GPU machine auto finds it.
        let auto = DeviceKind::resolve("auto").unwrap();
        assert!(!auto.explicit);
        if auto.kind == DeviceKind::Cpu {
            assert!(!auto.reason.is_empty());
            let err = DeviceKind::resolve("cuda").unwrap_err().to_string();
            assert!(err.starts_with("--device cuda: "), "{err}");
            assert!(err.contains(&auto.reason), "{err} vs {}", auto.reason);
        }
    }
}
