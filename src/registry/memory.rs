//! The one memory budget: what each model takes (weights, activations, KV cache), the
//! plan printed at start-up, and the check that refuses a plan, or a load on demand,
//! that does not fit, with the numbers in the message.
//!
//! Invariant: the registry adds a model's `MemoryUse` to the budget's use when it starts
//! loading and removes it when the model is unloaded (or its load failed), so the sum
//! over loaded and loading models is what the budget is checked against.

use std::fmt;

/// What one model holds in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Weights (the file's size: the resident layout stays within it, give or take).
    pub weights: u64,
    /// Activations of the largest batch it runs.
    pub activations: u64,
    /// KV cache (LLMs).
    pub kv: u64,
}

impl MemoryUse {
    /// All of it.
    pub fn total(&self) -> u64 {
        self.weights + self.activations + self.kv
    }
}

/// `bytes` as MiB with one decimal, the unit the plan is printed in.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// The start-up plan: each model's use against the budget.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// `(model name, its use)`, in serving order.
    pub models: Vec<(String, MemoryUse)>,
    /// The budget (`None`: unlimited).
    pub budget: Option<u64>,
}

impl Plan {
    /// Everything the plan holds.
    pub fn total(&self) -> u64 {
        self.models.iter().map(|(_, m)| m.total()).sum()
    }

    /// Refuses a plan over budget, naming every model's share and the budget.
    pub fn check(&self) -> Result<(), String> {
        match self.budget {
            Some(b) if self.total() > b => Err(format!(
                "the models need {} but the memory budget is {}:\n{self}\nraise --memory, lower \
                 --kv-cache-memory, or serve fewer models",
                mib(self.total()),
                mib(b)
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  {:<32} {:>12} {:>12} {:>12} {:>12}",
            "model", "weights", "activations", "kv cache", "total"
        )?;
        for (name, m) in &self.models {
            writeln!(
                f,
                "  {:<32} {:>12} {:>12} {:>12} {:>12}",
                name,
                mib(m.weights),
                mib(m.activations),
                mib(m.kv),
                mib(m.total())
            )?;
        }
        let budget = self.budget.map_or("unlimited".to_string(), mib);
        write!(
            f,
            "  {:<32} {:>12} of a budget of {budget}",
            "all models",
            mib(self.total())
        )
    }
}

/// Bytes of memory the system has available now (`MemAvailable` on Linux), if known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(budget: u64) -> Plan {
        Plan {
            models: vec![
                (
                    "chat".into(),
                    MemoryUse {
                        weights: 100 << 20,
                        activations: 0,
                        kv: 50 << 20,
                    },
                ),
                (
                    "embed".into(),
                    MemoryUse {
                        weights: 90 << 20,
                        activations: 10 << 20,
                        kv: 0,
                    },
                ),
            ],
            budget: Some(budget),
        }
    }

    #[test]
    fn a_plan_over_budget_is_refused_with_every_number() {
        assert!(plan(250 << 20).check().is_ok());
        let err = plan(200 << 20).check().unwrap_err();
        for want in [
            "250.0 MiB",
            "200.0 MiB",
            "chat",
            "embed",
            "150.0 MiB",
            "--memory",
        ] {
            assert!(err.contains(want), "{want} missing from:\n{err}");
        }
    }
}
