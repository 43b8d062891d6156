//! Device choice. This build computes on the CPU; `--device auto` resolves to it, and
//! asking for a GPU is a clear error until the CUDA backend lands.
//!
//! Also here, device-independent pieces of the GPU path that are plain logic (so they
//! are compiled and tested everywhere): `memory_budget` (KV cache sizing from device
//! memory) and `memory_gate` (admission pause on memory pressure); `gpu_monitor`
//! (NVML sampling, `cuda` feature) drives the gate.

use anyhow::{Result, bail};

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
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
}

impl DeviceKind {
    /// Resolves `--device` (`auto`, `cpu`, `cuda[:N]`).
    pub fn resolve(spec: &str) -> Result<Self> {
        match spec {
            "auto" | "cpu" => Ok(DeviceKind::Cpu),
            s if s == "cuda" || s.starts_with("cuda:") => {
                bail!("--device {s}: this build has no CUDA backend; use --device cpu or auto")
            }
            other => bail!("--device {other}: expected auto, cpu or cuda[:N]"),
        }
    }

    /// Name shown in `/health` and logs.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
        }
    }
}
