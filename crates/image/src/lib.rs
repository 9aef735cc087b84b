//! Berth's image service.
//!
//! * [`reference`]: docker-style reference normalisation;
//! * [`registry`]: the OCI distribution client (mirrors, auth, streaming);
//! * [`manifest`]: index, manifest and config documents;
//! * [`content`]: the blob store for those documents;
//! * [`metadata`]: image records and lookup by id, tag or digest;
//! * `pull`: the pull pipeline; layers are unpacked by `berth-snapshot`.
//!
//! [`ImageService`] ties them together; the CRI server calls only it.
#![deny(unsafe_code)]

pub mod content;
pub mod digest;
pub mod error;
pub mod manifest;
pub mod metadata;
pub mod platform;
mod pull;
pub mod reference;
pub mod registry;
mod singleflight;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use berth_config::{Config, RegistryHost};
use berth_snapshot::SnapshotStore;
use berth_store::RecordDir;
use tokio::sync::{broadcast, Semaphore};

pub use error::{Error, ErrorKind, Result};
pub use metadata::{ImageRecord, LayerRecord, Match};
pub use reference::ImageRef;
pub use registry::auth::AuthFields;

use content::ContentStore;
use metadata::Images;
use platform::Platform;
use registry::auth::Credentials;

/// What the pull of one layer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerPhase {
    Waiting,
    Downloading,
    Unpacking,
    Done,
    AlreadyExists,
}

/// A pull progress event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The reference resolved to this digest.
    Resolved(String),
    /// A layer's state; `current` of `total` compressed bytes.
    Layer {
        digest: String,
        total: u64,
        current: u64,
        phase: LayerPhase,
    },
}

/// Settings the image service takes from the daemon configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub registry: BTreeMap<String, RegistryHost>,
    pub credentials_file: Option<PathBuf>,
    pub progress_timeout: Duration,
    pub max_concurrent_downloads: usize,
    pub platform: Platform,
    /// Normalised names of pinned images.
    pub pinned: HashSet<String>,
}

impl Settings {
    /// Extracts the image settings from the daemon configuration.
    pub fn from_config(c: &Config) -> Result<Settings> {
        let platform = match &c.image.platform {
            Some(p) => Platform::parse(p).map_err(Error::Config)?,
            None => Platform::host(),
        };
        let mut pinned = HashSet::new();
        for p in &c.image.pinned_images {
            let r = ImageRef::parse(p).map_err(|e| Error::Config(format!("pinned_images: {e}")))?;
            match r.digest() {
                Some(d) => pinned.insert(r.repo_digest(d)),
                None => pinned.insert(r.repo_tag().unwrap_or_default()),
            };
        }
        Ok(Settings {
            registry: c.registry.clone(),
            credentials_file: c.image.credentials_file.clone(),
            progress_timeout: c.image.image_pull_progress_timeout,
            max_concurrent_downloads: c.image.max_concurrent_downloads,
            platform,
            pinned,
        })
    }
}

/// Bytes and inodes used by the image store.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

pub(crate) struct Inner {
    settings: Settings,
    client: registry::Client,
    content: ContentStore,
    snapshots: SnapshotStore,
    records: RecordDir,
    images: RwLock<Images>,
    pulls: singleflight::Group<String, std::result::Result<ImageRecord, Arc<Error>>>,
    layer_flights: singleflight::Group<String, std::result::Result<(), Arc<Error>>>,
    progress: Mutex<HashMap<String, broadcast::Sender<Progress>>>,
    downloads: Semaphore,
    /// Snapshots and blobs in use by pulls that have not published yet.
    leases: Mutex<HashMap<String, usize>>,
    /// Snapshots used by containers' root filesystems, by container id.
    holds: Mutex<HashMap<String, Vec<String>>>,
    /// Held shared to take a lease, exclusively while collecting garbage.
    gc_lock: tokio::sync::RwLock<()>,
    snapshot_root: PathBuf,
    /// Bumped whenever snapshots or blobs are added or removed.
    store_generation: AtomicU64,
    /// The last usage computed, and the generation it was computed at:
    /// kubelet polls ImageFsInfo, and walking the store is not free.
    usage_cache: Mutex<Option<(u64, FsUsage)>>,
    /// Layer bytes received from registries since the start.
    downloaded: AtomicU64,
}

/// The image service.
#[derive(Clone)]
pub struct ImageService {
    inner: Arc<Inner>,
}

/// Keeps snapshots and blobs from garbage collection while a pull runs.
pub(crate) struct Lease {
    inner: Arc<Inner>,
    keys: Vec<String>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut l = self.inner.leases.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            if let Some(n) = l.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    l.remove(k);
                }
            }
        }
    }
}

impl Inner {
    /// Notes that the store's content changed (usage must be recomputed).
    pub(crate) fn store_changed(&self) {
        self.store_generation.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) async fn lease(self: &Arc<Self>, keys: impl Iterator<Item = String>) -> Lease {
        let _g = self.gc_lock.read().await;
        let keys: Vec<String> = keys.collect();
        let mut l = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        for k in &keys {
            *l.entry(k.clone()).or_default() += 1;
        }
        Lease {
            inner: self.clone(),
            keys,
        }
    }

    /// Adds a pulled image (or new names of a known one) and persists it.
    pub(crate) async fn publish(self: &Arc<Self>, new: ImageRecord) -> Result<ImageRecord> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut images = this.images.write().unwrap_or_else(|p| p.into_inner());
            let mut record = match images.get(&new.id) {
                Some(old) => {
                    let mut r = old.clone();
                    for t in &new.repo_tags {
                        if !r.repo_tags.contains(t) {
                            r.repo_tags.push(t.clone());
                        }
                    }
                    for d in &new.repo_digests {
                        if !r.repo_digests.contains(d) {
                            r.repo_digests.push(d.clone());
                        }
                    }
                    r
                }
                None => new.clone(),
            };
            record.repo_tags.sort();
            record.repo_digests.sort();
            // A tag names one image: take it from whichever had it before.
            let mut changed = Vec::new();
            for t in &new.repo_tags {
                changed.extend(images.untag_others(t, &record.id));
            }
            for id in changed {
                if let Some(r) = images.get(&id) {
                    this.records.put(digest::hex_part(&id), r)?;
                }
            }
            this.records.put(digest::hex_part(&record.id), &record)?;
            images.insert(record.clone());
            this.store_changed();
            Ok(record)
        })
        .await
        .map_err(|e| Error::Internal(format!("publishing image: {e}")))?
    }
}

impl ImageService {
    /// Opens the image store under `root` (creating it), removes what an
    /// interrupted pull left behind, and collects unreferenced content.
    pub async fn open(root: &Path, settings: Settings) -> Result<ImageService> {
        let root = root.to_path_buf();
        let snapshot_root = root.join("snapshots");
        let (content, snapshots, records, images) = {
            let root = root.clone();
            let snapshot_root = snapshot_root.clone();
            tokio::task::spawn_blocking(move || -> Result<_> {
                let content = ContentStore::open(&root.join("content"))?;
                let snapshots =
                    SnapshotStore::open(&snapshot_root).map_err(|source| Error::Layer {
                        digest: "(store)".into(),
                        source,
                    })?;
                let records = RecordDir::open(root.join("images"))?;
                let (loaded, bad) = records.load_all::<ImageRecord>()?;
                for u in bad {
                    let q = records.quarantine(&u.key, &u.error.to_string())?;
                    tracing::warn!(
                        image = %u.key,
                        error = %u.error,
                        moved_to = %q.path.display(),
                        "unreadable image record quarantined"
                    );
                }
                let mut images = Images::default();
                for (_, r) in loaded {
                    images.insert(r);
                }
                Ok((content, snapshots, records, images))
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
        };
        let svc = ImageService {
            inner: Arc::new(Inner {
                client: registry::Client::new(Duration::from_secs(30))?,
                downloads: Semaphore::new(settings.max_concurrent_downloads),
                settings,
                content,
                snapshots,
                records,
                images: RwLock::new(images),
                pulls: Default::default(),
                layer_flights: Default::default(),
                progress: Mutex::default(),
                leases: Mutex::default(),
                holds: Mutex::default(),
                gc_lock: tokio::sync::RwLock::new(()),
                snapshot_root,
                store_generation: AtomicU64::new(0),
                usage_cache: Mutex::new(None),
                downloaded: AtomicU64::new(0),
            }),
        };
        let quarantined = svc.quarantined()?;
        if !quarantined.is_empty() {
            tracing::warn!(
                records = quarantined.len(),
                "image records in quarantine: no layer or blob present now is collected \
                 until they are dealt with (see <root>/images/images/quarantine)"
            );
            svc.hold_everything("quarantined image records")?;
        }
        Ok(svc)
    }

    /// Keeps `r`'s layer snapshots for `owner` (a container) until
    /// [`ImageService::release`], and returns their directories, topmost
    /// first, as overlay lower layers. Fails if the image is gone.
    pub async fn hold(&self, owner: &str, r: &ImageRecord) -> Result<Vec<PathBuf>> {
        let _g = self.inner.gc_lock.read().await;
        let chains: Vec<String> = r.chain_ids().map(str::to_string).collect();
        let mut lowers = Vec::with_capacity(chains.len());
        for c in chains.iter().rev() {
            if !self.inner.snapshots.exists(c) {
                return Err(Error::ImageNotFound(format!(
                    "{} (its layer snapshot {c} is missing; pull the image again)",
                    r.id
                )));
            }
            lowers.push(
                self.inner
                    .snapshots
                    .fs_path(c)
                    .map_err(|source| Error::Layer {
                        digest: c.clone(),
                        source,
                    })?,
            );
        }
        self.hold_chains(owner, chains);
        Ok(lowers)
    }

    /// Records that `owner` uses these snapshots (at start, for containers
    /// that exist already).
    pub fn hold_chains(&self, owner: &str, chains: Vec<String>) {
        self.inner
            .holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(owner.to_string(), chains);
    }

    /// Keeps every snapshot and blob the store has now from garbage
    /// collection, for `owner`: a record Berth cannot read may need any of
    /// them, and what Berth cannot read it never destroys.
    pub fn hold_everything(&self, owner: &str) -> Result<()> {
        let mut all = self.inner.snapshots.list().map_err(|source| Error::Layer {
            digest: "(store)".into(),
            source,
        })?;
        all.extend(self.inner.content.list()?);
        self.hold_chains(owner, all);
        Ok(())
    }

    /// The image records in quarantine (unreadable when Berth started).
    pub fn quarantined(&self) -> Result<Vec<berth_store::Quarantined>> {
        Ok(self.inner.records.quarantined()?)
    }

    /// Lets the snapshots `owner` held be collected once no image needs them.
    pub fn release(&self, owner: &str) {
        self.inner
            .holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(owner);
    }

    /// Pulls `reference`; concurrent pulls of the same reference share one
    /// download. Returns the image record.
    pub async fn pull(&self, reference: &str, auth: Option<&AuthFields>) -> Result<ImageRecord> {
        self.pull_with_progress(reference, auth, None).await
    }

    /// Like [`pull`](Self::pull), sending progress events to `progress`.
    pub async fn pull_with_progress(
        &self,
        reference: &str,
        auth: Option<&AuthFields>,
        progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>,
    ) -> Result<ImageRecord> {
        let r = ImageRef::parse(reference)?;
        let creds = Credentials::new(auth, self.inner.settings.credentials_file.as_deref())?;
        let key = r.to_string();
        let events = {
            let mut map = self
                .inner
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.entry(key.clone())
                .or_insert_with(|| broadcast::channel(1024).0)
                .clone()
        };
        let forward = progress.map(|out| {
            let mut rx = events.subscribe();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(ev) => {
                            if out.send(ev).is_err() {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            })
        });
        let inner = self.inner.clone();
        let k2 = key.clone();
        let result = self
            .inner
            .pulls
            .run(key.clone(), move || async move {
                let r2 = r.clone();
                let res = pull::pull(inner.clone(), r, creds, events).await;
                inner
                    .progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&k2);
                match &res {
                    Ok(rec) => tracing::info!(image = %r2, id = %rec.id, "pulled"),
                    Err(e) => tracing::warn!(image = %r2, error = %e, "pull failed"),
                }
                res.map_err(Arc::new)
            })
            .await;
        if let Some(f) = forward {
            // Let the forwarder drain what was sent before the result.
            let _ = tokio::time::timeout(Duration::from_millis(200), f).await;
        }
        match result {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => Err(Error::Shared(e)),
            None => Err(Error::Cancelled),
        }
    }

    /// Every image.
    pub fn list(&self) -> Vec<ImageRecord> {
        let images = self.inner.images.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = images.all().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The image `spec` names (id, id prefix, tag or digest), if present.
    pub fn resolve(&self, spec: &str) -> Option<(ImageRecord, Match)> {
        let images = self.inner.images.read().unwrap_or_else(|p| p.into_inner());
        images.resolve(spec).map(|(r, m)| (r.clone(), m))
    }

    /// True if a pinned name refers to this image.
    /// Layer bytes received from registries since the service started.
    pub fn downloaded_bytes(&self) -> u64 {
        self.inner
            .downloaded
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_pinned(&self, r: &ImageRecord) -> bool {
        let p = &self.inner.settings.pinned;
        r.repo_tags
            .iter()
            .chain(&r.repo_digests)
            .any(|n| p.contains(n))
    }

    /// The raw config JSON of an image.
    pub fn config_json(&self, r: &ImageRecord) -> Result<Vec<u8>> {
        self.inner.content.get(&r.id)
    }

    /// Removes what `spec` names. A tag of an image that has other tags is
    /// only untagged; an id, a digest or an image's last tag removes the
    /// image, and its content goes when no other image needs it. Removing
    /// something that isn't there succeeds (returns false).
    pub async fn remove(&self, spec: &str) -> Result<bool> {
        let this = self.inner.clone();
        let spec = spec.to_string();
        let removed_image = tokio::task::spawn_blocking(move || -> Result<Option<bool>> {
            let mut images = this.images.write().unwrap_or_else(|p| p.into_inner());
            let Some((rec, how)) = images.resolve(&spec).map(|(r, m)| (r.clone(), m)) else {
                return Ok(None);
            };
            if let Match::Tag(tag) = &how {
                if rec.repo_tags.len() > 1 {
                    let mut r = rec.clone();
                    r.repo_tags.retain(|t| t != tag);
                    this.records.put(digest::hex_part(&r.id), &r)?;
                    images.insert(r);
                    tracing::info!(image = %rec.id, %tag, "untagged");
                    return Ok(Some(false));
                }
            }
            this.records.delete(digest::hex_part(&rec.id))?;
            images.remove(&rec.id);
            tracing::info!(image = %rec.id, "removed");
            Ok(Some(true))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        match removed_image {
            None => Ok(false),
            Some(false) => Ok(true),
            Some(true) => {
                self.garbage_collect().await?;
                Ok(true)
            }
        }
    }

    /// Removes snapshots and blobs that no image and no running pull needs.
    pub async fn garbage_collect(&self) -> Result<()> {
        let _g = self.inner.gc_lock.write().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut keep: HashSet<String> = {
                let images = inner.images.read().unwrap_or_else(|p| p.into_inner());
                images
                    .all()
                    .flat_map(|r| {
                        r.chain_ids()
                            .chain(r.blobs())
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            keep.extend(
                inner
                    .holds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .flatten()
                    .cloned(),
            );
            keep.extend(
                inner
                    .leases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .keys()
                    .cloned(),
            );
            let removed = (|| -> Result<()> {
                let snaps = inner.snapshots.list().map_err(|source| Error::Layer {
                    digest: "(store)".into(),
                    source,
                })?;
                for s in snaps.into_iter().filter(|s| !keep.contains(s)) {
                    tracing::debug!(snapshot = %s, "removing unused snapshot");
                    inner.snapshots.remove(&s).map_err(|source| Error::Layer {
                        digest: s.clone(),
                        source,
                    })?;
                }
                for b in inner
                    .content
                    .list()?
                    .into_iter()
                    .filter(|b| !keep.contains(b))
                {
                    tracing::debug!(blob = %b, "removing unused blob");
                    inner.content.remove(&b)?;
                }
                Ok(())
            })();
            // After the removals, also when one failed half-way.
            inner.store_changed();
            removed
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
    }

    /// Bytes and inodes of the image store (snapshots and content). Walked
    /// once per change of the store; polls in between get the cached figure.
    pub async fn usage(&self) -> Result<FsUsage> {
        let generation = self.inner.store_generation.load(Ordering::SeqCst);
        if let Some((g, u)) = *self
            .inner
            .usage_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            if g == generation {
                return Ok(u);
            }
        }
        let inner = self.inner.clone();
        let usage = tokio::task::spawn_blocking(move || -> Result<FsUsage> {
            let s = inner.snapshots.usage().map_err(|source| Error::Layer {
                digest: "(store)".into(),
                source,
            })?;
            let (cb, ci) = inner.content.usage()?;
            Ok(FsUsage {
                bytes: s.bytes + cb,
                inodes: s.inodes + ci,
            })
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        // Cached under the generation seen before the walk: a change during
        // the walk makes the next call walk again.
        *self
            .inner
            .usage_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((generation, usage));
        Ok(usage)
    }

    /// The directory whose filesystem holds the images (for ImageFsInfo).
    pub fn mountpoint(&self) -> &Path {
        &self.inner.snapshot_root
    }
}
