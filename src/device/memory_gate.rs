//! Admission gate on device memory pressure: decides, from samples of the device's
//! free memory, whether the engine should stop admitting new sequences, with
//! hysteresis so that it does not flap.
//!
//! The rule: while open, the gate closes (pauses admission) when free memory falls
//! strictly below the low watermark; while closed, it opens again only when free memory
//! rises strictly above the high watermark. Between the two watermarks it keeps its
//! state. It owns no thread and no device: the GPU monitor feeds it samples and acts on
//! the transitions it reports.
//!
//! Invariants: `low <= high` in every `Watermarks`; a transition is reported only when
//! the state changes (a second sample below the low watermark reports nothing); a sample
//! with a zero total is ignored, and a free count above the total is read as the total.

/// Bytes in one MiB.
const MIB: u64 = 1 << 20;

/// Smallest default low watermark: 512 MiB, about what one more prefill's activations
/// and a cuBLAS workspace need on a 7B model.
pub const MIN_LOW_WATERMARK: u64 = 512 * MIB;

/// One reading of the device's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySample {
    /// Memory the device has.
    pub total_bytes: u64,
    /// Memory no process holds.
    pub free_bytes: u64,
}

/// Free-memory thresholds of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    low_free_bytes: u64,
    high_free_bytes: u64,
}

impl Watermarks {
    /// Explicit thresholds: pause below `low_free_bytes`, resume above `high_free_bytes`.
    /// Refused when `low > high` (the gate could open and close on the same sample).
    pub fn new(low_free_bytes: u64, high_free_bytes: u64) -> Result<Self, String> {
        if low_free_bytes > high_free_bytes {
            return Err(format!(
                "the low watermark ({low_free_bytes} bytes) is above the high one ({high_free_bytes} bytes)"
            ));
        }
        Ok(Self {
            low_free_bytes,
            high_free_bytes,
        })
    }

    /// The defaults for a device of `total_bytes`: low = max(2% of total, 512 MiB),
    /// but at most 1/8 of the device (so small devices are not paused for ever), and
    /// high = 2 x low. An 80 GiB H100 pauses below 1.6 GiB free and resumes above
    /// 3.2 GiB; a 24 GiB card pauses below 512 MiB and resumes above 1 GiB.
    pub fn for_device(total_bytes: u64) -> Self {
        let low = (total_bytes / 50)
            .max(MIN_LOW_WATERMARK)
            .min(total_bytes / 8);
        Self {
            low_free_bytes: low,
            high_free_bytes: low.saturating_mul(2),
        }
    }

    /// These watermarks lowered, when needed, so that a device with `free_bytes` free
    /// right after the engine took its memory (weights and KV cache) starts with the
    /// gate open: with `--gpu-memory-utilization` near 1 we leave less free than the
    /// defaults ask for, and the gate must then react to *other* processes taking
    /// memory, not to our own start-up. High becomes at most 3/4 of that free memory
    /// and low half of high, so others must take at least a quarter of what we left
    /// before admission pauses.
    pub fn fit_baseline(self, free_bytes: u64) -> Self {
        let cap = free_bytes / 4 * 3;
        if self.high_free_bytes <= cap {
            return self;
        }
        Self {
            low_free_bytes: self.low_free_bytes.min(cap / 2),
            high_free_bytes: cap,
        }
    }

    /// Admission pauses when free memory falls below this.
    pub fn low_free_bytes(&self) -> u64 {
        self.low_free_bytes
    }

    /// Admission resumes when free memory rises above this.
    pub fn high_free_bytes(&self) -> u64 {
        self.high_free_bytes
    }
}

/// A change of the gate's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Free memory fell below the low watermark: stop admitting new sequences.
    Paused,
    /// Free memory rose above the high watermark: admit again.
    Resumed,
}

impl Transition {
    /// Whether admission is paused after this transition.
    pub fn paused(self) -> bool {
        self == Transition::Paused
    }
}

/// The gate's state machine.
#[derive(Debug, Clone)]
pub struct MemoryGate {
    watermarks: Watermarks,
    paused: bool,
}

impl MemoryGate {
    /// An open gate (admitting) with these thresholds.
    pub fn new(watermarks: Watermarks) -> Self {
        Self {
            watermarks,
            paused: false,
        }
    }

    /// Takes one sample; returns the transition it caused, if any.
    pub fn observe(&mut self, sample: MemorySample) -> Option<Transition> {
        if sample.total_bytes == 0 {
            return None;
        }
        let free = sample.free_bytes.min(sample.total_bytes);
        if !self.paused && free < self.watermarks.low_free_bytes {
            self.paused = true;
            Some(Transition::Paused)
        } else if self.paused && free > self.watermarks.high_free_bytes {
            self.paused = false;
            Some(Transition::Resumed)
        } else {
            None
        }
    }

    /// Whether admission is paused now.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The thresholds in use.
    pub fn watermarks(&self) -> Watermarks {
        self.watermarks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn sample(free: u64) -> MemorySample {
        MemorySample {
            total_bytes: 80 * GIB,
            free_bytes: free,
        }
    }

    #[test]
    fn defaults_scale_with_the_device_and_stay_below_it() {
        let h100 = Watermarks::for_device(80 * GIB);
        assert_eq!(h100.low_free_bytes(), 80 * GIB / 50);
        assert_eq!(h100.high_free_bytes(), 2 * (80 * GIB / 50));
        let small = Watermarks::for_device(24 * GIB);
        assert_eq!(small.low_free_bytes(), 512 * MIB);
        assert_eq!(small.high_free_bytes(), GIB);
        let tiny = Watermarks::for_device(2 * GIB);
        assert_eq!(
            tiny.low_free_bytes(),
            256 * MIB,
            "capped at 1/8 of the device"
        );
        assert!(tiny.high_free_bytes() < 2 * GIB);
        assert_eq!(Watermarks::for_device(0), Watermarks::new(0, 0).unwrap());
    }

    #[test]
    fn explicit_watermarks_must_be_ordered() {
        assert!(Watermarks::new(2, 1).is_err());
        assert!(Watermarks::new(1, 1).is_ok());
    }

    #[test]
    fn baseline_lowers_watermarks_only_when_needed() {
        let wm = Watermarks::for_device(80 * GIB);
        assert_eq!(wm.fit_baseline(8 * GIB), wm, "8 GiB free: defaults fit");
        let fitted = wm.fit_baseline(2 * GIB);
        assert_eq!(fitted.high_free_bytes(), 3 * GIB / 2);
        assert_eq!(fitted.low_free_bytes(), 3 * GIB / 4);
        let mut gate = MemoryGate::new(fitted);
        assert_eq!(gate.observe(sample(2 * GIB)), None, "starts open");
        assert_eq!(gate.observe(sample(GIB / 2)), Some(Transition::Paused));
    }

    #[test]
    fn pauses_below_low_and_resumes_only_above_high() {
        let mut gate = MemoryGate::new(Watermarks::new(GIB, 2 * GIB).unwrap());
        assert!(!gate.is_paused());
        assert_eq!(gate.observe(sample(10 * GIB)), None);
        assert_eq!(
            gate.observe(sample(GIB)),
            None,
            "at the low watermark: open"
        );
        assert_eq!(gate.observe(sample(GIB - 1)), Some(Transition::Paused));
        assert!(gate.is_paused());
        assert_eq!(
            gate.observe(sample(GIB + 1)),
            None,
            "above low is not enough"
        );
        assert_eq!(gate.observe(sample(2 * GIB)), None, "at high: still paused");
        assert!(gate.is_paused());
        assert_eq!(gate.observe(sample(2 * GIB + 1)), Some(Transition::Resumed));
        assert!(!gate.is_paused());
    }

    #[test]
    fn no_flapping_between_the_watermarks() {
        let mut gate = MemoryGate::new(Watermarks::new(GIB, 2 * GIB).unwrap());
        gate.observe(sample(GIB / 2));
        let mut transitions = 0;
        for i in 0..100u64 {
            // Oscillates across the low watermark, never above the high one.
            let free = if i % 2 == 0 { GIB / 2 } else { GIB * 3 / 2 };
            transitions += usize::from(gate.observe(sample(free)).is_some());
        }
        assert_eq!(transitions, 0);
        assert!(gate.is_paused());
        // Once resumed, oscillating across the high watermark does not pause it.
        gate.observe(sample(3 * GIB));
        for i in 0..100u64 {
            let free = if i % 2 == 0 { 3 * GIB / 2 } else { 5 * GIB / 2 };
            assert_eq!(gate.observe(sample(free)), None);
        }
        assert!(!gate.is_paused());
    }

    #[test]
    fn transitions_are_reported_once_per_change() {
        let mut gate = MemoryGate::new(Watermarks::new(GIB, 2 * GIB).unwrap());
        let frees = [5, 0, 0, 0, 3, 3, 0, 0, 5, 5];
        let got: Vec<_> = frees
            .iter()
            .filter_map(|&f| gate.observe(sample(f * GIB)))
            .collect();
        assert_eq!(
            got,
            vec![
                Transition::Paused,
                Transition::Resumed,
                Transition::Paused,
                Transition::Resumed
            ]
        );
        assert!(Transition::Paused.paused() && !Transition::Resumed.paused());
    }

    #[test]
    fn bad_samples_do_not_move_the_gate() {
        let mut gate = MemoryGate::new(Watermarks::new(GIB, 2 * GIB).unwrap());
        let zero = MemorySample {
            total_bytes: 0,
            free_bytes: 0,
        };
        assert_eq!(gate.observe(zero), None);
        assert!(!gate.is_paused());
        gate.observe(sample(0));
        // A free count above the total is clamped to the total (80 GiB > high).
        let odd = MemorySample {
            total_bytes: 80 * GIB,
            free_bytes: u64::MAX,
        };
        assert_eq!(gate.observe(odd), Some(Transition::Resumed));
    }
}
