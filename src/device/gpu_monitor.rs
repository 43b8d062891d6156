//! GPU monitoring through NVML (`cuda` builds): a named thread reads one GPU's memory,
//! utilization and temperature every few seconds, exports them as gauges labelled
//! with the GPU's index, and feeds the memory readings to a `MemoryGate`, calling back
//! on each pause/resume transition (`pause_engine` turns that into the engine's
//! `SetAdmissionPaused` command).
//!
//! NVML is loaded at run time (`libnvidia-ml.so.1`); when it or the GPU is missing,
//! `spawn_gpu_monitor` logs once at info and returns `None`: the server runs on without
//! GPU metrics. A reading that fails later (one field or all) is logged once per kind
//! at warn and skipped; the thread keeps going.
//!
//! Where it is started: by the start-up code (`startup.rs` / `main.rs`) once the engine
//! is running, only when the resolved device is CUDA, with the device's index and the
//! engine's handle: `spawn_gpu_monitor(index, DEFAULT_INTERVAL, pause_engine(handle))`,
//! keeping the returned `GpuMonitor` until shutdown, then `stop()` (before the engine's
//! own shutdown). Starting it after the engine has taken its memory matters: unless
//! watermarks are given, they are derived from the device's size and fitted to the
//! free memory of the first reading (see `Watermarks::fit_baseline`).
//!
//! Invariants: at most one thread per `GpuMonitor`; dropping or stopping it wakes the
//! thread at once (it sleeps on a channel, not in `sleep`) and joins it, so no thread
//! outlives its monitor; the callback runs only on the monitor thread, only on a change.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;

use super::memory_gate::{MemoryGate, MemorySample, Transition, Watermarks};
use crate::engine::handle::EngineHandle;
use crate::metrics as m;

/// Default time between two readings.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Memory of one GPU, as NVML reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    /// Installed.
    pub total_bytes: u64,
    /// Held by no process.
    pub free_bytes: u64,
    /// Allocated by all processes (the driver's own reserve not included).
    pub used_bytes: u64,
}

/// One reading of a GPU; a field is `None` when NVML could not read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuReading {
    /// Memory, if read.
    pub memory: Option<GpuMemory>,
    /// Percent of the last sample period a kernel ran (0..100), if read.
    pub utilization_percent: Option<u32>,
    /// Die temperature in degrees Celsius, if read.
    pub temperature_celsius: Option<u32>,
}

/// Where readings come from: NVML in production, a script in tests.
pub trait GpuSource: Send + 'static {
    /// Reads the GPU once.
    fn read(&mut self) -> GpuReading;
}

/// What to watch and how often.
#[derive(Debug, Clone, Copy)]
pub struct MonitorConfig {
    /// GPU index (NVML's, which is CUDA's when `CUDA_DEVICE_ORDER=PCI_BUS_ID`).
    pub index: u32,
    /// Time between readings.
    pub interval: Duration,
    /// Gate thresholds; `None`: `Watermarks::for_device` fitted to the first reading.
    pub watermarks: Option<Watermarks>,
}

/// A running monitor thread. Stopping or dropping it ends and joins the thread.
#[derive(Debug)]
pub struct GpuMonitor {
    index: u32,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GpuMonitor {
    /// The GPU it watches.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Ends the thread and waits for it (at most one reading's time).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        // Dropping the sender wakes the thread's `recv_timeout` with `Disconnected`.
        self.stop.take();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::warn!(gpu = self.index, "the GPU monitor thread panicked");
        }
    }
}

impl Drop for GpuMonitor {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Watches GPU `index` through NVML every `interval` with the default watermarks,
/// calling `on_transition` when admission should pause or resume. `None` (logged once,
/// at info) when NVML or the GPU cannot be opened, or the thread cannot start.
pub fn spawn_gpu_monitor<F>(index: u32, interval: Duration, on_transition: F) -> Option<GpuMonitor>
where
    F: FnMut(Transition) + Send + 'static,
{
    let source = NvmlSource::open(index)?;
    let cfg = MonitorConfig {
        index,
        interval,
        watermarks: None,
    };
    spawn_monitor(source, cfg, on_transition)
}

/// Starts the monitor thread on any source (see `spawn_gpu_monitor`).
pub fn spawn_monitor<S, F>(source: S, cfg: MonitorConfig, on_transition: F) -> Option<GpuMonitor>
where
    S: GpuSource,
    F: FnMut(Transition) + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("ferrite-gpu{}-monitor", cfg.index))
        .spawn(move || run(source, cfg, rx, on_transition));
    match spawned {
        Ok(thread) => Some(GpuMonitor {
            index: cfg.index,
            stop: Some(tx),
            thread: Some(thread),
        }),
        Err(e) => {
            tracing::warn!(gpu = cfg.index, "cannot start the GPU monitor thread: {e}");
            None
        }
    }
}

/// A transition callback that pauses or resumes the engine's admission.
pub fn pause_engine(handle: EngineHandle) -> impl FnMut(Transition) + Send + 'static {
    move |t| {
        if handle.set_admission_paused(t.paused()).is_err() {
            tracing::debug!("the engine has stopped; admission change dropped");
        }
    }
}

/// The monitor thread: read, export, gate; then sleep until the next reading or stop.
fn run<S, F>(mut source: S, cfg: MonitorConfig, stop: Receiver<()>, mut on_transition: F)
where
    S: GpuSource,
    F: FnMut(Transition),
{
    let label = cfg.index.to_string();
    let mut gate = cfg.watermarks.map(MemoryGate::new);
    loop {
        let reading = source.read();
        export(&label, &reading);
        if let Some(mem) = reading.memory {
            let sample = MemorySample {
                total_bytes: mem.total_bytes,
                free_bytes: mem.free_bytes,
            };
            let gate = gate.get_or_insert_with(|| {
                let wm = Watermarks::for_device(mem.total_bytes).fit_baseline(mem.free_bytes);
                tracing::info!(
                    gpu = cfg.index,
                    total_bytes = mem.total_bytes,
                    free_bytes = mem.free_bytes,
                    pause_below_free_bytes = wm.low_free_bytes(),
                    resume_above_free_bytes = wm.high_free_bytes(),
                    "GPU memory gate armed"
                );
                MemoryGate::new(wm)
            });
            if let Some(t) = gate.observe(sample) {
                log_transition(cfg.index, t, &mem, gate.watermarks());
                on_transition(t);
            }
        }
        match stop.recv_timeout(cfg.interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn export(label: &str, r: &GpuReading) {
    let gpu = label.to_string();
    if let Some(mem) = r.memory {
        metrics::gauge!(m::GPU_MEMORY_USED_BYTES, "gpu" => gpu.clone()).set(mem.used_bytes as f64);
        metrics::gauge!(m::GPU_MEMORY_TOTAL_BYTES, "gpu" => gpu.clone())
            .set(mem.total_bytes as f64);
    }
    if let Some(u) = r.utilization_percent {
        metrics::gauge!(m::GPU_UTILIZATION_PERCENT, "gpu" => gpu.clone()).set(f64::from(u));
    }
    if let Some(t) = r.temperature_celsius {
        metrics::gauge!(m::GPU_TEMPERATURE_CELSIUS, "gpu" => gpu).set(f64::from(t));
    }
}

fn log_transition(index: u32, t: Transition, mem: &GpuMemory, wm: Watermarks) {
    match t {
        Transition::Paused => tracing::warn!(
            gpu = index,
            free_bytes = mem.free_bytes,
            low_watermark_bytes = wm.low_free_bytes(),
            "GPU memory is low (another process may hold it): pausing admission of new sequences"
        ),
        Transition::Resumed => tracing::info!(
            gpu = index,
            free_bytes = mem.free_bytes,
            high_watermark_bytes = wm.high_free_bytes(),
            "GPU memory recovered: resuming admission"
        ),
    }
}

/// Readings through NVML.
struct NvmlSource {
    nvml: Nvml,
    index: u32,
    /// Which fields have already logged a failure (memory, utilization, temperature).
    warned: [bool; 3],
}

impl NvmlSource {
    /// Loads NVML and checks that GPU `index` exists; `None` (logged) otherwise.
    fn open(index: u32) -> Option<Self> {
        let nvml = match Nvml::init() {
            Ok(n) => n,
            Err(e) => {
                tracing::info!("NVML not available: {e}; GPU metrics off");
                return None;
            }
        };
        if let Err(e) = nvml.device_by_index(index) {
            tracing::info!("NVML has no GPU {index}: {e}; GPU metrics off");
            return None;
        }
        Some(Self {
            nvml,
            index,
            warned: [false; 3],
        })
    }

    /// `Some(value)`, or `None` after logging the first failure of field `which`.
    fn field<T>(&mut self, which: usize, what: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                if !std::mem::replace(&mut self.warned[which], true) {
                    tracing::warn!(
                        gpu = self.index,
                        "NVML cannot read the {what}: {e}; skipping it"
                    );
                }
                None
            }
        }
    }
}

impl GpuSource for NvmlSource {
    fn read(&mut self) -> GpuReading {
        let text = |e: nvml_wrapper::error::NvmlError| e.to_string();
        let (mem, util, temp) = match self.nvml.device_by_index(self.index) {
            Ok(d) => (
                d.memory_info().map_err(text).map(|m| GpuMemory {
                    total_bytes: m.total,
                    free_bytes: m.free,
                    used_bytes: m.used,
                }),
                d.utilization_rates().map_err(text).map(|u| u.gpu),
                d.temperature(TemperatureSensor::Gpu).map_err(text),
            ),
            Err(e) => {
                let e = e.to_string();
                (Err(e.clone()), Err(e.clone()), Err(e))
            }
        };
        GpuReading {
            memory: self.field(0, "memory", mem),
            utilization_percent: self.field(1, "utilization", util),
            temperature_celsius: self.field(2, "temperature", temp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const GIB: u64 = 1 << 30;

    /// Replays free-memory values, then repeats the last one.
    struct Script {
        frees: Vec<u64>,
        next: usize,
    }

    impl GpuSource for Script {
        fn read(&mut self) -> GpuReading {
            let free = self.frees[self.next.min(self.frees.len() - 1)];
            self.next += 1;
            GpuReading {
                memory: Some(GpuMemory {
                    total_bytes: 80 * GIB,
                    free_bytes: free,
                    used_bytes: 80 * GIB - free,
                }),
                utilization_percent: Some(50),
                temperature_celsius: Some(60),
            }
        }
    }

    fn config(interval: Duration) -> MonitorConfig {
        MonitorConfig {
            index: 0,
            interval,
            watermarks: Some(Watermarks::new(GIB, 2 * GIB).unwrap()),
        }
    }

    #[test]
    fn with_or_without_nvml_spawning_never_panics_and_stop_joins() {
        // On a machine without NVML this is None; on a GPU machine a running monitor.
        if let Some(mon) = spawn_gpu_monitor(0, Duration::from_millis(10), |_| {}) {
            assert_eq!(mon.index(), 0);
            std::thread::sleep(Duration::from_millis(30));
            mon.stop();
        }
        // An index no machine has is never a panic either.
        assert!(spawn_gpu_monitor(u32::MAX, Duration::from_millis(10), |_| {}).is_none());
    }

    #[test]
    fn transitions_reach_the_engine_as_commands_once_per_change() {
        use crate::engine::handle::{Command, DeviceEngine, EngineStats, ThreadHealth};
        let (tx, rx) = mpsc::channel();
        let device = DeviceEngine::new(tx, std::sync::Arc::new(ThreadHealth::default()));
        let handle = device.handle(0, "m", std::sync::Arc::new(EngineStats::default()), 8, 8);
        let frees = vec![
            10 * GIB,
            GIB / 2,
            GIB / 4,
            3 * GIB / 2,
            3 * GIB,
            3 * GIB,
            GIB / 2,
        ];
        let script = Script { frees, next: 0 };
        let mon = spawn_monitor(
            script,
            config(Duration::from_millis(1)),
            pause_engine(handle),
        )
        .expect("thread starts");
        let mut got = Vec::new();
        while got.len() < 3 {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Command::SetAdmissionPaused(p)) => got.push(p),
                Ok(_) => panic!("a command other than an admission change"),
                Err(e) => panic!("only {got:?} after 10 s: {e}"),
            }
        }
        assert_eq!(got, vec![true, false, true]);
        mon.stop();
        // The last value repeats; no more commands after the third change.
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn stop_does_not_wait_for_the_interval() {
        let script = Script {
            frees: vec![10 * GIB],
            next: 0,
        };
        let mon = spawn_monitor(script, config(Duration::from_secs(3600)), |_| {}).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        drop(mon);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn default_watermarks_fit_the_first_reading() {
        // 2 GiB free at start is below the 80 GiB defaults (3.2 GiB to resume); fitted,
        // the gate starts open and pauses when free memory halves.
        let script = Script {
            frees: vec![2 * GIB, 2 * GIB, GIB / 2],
            next: 0,
        };
        let cfg = MonitorConfig {
            watermarks: None,
            ..config(Duration::from_millis(1))
        };
        let (tx, rx) = mpsc::channel();
        let mon = spawn_monitor(script, cfg, move |t| {
            let _ = tx.send(t);
        })
        .unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Ok(Transition::Paused)
        );
        mon.stop();
        assert!(rx.try_recv().is_err(), "paused once, never before");
    }
}
