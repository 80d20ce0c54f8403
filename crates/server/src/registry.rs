//! The registry component: the immutable snapshot every request path reads, and plan/apply,
//! which persist a new version and swap the snapshot atomically.

use std::sync::{Arc, RwLock};

use quiver_core::RegistryState;
use quiver_core::manifest::{ManifestFile, parse_manifests};
use quiver_core::model::Declared;
use quiver_core::plan::{self, Plan};
use quiver_core::registry_store::RegistryStore;
use quiver_core::types::Micros;
use quiver_offline::ParquetSchemaCheck;

use crate::error::{Error, Result};

/// The definitions an apply declares.
#[derive(Debug)]
pub enum Definitions {
    /// Manifest files, as `quiver apply -f` sends them.
    Manifests(Vec<ManifestFile>),
    /// The definitions live at an earlier registry version, given by number or by tag
    /// (`quiver rollback --to`).
    Version(VersionRef),
}

/// A registry version by number or by release tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRef {
    Number(u64),
    Tag(String),
}

impl VersionRef {
    /// `42` is a version number, anything else a tag name.
    pub fn parse(text: &str) -> VersionRef {
        match text.parse() {
            Ok(number) => VersionRef::Number(number),
            Err(_) => VersionRef::Tag(text.to_string()),
        }
    }
}

/// What an apply asks for, validated on receipt.
#[derive(Debug)]
pub struct ApplyRequest {
    pub definitions: Definitions,
    /// A release tag naming the registry version the apply creates (or the current one when
    /// nothing changes).
    pub tag: Option<String>,
    /// The registry version the client planned against, if it wants that checked.
    pub expected_version: Option<u64>,
    /// Apply breaking changes.
    pub force: bool,
    /// The principal applying, recorded on every version the apply creates.
    pub applied_by: String,
}

#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn RegistryStore>,
    current: RwLock<Arc<RegistryState>>,
    /// Serializes applies: read state, plan, persist, swap.
    apply_lock: tokio::sync::Mutex<()>,
    /// Checks sources against their files, and that they lie under the source roots.
    schema_check: ParquetSchemaCheck,
    /// Whether other replicas apply to the same store (`--registry-store`), and when a
    /// request last made this one look (at most once per `ON_DEMAND_EVERY`).
    shared: bool,
    last_on_demand: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The least time between two looks at a shared store for requests naming what this
/// replica does not know (so that unknown names cannot turn into a flood of listings).
const ON_DEMAND_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Registry {
    /// Loads the persisted registry (empty if there is none); plans check sources with
    /// `schema_check`.
    pub async fn open(
        store: Arc<dyn RegistryStore>,
        schema_check: ParquetSchemaCheck,
        shared: bool,
    ) -> Result<Registry> {
        let state = store.latest().await?.unwrap_or_default();
        tracing::info!(registry_version = state.version, store = %store.location(), "registry loaded");
        Ok(Registry {
            store,
            current: RwLock::new(Arc::new(state)),
            apply_lock: tokio::sync::Mutex::new(()),
            schema_check,
            shared,
            last_on_demand: std::sync::Mutex::new(None),
        })
    }

    /// The current immutable registry snapshot.
    pub fn snapshot(&self) -> Arc<RegistryState> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Plans `manifests` against the current snapshot (no change anywhere).
    pub async fn plan(&self, manifests: Vec<ManifestFile>, now: Micros) -> Result<Plan> {
        let current = self.snapshot();
        let check = self.schema_check.clone();
        tokio::task::spawn_blocking(move || -> Result<Plan> {
            let declared = parse_manifests(&manifests)?;
            Ok(plan::plan(&current, declared, &check, now)?)
        })
        .await
        .map_err(|e| Error::Internal(format!("plan task failed: {e}")))?
    }

    /// Applies `request`: persists the new state (when anything changed), then swaps it in.
    /// Returns the registry version after the apply and the changes made.
    ///
    /// Cancel-safe: the apply runs to its end in its own task even when the caller goes away
    /// (a client timeout drops the RPC's future), so storage and the served snapshot never
    /// disagree; the apply lock makes applies one at a time, so two can never write the same
    /// version.
    pub async fn apply(
        self: &Arc<Self>,
        request: ApplyRequest,
        now: Micros,
    ) -> Result<(u64, Plan)> {
        let registry = Arc::clone(self);
        tokio::spawn(async move { registry.apply_to_end(request, now).await })
            .await
            .map_err(|e| Error::Internal(format!("apply task failed: {e}")))?
    }

    async fn apply_to_end(
        self: &Arc<Self>,
        request: ApplyRequest,
        now: Micros,
    ) -> Result<(u64, Plan)> {
        let _guard = self.apply_lock.lock().await;
        let applied = self.persist(request, now).await;
        let (next, plan, tagged) = match applied {
            // Another replica created the version first: serve what it applied; the caller
            // plans again against it.
            Err(Error::Core(quiver_core::Error::StaleRegistry { expected, actual })) => {
                self.refresh().await?;
                return Err(quiver_core::Error::StaleRegistry { expected, actual }.into());
            }
            other => other?,
        };
        let version = next.version;
        if !plan.is_empty() {
            tracing::info!(
                registry_version = version,
                changes = plan.changes.len(),
                "registry applied"
            );
            self.swap_if_newer(next);
        }
        tagged.transpose()?;
        Ok((version, plan))
    }

    /// Plans `request` against the snapshot (on the blocking pool: source files are read)
    /// and persists the new version and the tag: the state, the plan, and the tag's outcome.
    /// Under the apply lock.
    async fn persist(&self, request: ApplyRequest, now: Micros) -> Result<Persisted> {
        let store = &self.store;
        let (manifests, declared) = match request.definitions {
            Definitions::Manifests(manifests) => (manifests, None),
            Definitions::Version(version) => {
                (Vec::new(), Some(declared_at(&**store, &version).await?))
            }
        };
        let (current, check) = (self.snapshot(), self.schema_check.clone());
        let (expected, force) = (request.expected_version, request.force);
        let (mut next, plan) = crate::run_blocking(move || {
            let declared = match declared {
                Some(declared) => declared,
                None => parse_manifests(&manifests)?,
            };
            Ok(plan::apply(
                &current, declared, expected, force, &check, now,
            )?)
        })
        .await?;
        let tag = request.tag.as_deref();
        if let Some(tag) = tag {
            check_tag(&**store, tag, next.version, !plan.is_empty()).await?;
        }
        if !plan.is_empty() {
            next.record_applier(&request.applied_by);
            store.create(&next).await?;
        }
        // After the version (the commit point, served below whatever the tag does).
        let tagged = match tag {
            None => None,
            Some(tag) => {
                let written = store.set_tag(tag, next.version).await.map_err(Error::from);
                Some(match plan.is_empty() {
                    true => written,
                    false => written.map_err(|error| {
                        Error::FailedPrecondition(format!(
                            "registry version {} is applied, but tag `{tag}` was not written ({error}); apply again with the tag to name it",
                            next.version
                        ))
                    }),
                })
            }
        };
        Ok((next, plan, tagged))
    }

    /// Every release tag, the registry version it names and when that version was applied.
    pub async fn tags_with_times(&self) -> Result<Vec<(String, u64, Micros)>> {
        let mut tags = Vec::new();
        for (name, version) in self.store.tags().await? {
            let applied = self.store.load(version).await?;
            tags.push((name, version, applied.map_or(0, |state| state.updated_at)));
        }
        Ok(tags)
    }

    /// Serves the store's newest version if it is newer than the snapshot (another replica
    /// applied it); whether it did.
    pub async fn refresh(&self) -> Result<bool> {
        let current = self.snapshot().version;
        let latest = self.store.latest_version().await?;
        let newer = if latest > current {
            self.store.load(latest).await?
        } else {
            None
        };
        Ok(newer.map(|state| self.swap_if_newer(state)).is_some())
    }

    /// Whether `error` (a request naming a feature service, view or version) could be
    /// answered by a version another replica applied to the shared store.
    pub fn may_be_elsewhere(&self, error: &Error) -> bool {
        self.shared
            && matches!(
                error,
                Error::Core(
                    quiver_core::Error::NotFound { .. }
                        | quiver_core::Error::VersionNotFound { .. }
                )
            )
    }

    /// Refreshes from the shared store unless a request did so less than
    /// a second ago; whether a newer version is now served.
    pub async fn refresh_on_demand(self: &Arc<Self>) -> Result<bool> {
        {
            let mut last = self
                .last_on_demand
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = std::time::Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < ON_DEMAND_EVERY) {
                return Ok(false);
            }
            *last = Some(now);
        }
        self.refresh().await
    }

    fn swap_if_newer(&self, state: RegistryState) {
        let state = Arc::new(state);
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.version > guard.version {
            *guard = state;
        }
    }
}

/// What [`Registry::persist`] did: the new state, the plan, and the tag's outcome (if asked).
type Persisted = (RegistryState, Plan, Option<Result<()>>);

/// The definitions live at registry version `version`.
async fn declared_at(store: &dyn RegistryStore, version: &VersionRef) -> Result<Vec<Declared>> {
    let number = match version {
        VersionRef::Number(number) => *number,
        VersionRef::Tag(name) => store.tag(name).await?.ok_or_else(|| Error::NotFound {
            what: "tag",
            name: name.clone(),
        })?,
    };
    let state = store.load(number).await?.ok_or_else(|| Error::NotFound {
        what: "registry version",
        name: number.to_string(),
    })?;
    Ok(state.declared())
}

/// A tag name is 1 to 128 of `A-Z a-z 0-9 . _ -`, not a number (numbers are versions); an
/// existing tag may only be given again for the version it names: tags never move.
/// `version` is the one the tag would name: the version the apply creates (`created`), or the
/// current one when the apply changes nothing.
async fn check_tag(
    store: &dyn RegistryStore,
    tag: &str,
    version: u64,
    created: bool,
) -> Result<()> {
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && tag.parse::<u64>().is_err()
        && tag != "."
        && tag != "..";
    if !valid {
        return Err(Error::invalid(
            "tag",
            format!(
                "`{tag}` is not a tag name: use 1 to 128 letters, digits, `.`, `_` or `-`, \
                 not a plain number (numbers name registry versions)"
            ),
        ));
    }
    match store.tag(tag).await? {
        Some(named) if created || named != version => Err(Error::FailedPrecondition(format!(
            "tag `{tag}` already names registry version {named}; tags never move, choose \
                 another name"
        ))),
        None if version == 0 => Err(Error::FailedPrecondition(
            "the registry is empty: there is no version to tag".into(),
        )),
        _ => Ok(()),
    }
}
