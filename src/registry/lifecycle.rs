//! A model's life in the registry after it is known: loading on demand (one load at a
//! time, on a task of its own), making room in the budget by unloading the least
//! recently used idle models, unloading under the state lock, and the keep-alive
//! reaper. See the parent module for the invariants.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::memory::{MemoryUse, mib};
use super::spec::KeepAlive;
use super::{Entry, Loaded, Loader, Registry, State};
use crate::api::error::ApiError;

impl Registry {
    /// Moves `entry` to loading (if nobody else did) and loads it on a task of its own,
    /// so a client that gives up does not cancel a load others wait for.
    pub(super) fn begin_load(self: &Arc<Self>, entry: &Arc<Entry>) {
        {
            let Ok(mut st) = entry.state.lock() else {
                return;
            };
            if matches!(*st, State::Loading { .. } | State::Ready(_)) {
                return;
            }
            *st = State::Loading { waitable: true };
        }
        entry.changed.send_modify(|g| *g += 1);
        let (Some(loader), Ok(handle)) = (
            self.loader.get().cloned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            entry.set_state(State::Failed("no loader".into()));
            return;
        };
        let this = self.clone();
        let entry = entry.clone();
        handle.spawn(async move {
            let t0 = Instant::now();
            match this.load_now(&loader, &entry).await {
                Ok((loaded, memory)) => {
                    tracing::info!(
                        model = %entry.name,
                        secs = t0.elapsed().as_secs_f64(),
                        memory = %mib(memory.total()),
                        "model loaded on demand"
                    );
                    metrics::counter!(crate::metrics::MODEL_LOADS_TOTAL, "model" => entry.name.clone())
                        .increment(1);
                    this.mark_ready(&entry, loaded, memory);
                }
                Err(why) => {
                    tracing::warn!(model = %entry.name, "loading on demand failed: {why}");
                    entry.set_memory(MemoryUse::default());
                    entry.set_state(State::Failed(why));
                }
            }
        });
    }

    /// Estimates, makes room, and loads (one load at a time).
    async fn load_now(
        self: &Arc<Self>,
        loader: &Arc<dyn Loader>,
        entry: &Arc<Entry>,
    ) -> Result<(Loaded, MemoryUse), String> {
        let _one = self.load_lock.lock().await;
        let spec = entry.spec();
        let need = loader.estimate(&spec).map_err(|e| format!("{e:#}"))?;
        self.make_room(entry, need).await?;
        entry.set_memory(need);
        tracing::info!(model = %entry.name, memory = %mib(need.total()), "loading on demand");
        let loaded = loader
            .load(entry.name.clone(), spec)
            .await
            .map_err(|e| format!("{e:#}"))?;
        Ok((loaded, need))
    }

    /// Bytes counted against the budget by every model but `except`.
    fn used_except(&self, except: &Entry) -> u64 {
        self.list()
            .iter()
            .filter(|e| !std::ptr::eq(e.as_ref(), except))
            .filter(|e| matches!(e.state(), State::Ready(_) | State::Loading { .. }))
            .map(|e| e.memory().total())
            .sum()
    }

    /// Unloads least recently used idle models until `need` fits beside the others.
    async fn make_room(&self, entry: &Entry, need: MemoryUse) -> Result<(), String> {
        let Some(budget) = self.budget else {
            return Ok(());
        };
        if need.total() > budget {
            return Err(format!(
                "`{}` needs {} (weights {}, activations {}, KV cache {}) but the whole memory budget is {}; raise --memory",
                entry.name,
                mib(need.total()),
                mib(need.weights),
                mib(need.activations),
                mib(need.kv),
                mib(budget)
            ));
        }
        loop {
            let used = self.used_except(entry);
            if used + need.total() <= budget {
                return Ok(());
            }
            let victim = self
                .list()
                .into_iter()
                .filter(|e| !std::ptr::eq(e.as_ref(), entry))
                .filter(|e| e.keep_alive() != KeepAlive::Forever)
                .filter(|e| matches!(e.state(), State::Ready(_)))
                .filter(|e| e.leases.load(Ordering::Acquire) == 0)
                .max_by_key(|e| e.idle_for());
            let Some(victim) = victim else {
                return Err(format!(
                    "`{}` needs {} but only {} of the {} memory budget are free, and every loaded model is in use or kept for ever; retry when one is idle, or raise --memory",
                    entry.name,
                    mib(need.total()),
                    mib(budget.saturating_sub(used)),
                    mib(budget)
                ));
            };
            self.evict(&victim, "to make room").await;
        }
    }

    /// Unloads `entry` if it is loaded and idle (checked under its state lock).
    async fn evict(&self, entry: &Arc<Entry>, why: &'static str) -> bool {
        let loaded = {
            let Ok(mut st) = entry.state.lock() else {
                return false;
            };
            match &*st {
                State::Ready(l) if entry.leases.load(Ordering::Acquire) == 0 => {
                    let l = l.clone();
                    *st = State::Loading { waitable: true };
                    l
                }
                _ => return false,
            }
        };
        entry.changed.send_modify(|g| *g += 1);
        let freed = entry.memory();
        if let Some(loader) = self.loader.get() {
            loader.unload(loaded).await;
        }
        entry.set_memory(MemoryUse::default());
        entry.set_state(State::Unloaded);
        tracing::info!(model = %entry.name, freed = %mib(freed.total()), reason = why, "model unloaded");
        metrics::counter!(crate::metrics::MODEL_UNLOADS_TOTAL, "model" => entry.name.clone(), "reason" => why)
            .increment(1);
        metrics::gauge!(crate::metrics::MODEL_LOADED, "model" => entry.name.clone()).set(0.0);
        metrics::gauge!(crate::metrics::MODEL_MEMORY_BYTES, "model" => entry.name.clone()).set(0.0);
        true
    }

    /// Unloads every idle model whose keep-alive has run out; returns how many.
    pub async fn reap_idle(&self) -> usize {
        let mut n = 0;
        for e in self.list() {
            if let KeepAlive::For(d) = e.keep_alive()
                && matches!(e.state(), State::Ready(_))
                && e.leases.load(Ordering::Acquire) == 0
                && e.idle_for() >= d
                && self.evict(&e, "keep_alive expired").await
            {
                n += 1;
            }
        }
        n
    }

    /// Runs `reap_idle` every `every` for as long as the registry lives.
    pub fn spawn_reaper(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(reg) = weak.upgrade() else {
                    return;
                };
                reg.reap_idle().await;
            }
        });
    }
}

/// The API error of a load that failed: 503 when the budget is why, else 500.
pub(super) fn load_failed(name: &str, why: &str) -> ApiError {
    if why.contains("memory budget") {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("The model `{name}` cannot be loaded now: {why}."),
        )
        .with_code("insufficient_memory")
    } else {
        ApiError::internal(format!("The model `{name}` failed to load: {why}."))
            .with_code("model_load_failed")
    }
}
