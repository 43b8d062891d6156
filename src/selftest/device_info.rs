//! The device `ferrite selftest` and `ferrite bench` run on, from `--device`: `cpu`;
//! `cuda[:N]` (opened with every kernel compiled and loaded, or an error saying why
//! not: no driver, no device, NVRTC missing or failing); `emulator` (the kernels built
//! for the host); `auto`: the first GPU when one is usable, else the CPU with the reason.
//! And what was found: name, compute capability, memory, driver and NVRTC versions.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::device::cpu::isa::CpuFeatures;
use crate::device::emulator::EmuDevice;
use crate::device::kernels::Device;
use crate::device::{DeviceKind, emulator};

/// An opened device.
pub enum SelftestDevice {
    /// The host CPU; why (asked for, or no GPU).
    Cpu(String),
    /// The kernel emulator.
    Emulator(Arc<EmuDevice>),
    /// A GPU with the kernels loaded.
    #[cfg(feature = "cuda")]
    Cuda(
        Arc<crate::device::cuda::CudaDevice>,
        crate::device::cuda::GpuInfo,
    ),
}

/// What was found, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// `cpu`, `emulator` or `cuda`.
    pub kind: &'static str,
    /// `cuda:0 (NVIDIA H100 80GB HBM3)`, `emulator`, `cpu`.
    pub name: String,
    /// `9.0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
    /// Device memory, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// CUDA driver version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// NVRTC version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvrtc_version: Option<String>,
    /// The host's CPU features and thread count.
    pub cpu: String,
    /// Why this device (for `auto` on the CPU: why no GPU).
    pub note: String,
}

impl DeviceInfo {
    /// A few lines for the console.
    pub fn describe(&self) -> String {
        let mut s = format!("device: {}", self.name);
        let fields = [
            ("compute capability", self.compute_capability.clone()),
            ("memory", self.memory_mib.map(|m| format!("{m} MiB"))),
            ("driver", self.driver_version.clone()),
            ("NVRTC", self.nvrtc_version.clone()),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                s.push_str(&format!("\n  {k}: {v}"));
            }
        }
        s.push_str(&format!("\n  cpu: {}\n  {}", self.cpu, self.note));
        s
    }
}

impl SelftestDevice {
    /// Opens what `spec` names (`auto`, `cpu`, `cuda[:N]`, `emulator`).
    pub fn open(spec: &str) -> Result<Self> {
        if spec == "emulator" {
            let dev = EmuDevice::shared().map_err(|e| anyhow!("--device emulator: {e}"))?;
            return Ok(Self::Emulator(dev));
        }
        let choice = DeviceKind::resolve(spec)?;
        match choice.kind {
            DeviceKind::Cpu if choice.explicit => Ok(Self::Cpu("--device cpu".into())),
            DeviceKind::Cpu => Ok(Self::Cpu(format!(
                "no usable GPU ({}): checking the CPU instead",
                choice.reason
            ))),
            DeviceKind::Cuda(n) => open_cuda(n, spec),
        }
    }

    /// The kernel device, or `None` on the CPU.
    pub fn device(&self) -> Option<Arc<dyn Device>> {
        match self {
            Self::Cpu(_) => None,
            Self::Emulator(d) => Some(d.clone()),
            #[cfg(feature = "cuda")]
            Self::Cuda(d, _) => Some(d.clone()),
        }
    }

    /// The GPU, when it is one.
    #[cfg(feature = "cuda")]
    pub fn cuda(&self) -> Option<&Arc<crate::device::cuda::CudaDevice>> {
        match self {
            Self::Cuda(d, _) => Some(d),
            _ => None,
        }
    }

    /// Whether it is a real GPU.
    pub fn is_gpu(&self) -> bool {
        !matches!(self, Self::Cpu(_) | Self::Emulator(_))
    }

    /// What was found.
    pub fn info(&self) -> DeviceInfo {
        let f = CpuFeatures::get();
        let cpu = format!(
            "{} ({} threads, LLM kernels: {}, quantized matmul: {})",
            f.summary(),
            rayon::current_num_threads(),
            super::cpu_checks::path_name(),
            super::cpu_checks::matmul_path_name()
        );
        let base = |kind, name: String, note: String| DeviceInfo {
            kind,
            name,
            compute_capability: None,
            memory_mib: None,
            driver_version: None,
            nvrtc_version: None,
            cpu: cpu.clone(),
            note,
        };
        match self {
            Self::Cpu(why) => base("cpu", "cpu".into(), why.clone()),
            Self::Emulator(_) => base(
                "emulator",
                "emulator".into(),
                format!(
                    "the CUDA kernels built for the host with $CXX (cache {})",
                    emulator::default_cache_dir().display()
                ),
            ),
            #[cfg(feature = "cuda")]
            Self::Cuda(d, gpu) => {
                use crate::device::cuda::{driver_version, nvrtc};
                let v = |r: Result<(i32, i32), String>| {
                    Some(r.map_or_else(|e| format!("unknown ({e})"), |(a, b)| format!("{a}.{b}")))
                };
                DeviceInfo {
                    compute_capability: Some(format!(
                        "{}.{}",
                        gpu.compute_capability.0, gpu.compute_capability.1
                    )),
                    memory_mib: Some((gpu.total_memory >> 20) as u64),
                    driver_version: v(driver_version()),
                    nvrtc_version: v(nvrtc::version()),
                    ..base(
                        "cuda",
                        d.name(),
                        format!(
                            "kernels compiled by NVRTC for {}",
                            nvrtc::arch_of(gpu.compute_capability)
                        ),
                    )
                }
            }
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(n: usize, spec: &str) -> Result<SelftestDevice> {
    use crate::device::cuda::{CudaDevice, probe};
    let info = probe(n).map_err(|e| anyhow!("--device {spec}: {e}"))?;
    let dev = CudaDevice::open(n).map_err(|e| anyhow!("--device {spec}: {e}"))?;
    Ok(SelftestDevice::Cuda(Arc::new(dev), info))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_n: usize, spec: &str) -> Result<SelftestDevice> {
    anyhow::bail!(
        "--device {spec}: this binary was built without the CUDA backend (build with --features cuda)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_explicit_and_bad_specs_are_refused() {
        let d = SelftestDevice::open("cpu").unwrap();
        assert!(d.device().is_none() && !d.is_gpu());
        let info = d.info();
        assert_eq!((info.kind, info.note.as_str()), ("cpu", "--device cpu"));
        for bad in ["gpu", "cuda:x", "emu"] {
            assert!(SelftestDevice::open(bad).is_err(), "{bad}");
        }
    }
}
