//! The registry of served models: every model the server knows (named at start-up, or
//! found in `--models-dir` and loadable on demand), its kind, its state (loading, ready,
//! failed, unloaded) and its memory, and the one place the HTTP layer turns a request's
//! `model` into a loaded model's handle.
//!
//! A request holds a [`Lease`] on the model it uses until its response body has been
//! sent (or dropped); a model with leases is never unloaded. A request for a model that
//! is not loaded loads it (the request waits; others keep being served), making room in
//! the memory budget by unloading the least recently used idle models first; idle
//! models whose keep-alive has run out are unloaded by a reaper task.
//!
//! Invariants: a lease is only taken, and a model only unloaded, under the model's state
//! lock, so an unload never races a new request; at most one load runs at a time (so the
//! budget check and the load are one step); the memory counted for a model is its
//! estimate from when its load began until it is unloaded or its load failed.

pub mod discover;
pub mod kinds;
mod lifecycle;
pub mod memory;
pub mod spec;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::response::Response;
use tokio::sync::watch;

use crate::api::error::ApiError;
use crate::engine::handle::EngineHandle;
use crate::model::ServedModel;
use crate::model::encoder::ServedEncoder;
pub use kinds::{ModelKind, Route};
use memory::MemoryUse;
use spec::{KeepAlive, ModelSpec};

/// What the generation routes need of a loaded LLM.
pub struct Ready {
    /// Model identity, tokenizer and chat template.
    pub model: Arc<ServedModel>,
    /// The engine's submission handle.
    pub engine: EngineHandle,
}

/// What the encoder routes need of a loaded encoder.
pub struct EncoderReady {
    /// Encoder identity and tokenizer.
    pub encoder: Arc<ServedEncoder>,
    /// The engine's submission handle.
    pub engine: EngineHandle,
    /// Request limits of the encoder routes.
    pub limits: EncoderLimits,
}

/// Operator limits on encoder requests.
#[derive(Debug, Clone, Copy)]
pub struct EncoderLimits {
    /// Most documents in one rerank request.
    pub max_rerank_documents: usize,
    /// Most inputs in one embeddings, predict, classify or NER request.
    pub max_embedding_inputs: usize,
}

impl Default for EncoderLimits {
    fn default() -> Self {
        Self {
            max_rerank_documents: 1000,
            max_embedding_inputs: 2048,
        }
    }
}

/// A loaded model.
#[derive(Clone)]
pub enum Loaded {
    /// An LLM.
    Llm(Arc<Ready>),
    /// An encoder.
    Encoder(Arc<EncoderReady>),
}

impl Loaded {
    /// Its kind.
    pub fn kind(&self) -> ModelKind {
        match self {
            Loaded::Llm(_) => ModelKind::Llm,
            Loaded::Encoder(e) => ModelKind::Encoder(e.encoder.info.task),
        }
    }

    /// Its engine handle.
    pub fn handle(&self) -> &EngineHandle {
        match self {
            Loaded::Llm(r) => &r.engine,
            Loaded::Encoder(e) => &e.engine,
        }
    }
}

/// Boxed future of a loader.
pub type LoadFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Loads and unloads models for the registry (the server's loader puts them on the
/// engine thread of their device).
pub trait Loader: Send + Sync {
    /// What `spec` will take once loaded (cheap: file sizes and headers).
    fn estimate(&self, spec: &ModelSpec) -> anyhow::Result<MemoryUse>;
    /// Loads `spec` as `name`.
    fn load(&self, name: String, spec: ModelSpec) -> LoadFuture<anyhow::Result<Loaded>>;
    /// Removes a model from its engine, resolving once its memory is freed.
    fn unload(&self, model: Loaded) -> LoadFuture<()>;
}

#[derive(Clone)]
enum State {
    /// Known, not in memory.
    Unloaded,
    /// Being loaded; `waitable` when requests may wait for it (an on-demand load),
    /// false during start-up (requests get a 503 "loading" at once).
    Loading { waitable: bool },
    /// In memory and serving.
    Ready(Loaded),
    /// Its last load failed (a new request retries it).
    Failed(String),
}

/// One model the registry knows.
pub struct Entry {
    name: String,
    aliases: Vec<String>,
    spec: Mutex<ModelSpec>,
    on_demand: bool,
    keep_alive: Mutex<KeepAlive>,
    kind: Mutex<Option<ModelKind>>,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    leases: AtomicUsize,
    last_used: Mutex<Instant>,
    memory: Mutex<MemoryUse>,
}

impl Entry {
    /// The id clients send.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Other names.
    pub fn aliases(&self) -> &[String] {
        &self.aliases
    }

    /// What it is loaded from.
    pub fn spec(&self) -> ModelSpec {
        self.spec
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// How long until its keep-alive unloads it if it stays idle (`None`: never; the
    /// whole keep-alive while requests hold it).
    pub fn expires_in(&self) -> Option<Duration> {
        match self.keep_alive() {
            KeepAlive::Forever => None,
            KeepAlive::For(d) if self.leases.load(Ordering::Acquire) > 0 => Some(d),
            KeepAlive::For(d) => Some(d.saturating_sub(self.idle_for())),
        }
    }

    /// Points the spec at a local copy of its source (after a download).
    pub fn set_source(&self, source: String) {
        if let Ok(mut s) = self.spec.lock() {
            s.source = Some(source);
        }
    }

    fn answers_to(&self, asked: &str) -> bool {
        same_name(asked, &self.name) || self.aliases.iter().any(|a| same_name(asked, a))
    }

    fn state(&self) -> State {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(State::Unloaded)
    }

    fn set_state(&self, state: State) {
        if let Ok(mut s) = self.state.lock() {
            *s = state;
        }
        self.changed.send_modify(|g| *g += 1);
    }

    fn keep_alive(&self) -> KeepAlive {
        self.keep_alive
            .lock()
            .map(|k| *k)
            .unwrap_or(KeepAlive::Forever)
    }

    fn known_kind(&self) -> Option<ModelKind> {
        self.kind.lock().ok().and_then(|k| *k)
    }

    fn memory(&self) -> MemoryUse {
        self.memory.lock().map(|m| *m).unwrap_or_default()
    }

    fn set_memory(&self, m: MemoryUse) {
        if let Ok(mut g) = self.memory.lock() {
            *g = m;
        }
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    /// A lease if the model is ready now (taken under the state lock).
    fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        let st = self.state.lock().ok()?;
        match &*st {
            State::Ready(l) => {
                self.leases.fetch_add(1, Ordering::AcqRel);
                Some(Lease {
                    entry: self.clone(),
                    loaded: l.clone(),
                })
            }
            _ => None,
        }
    }
}

/// Whether `asked` names `name`: equal, or equal ignoring ASCII case and a `:latest`
/// tag on either side (as Ollama clients spell names).
pub fn same_name(asked: &str, name: &str) -> bool {
    let base = |n: &str| {
        n.trim()
            .strip_suffix(":latest")
            .unwrap_or(n.trim())
            .to_string()
    };
    asked == name || base(asked).eq_ignore_ascii_case(&base(name))
}

/// A request's hold on a loaded model; the model is not unloaded while it lives.
pub struct Lease {
    entry: Arc<Entry>,
    loaded: Loaded,
}

impl Lease {
    /// The model's registry name.
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The loaded model.
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// Sets how long the model stays loaded once idle (Ollama's per-request
    /// `keep_alive`; `0` unloads it as soon as no request holds it).
    pub fn set_keep_alive(&self, keep_alive: KeepAlive) {
        if let Ok(mut k) = self.entry.keep_alive.lock() {
            *k = keep_alive;
        }
    }

    /// The LLM, or a 400 naming the model's kind.
    pub fn llm(&self) -> Result<&Ready, ApiError> {
        match &self.loaded {
            Loaded::Llm(r) => Ok(r),
            other => Err(wrong_kind(&self.entry.name, other.kind(), Route::Generate)),
        }
    }

    /// The encoder, if it is one.
    pub fn encoder(&self) -> Option<&EncoderReady> {
        match &self.loaded {
            Loaded::Encoder(e) => Some(e),
            Loaded::Llm(_) => None,
        }
    }

    /// `resp` with this lease moved into its body: the model counts as in use until
    /// the body has been sent or dropped.
    pub fn hold(self, resp: Response) -> Response {
        crate::api::in_flight::hold(resp, self)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut t) = self.entry.last_used.lock() {
            *t = Instant::now();
        }
        self.entry.leases.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The 400 for a model used with a route its kind does not serve.
pub fn wrong_kind(name: &str, kind: ModelKind, route: Route) -> ApiError {
    ApiError::invalid(
        format!(
            "The model `{name}` is {}; this route needs {}. {} serves {}.",
            kind.describe(),
            route.needs(),
            name,
            kind.routes()
        ),
        Some("model"),
    )
    .with_code("wrong_model_kind")
}

/// What `/health` shows of one model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EntryStatus {
    /// Its id.
    pub name: String,
    /// Other names.
    pub aliases: Vec<String>,
    /// `llm`, `embedding`, `cross-encoder`, ... (`null` until known).
    pub kind: Option<&'static str>,
    /// `loading`, `ready`, `failed` or `unloaded`.
    pub status: &'static str,
    /// Why its last load failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether it was found in `--models-dir` rather than named at start-up.
    pub on_demand: bool,
    /// Its keep-alive in seconds (`null`: for ever).
    pub keep_alive_secs: Option<f64>,
    /// Requests holding it now.
    pub requests_in_flight: usize,
    /// Bytes it holds (or will hold while loading).
    pub memory: MemoryJson,
}

/// `MemoryUse` as `/health` shows it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MemoryJson {
    /// Weights.
    pub weights_bytes: u64,
    /// Activations.
    pub activation_bytes: u64,
    /// KV cache.
    pub kv_cache_bytes: u64,
}

/// The served models.
pub struct Registry {
    entries: RwLock<Vec<Arc<Entry>>>,
    loader: std::sync::OnceLock<Arc<dyn Loader>>,
    budget: Option<u64>,
    load_lock: tokio::sync::Mutex<()>,
    models_dir: Option<PathBuf>,
    on_demand_keep_alive: KeepAlive,
}

/// How a registry is set up.
pub struct RegistryConfig {
    /// Loads and unloads models (`None`: nothing loads on demand until
    /// [`Registry::set_loader`]).
    pub loader: Option<Arc<dyn Loader>>,
    /// The memory budget in bytes (`None`: unlimited).
    pub budget: Option<u64>,
    /// Folder whose models are loadable by name on demand.
    pub models_dir: Option<PathBuf>,
    /// Keep-alive of models loaded on demand.
    pub keep_alive: KeepAlive,
}

impl Registry {
    /// An empty registry.
    pub fn new(cfg: RegistryConfig) -> Self {
        let loader = std::sync::OnceLock::new();
        if let Some(l) = cfg.loader {
            let _ = loader.set(l);
        }
        Self {
            entries: RwLock::new(Vec::new()),
            loader,
            budget: cfg.budget,
            load_lock: tokio::sync::Mutex::new(()),
            models_dir: cfg.models_dir,
            on_demand_keep_alive: cfg.keep_alive,
        }
    }

    /// Sets the loader once (the server's is built after the start-up downloads);
    /// later calls are ignored.
    pub fn set_loader(&self, loader: Arc<dyn Loader>) {
        let _ = self.loader.set(loader);
    }

    /// The memory budget.
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Adds a model under `name` (not loaded yet); a name or alias already taken is an
    /// error.
    pub fn add(&self, name: &str, spec: ModelSpec, on_demand: bool) -> anyhow::Result<Arc<Entry>> {
        let mut entries = self
            .entries
            .write()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        for n in std::iter::once(name).chain(spec.aliases.iter().map(String::as_str)) {
            if let Some(e) = entries.iter().find(|e| e.answers_to(n)) {
                anyhow::bail!(
                    "two models answer to `{n}` (one is `{}`): give each a distinct name",
                    e.name
                );
            }
        }
        let keep_alive = spec.keep_alive.unwrap_or(if on_demand {
            self.on_demand_keep_alive
        } else {
            KeepAlive::Forever
        });
        let kind = (spec.kind == spec::SpecKind::Llm).then_some(ModelKind::Llm);
        let entry = Arc::new(Entry {
            name: name.to_string(),
            aliases: spec.aliases.clone(),
            spec: Mutex::new(spec),
            on_demand,
            keep_alive: Mutex::new(keep_alive),
            kind: Mutex::new(kind),
            state: Mutex::new(State::Unloaded),
            changed: watch::channel(0).0,
            leases: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
            memory: Mutex::new(MemoryUse::default()),
        });
        entries.push(entry.clone());
        Ok(entry)
    }

    /// The entries, in order.
    pub fn list(&self) -> Vec<Arc<Entry>> {
        self.entries.read().map(|e| e.clone()).unwrap_or_default()
    }

    /// Marks `entry` loading at start-up (requests get 503 until it is ready), with its
    /// estimated use.
    pub fn mark_starting(&self, entry: &Entry, estimate: MemoryUse) {
        entry.set_memory(estimate);
        entry.set_state(State::Loading { waitable: false });
    }

    /// Marks `entry` ready with `loaded`, holding `memory`.
    pub fn mark_ready(&self, entry: &Entry, loaded: Loaded, memory: MemoryUse) {
        if let Ok(mut k) = entry.kind.lock() {
            *k = Some(loaded.kind());
        }
        entry.set_memory(memory);
        entry.set_state(State::Ready(loaded));
        metrics::gauge!(crate::metrics::MODEL_LOADED, "model" => entry.name.clone()).set(1.0);
        metrics::gauge!(crate::metrics::MODEL_MEMORY_BYTES, "model" => entry.name.clone())
            .set(memory.total() as f64);
    }

    /// Whether any model named at start-up is still loading.
    pub fn starting(&self) -> bool {
        self.list()
            .iter()
            .any(|e| matches!(e.state(), State::Loading { waitable: false }))
    }

    /// Every loaded model, in order.
    pub fn loaded(&self) -> Vec<(Arc<Entry>, Loaded)> {
        self.list()
            .into_iter()
            .filter_map(|e| match e.state() {
                State::Ready(l) => Some((e, l)),
                _ => None,
            })
            .collect()
    }

    /// What `/health` shows of every model.
    pub fn statuses(&self) -> Vec<EntryStatus> {
        self.list()
            .iter()
            .map(|e| {
                let (status, error) = match e.state() {
                    State::Unloaded => ("unloaded", None),
                    State::Loading { .. } => ("loading", None),
                    State::Ready(_) => ("ready", None),
                    State::Failed(why) => ("failed", Some(why)),
                };
                let m = e.memory();
                EntryStatus {
                    name: e.name.clone(),
                    aliases: e.aliases.clone(),
                    kind: e.known_kind().map(ModelKind::name),
                    status,
                    error,
                    on_demand: e.on_demand,
                    keep_alive_secs: match e.keep_alive() {
                        KeepAlive::Forever => None,
                        KeepAlive::For(d) => Some(d.as_secs_f64()),
                    },
                    requests_in_flight: e.leases.load(Ordering::Acquire),
                    memory: MemoryJson {
                        weights_bytes: m.weights,
                        activation_bytes: m.activations,
                        kv_cache_bytes: m.kv,
                    },
                }
            })
            .collect()
    }

    /// Finds the model a request names, or the first model serving `route` when it
    /// names none; loads it if needed (waiting for the load), and leases it.
    pub async fn acquire(
        self: &Arc<Self>,
        asked: Option<&str>,
        route: Route,
    ) -> Result<Lease, ApiError> {
        let entry = match asked.map(str::trim).filter(|a| !a.is_empty()) {
            Some(name) => match self.find(name) {
                Ok(e) => e,
                // Nothing here serves the route at all: say how to serve one.
                Err(_) if !self.serves_any(route) => {
                    let how = ApiError::not_served(route.needs(), route.flag()).message;
                    let message = format!("The model `{name}` does not exist. {how}");
                    return Err(ApiError::model_not_found(name).with_message(message));
                }
                Err(e) => return Err(e),
            },
            None => self.default_for(route)?,
        };
        if let Some(kind) = entry.known_kind()
            && !kind.serves(route)
        {
            return Err(wrong_kind(&entry.name, kind, route));
        }
        let lease = self.lease(&entry).await?;
        let kind = lease.loaded.kind();
        if !kind.serves(route) {
            return Err(wrong_kind(&entry.name, kind, route));
        }
        Ok(lease)
    }

    /// Like `acquire` for a name of any kind (Ollama's routes branch on the kind).
    pub async fn acquire_any(self: &Arc<Self>, name: &str) -> Result<Lease, ApiError> {
        let entry = self.find(name)?;
        self.lease(&entry).await
    }

    /// The entry answering to `name`, looking in `--models-dir` for new files on a miss.
    fn find(&self, name: &str) -> Result<Arc<Entry>, ApiError> {
        let known = |reg: &Self| reg.list().into_iter().find(|e| e.answers_to(name));
        if let Some(e) = known(self) {
            return Ok(e);
        }
        if self.loader.get().is_some()
            && let Some(dir) = &self.models_dir
        {
            for (found, spec) in discover::scan(dir) {
                // A name already taken (by a listed model) stays the listed one's.
                let _ = self.add(&found, spec, true);
            }
            if let Some(e) = known(self) {
                return Ok(e);
            }
        }
        Err(ApiError::model_not_found(name))
    }

    fn serves_any(&self, route: Route) -> bool {
        self.list().iter().any(|e| {
            e.known_kind().is_some_and(|k| k.serves(route))
                || (e.known_kind().is_none() && route != Route::Generate)
        })
    }

    fn default_for(&self, route: Route) -> Result<Arc<Entry>, ApiError> {
        let entries = self.list();
        let best = entries
            .iter()
            .filter(|e| !e.on_demand)
            .filter_map(|e| Some((e.known_kind()?, e)))
            .filter(|(k, _)| k.serves(route))
            .min_by_key(|(k, _)| k.preference(route));
        if let Some((_, e)) = best {
            return Ok(e.clone());
        }
        if entries
            .iter()
            .any(|e| matches!(e.state(), State::Loading { .. }))
        {
            return Err(ApiError::loading());
        }
        // A model of the route's family that cannot serve it (a cross-encoder asked for
        // embeddings) is named, with what it does serve.
        let family = |k: ModelKind| (k == ModelKind::Llm) == (route == Route::Generate);
        let near = entries
            .iter()
            .filter(|e| !e.on_demand)
            .find_map(|e| e.known_kind().filter(|k| family(*k)).map(|k| (e, k)));
        match near {
            Some((e, kind)) => Err(wrong_kind(&e.name, kind, route)),
            None => Err(ApiError::not_served(route.needs(), route.flag())),
        }
    }

    /// Leases `entry`, loading it first if it is not loaded.
    async fn lease(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<Lease, ApiError> {
        let mut changes = entry.changed.subscribe();
        let mut started = false;
        loop {
            if let Some(lease) = entry.try_lease() {
                return Ok(lease);
            }
            match entry.state() {
                State::Ready(_) => continue,
                State::Loading { waitable: false } => return Err(ApiError::loading()),
                State::Loading { waitable: true } => {}
                State::Failed(why) if started => {
                    return Err(lifecycle::load_failed(&entry.name, &why));
                }
                State::Unloaded | State::Failed(_) => {
                    if self.loader.get().is_none() {
                        return Err(ApiError::model_not_found(&entry.name));
                    }
                    started = true;
                    self.begin_load(entry);
                }
            }
            if changes.changed().await.is_err() {
                return Err(ApiError::stopped());
            }
        }
    }
}
