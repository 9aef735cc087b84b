//! Pulling an image: resolve the reference on the first endpoint that
//! answers, pick the platform's manifest, fetch the config, then download
//! every missing layer at once (bounded), unpacking each into its snapshot
//! while it downloads. Nothing becomes visible until every digest checked
//! out: layers land in staging directories that are renamed into place, and
//! the image record is written last.

use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};

use crate::digest::{self, Hasher};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{self, Descriptor, Document, Manifest};
use crate::metadata::{ImageRecord, LayerRecord};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::auth::Credentials;
use crate::registry::{hosts, Fetched, Session};
use crate::{Inner, LayerPhase, Progress};

const MANIFEST_LIMIT: usize = 8 << 20;
const CONFIG_LIMIT: usize = 32 << 20;
/// Progress events are sent at most every this many bytes per layer.
const PROGRESS_STEP: u64 = 512 << 10;

/// What a reference resolved to.
struct Resolved {
    /// The digest the reference names (the index's, for a multi-platform image).
    top_digest: String,
    index: Option<Fetched>,
    manifest: Fetched,
    parsed: Manifest,
}

pub(crate) async fn pull(
    inner: Arc<Inner>,
    r: ImageRef,
    creds: Credentials,
    events: broadcast::Sender<Progress>,
) -> Result<ImageRecord> {
    let endpoints = hosts::endpoints(r.registry(), &inner.settings.registry);
    if endpoints.is_empty() {
        return Err(Error::Unsupported {
            what: "registry configuration".into(),
            detail: format!(
                "{} has no mirrors and upstream = false: nowhere to pull from",
                r.registry()
            ),
        });
    }
    let mut failures: Vec<(String, Error)> = Vec::new();
    for ep in endpoints {
        let cred = creds.for_endpoint(r.registry(), &ep.host);
        let session = match inner.client.session(
            ep.clone(),
            r.repository(),
            cred,
            inner.settings.progress_timeout,
        ) {
            Ok(s) => s,
            Err(e) => {
                failures.push((ep.base, e));
                continue;
            }
        };
        match resolve(&session, &r, &inner.settings.platform).await {
            Ok(resolved) => {
                tracing::debug!(image = %r, endpoint = %ep.base, digest = %resolved.top_digest, "resolved");
                let _ = events.send(Progress::Resolved(resolved.top_digest.clone()));
                return fetch(inner, Arc::new(session), r, resolved, events).await;
            }
            Err(e) => {
                tracing::info!(image = %r, endpoint = %ep.base, error = %e, "endpoint failed");
                // Content we refuse is refused everywhere: don't mask it.
                if matches!(
                    e.kind(),
                    ErrorKind::DataLoss | ErrorKind::FailedPrecondition
                ) && !matches!(e, Error::Http { .. })
                {
                    return Err(e);
                }
                failures.push((ep.base, e));
            }
        }
    }
    Err(pick_failure(failures))
}

/// The most telling of several endpoint failures: "not found" or "refused
/// credentials" from anyone beats "unreachable"; all are listed.
fn pick_failure(mut failures: Vec<(String, Error)>) -> Error {
    if failures.len() == 1 {
        return failures.remove(0).1;
    }
    let summary = failures
        .iter()
        .map(|(ep, e)| format!("{ep}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    let best = failures
        .iter()
        .position(|(_, e)| matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Unauthenticated))
        .unwrap_or(failures.len() - 1);
    match failures.swap_remove(best).1 {
        Error::RemoteNotFound { what, registry, .. } => Error::RemoteNotFound {
            what,
            registry,
            detail: format!("tried every endpoint: {summary}"),
        },
        Error::Unauthorized {
            registry,
            repository,
            ..
        } => Error::Unauthorized {
            registry,
            repository,
            detail: format!("tried every endpoint: {summary}"),
        },
        _ => Error::Unreachable {
            url: "every endpoint".into(),
            detail: summary,
        },
    }
}

fn check_digest(what: &str, expected: &str, actual: &str) -> Result<()> {
    if expected != actual {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

async fn resolve(session: &Session, r: &ImageRef, platform: &Platform) -> Result<Resolved> {
    let top = session.manifest(r.object(), MANIFEST_LIMIT).await?;
    if let Some(d) = r.digest() {
        check_digest("manifest", d, &top.digest)?;
    }
    match manifest::parse_document(&top.media_type, &top.body)? {
        Document::Manifest(parsed) => Ok(Resolved {
            top_digest: top.digest.clone(),
            index: None,
            manifest: top,
            parsed,
        }),
        Document::Index(index) => {
            let chosen = choose_platform(&index.manifests, platform)?;
            let m = session.manifest(&chosen.digest, MANIFEST_LIMIT).await?;
            check_digest("manifest", &chosen.digest, &m.digest)?;
            let parsed = match manifest::parse_document(&m.media_type, &m.body)? {
                Document::Manifest(p) => p,
                Document::Index(_) => {
                    return Err(Error::Unsupported {
                        what: "image index".into(),
                        detail: "an index that points to another index".into(),
                    })
                }
            };
            Ok(Resolved {
                top_digest: top.digest.clone(),
                index: Some(top),
                manifest: m,
                parsed,
            })
        }
    }
}

fn choose_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Result<&'a Descriptor> {
    entries
        .iter()
        .filter_map(|d| {
            let p = d.platform.as_ref()?;
            want.score(&p.os, &p.architecture, p.variant.as_deref())
                .map(|s| (s, d))
        })
        .max_by_key(|(s, _)| *s)
        .map(|(_, d)| d)
        .ok_or_else(|| {
            let have: Vec<String> = entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| {
                    let mut s = format!("{}/{}", p.os, p.architecture);
                    if let Some(v) = &p.variant {
                        s.push('/');
                        s.push_str(v);
                    }
                    s
                })
                .collect();
            Error::RemoteNotFound {
                what: format!("a manifest for platform {want}"),
                registry: "the image index".into(),
                detail: format!("the index offers {}", have.join(", ")),
            }
        })
}

async fn fetch(
    inner: Arc<Inner>,
    session: Arc<Session>,
    r: ImageRef,
    resolved: Resolved,
    events: broadcast::Sender<Progress>,
) -> Result<ImageRecord> {
    let m = &resolved.parsed;
    let config_mt = m.config.media_type.as_str();
    if !matches!(
        config_mt,
        manifest::OCI_CONFIG | manifest::DOCKER_CONFIG | ""
    ) {
        return Err(Error::Unsupported {
            what: "artifact".into(),
            detail: format!("config media type {config_mt:?} is not a container image"),
        });
    }
    let config_body = session.blob_bytes(&m.config.digest, CONFIG_LIMIT).await?;
    check_digest(
        "image config",
        &m.config.digest,
        &digest::sha256(&config_body),
    )?;
    let config = manifest::parse_config(&config_body)?;
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(Error::InvalidContent {
            what: "image".into(),
            detail: format!(
                "the manifest lists {} layers but the config {} diff ids",
                m.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::with_capacity(m.layers.len());
    let mut parent: Option<String> = None;
    for (desc, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
        if berth_snapshot::Compression::from_media_type(&desc.media_type).is_none() {
            return Err(Error::Unsupported {
                what: "layer media type".into(),
                detail: format!("{:?} (layer {})", desc.media_type, desc.digest),
            });
        }
        let chain = berth_snapshot::chain_id(parent.as_deref(), diff_id);
        layers.push(LayerRecord {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            size: desc.size,
            diff_id: diff_id.clone(),
            chain_id: chain.clone(),
        });
        parent = Some(chain);
    }
    let blobs: Vec<String> = [Some(&m.config.digest), Some(&resolved.manifest.digest)]
        .into_iter()
        .flatten()
        .chain(resolved.index.as_ref().map(|i| &i.digest))
        .cloned()
        .collect();
    let _lease = inner
        .lease(
            layers
                .iter()
                .map(|l| l.chain_id.clone())
                .chain(blobs.clone()),
        )
        .await;

    // Download and unpack every missing layer, at most N at a time.
    let jobs = layers.iter().enumerate().map(|(i, l)| {
        let inner = inner.clone();
        let session = session.clone();
        let events = events.clone();
        let layer = l.clone();
        let lowers: Vec<String> = layers[..i]
            .iter()
            .rev()
            .map(|l| l.chain_id.clone())
            .collect();
        async move {
            let key = layer.chain_id.clone();
            let inner2 = inner.clone();
            let shared = inner
                .layer_flights
                .run(key, move || async move {
                    ensure_layer(inner2, session, layer, lowers, events)
                        .await
                        .map_err(Arc::new)
                })
                .await;
            match shared {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(Error::Shared(e)),
                None => Err(Error::Cancelled),
            }
        }
    });
    for res in futures::future::join_all(jobs).await {
        res?;
    }

    // Everything checked out: keep the documents, then publish the image.
    let content = inner.content.clone();
    let docs: Vec<(String, Bytes)> = [
        Some((m.config.digest.clone(), config_body.clone())),
        Some((
            resolved.manifest.digest.clone(),
            resolved.manifest.body.clone(),
        )),
        resolved
            .index
            .as_ref()
            .map(|i| (i.digest.clone(), i.body.clone())),
    ]
    .into_iter()
    .flatten()
    .collect();
    tokio::task::spawn_blocking(move || docs.iter().try_for_each(|(d, b)| content.put(d, b)))
        .await
        .map_err(|e| Error::Internal(format!("storing documents: {e}")))??;

    let size =
        m.config.size.max(0) as u64 + m.layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>();
    let record = ImageRecord {
        id: m.config.digest.clone(),
        repo_tags: r.repo_tag().into_iter().collect(),
        repo_digests: vec![r.repo_digest(&resolved.top_digest)],
        manifest_digest: resolved.manifest.digest.clone(),
        manifest_media_type: if resolved.manifest.media_type.is_empty() {
            manifest::OCI_MANIFEST.into()
        } else {
            resolved.manifest.media_type.clone()
        },
        index_digest: resolved.index.as_ref().map(|i| i.digest.clone()),
        config_media_type: m.config.media_type.clone(),
        layers,
        size,
        user: config.config.map(|c| c.user).unwrap_or_default(),
        pulled_at: chrono::Utc::now().timestamp(),
    };
    inner.publish(record).await
}

/// Makes sure the snapshot of `layer` exists: download, verify, unpack, commit.
async fn ensure_layer(
    inner: Arc<Inner>,
    session: Arc<Session>,
    layer: LayerRecord,
    lowers: Vec<String>,
    events: broadcast::Sender<Progress>,
) -> Result<()> {
    let send = |phase: LayerPhase, current: u64| {
        let _ = events.send(Progress::Layer {
            digest: layer.digest.clone(),
            total: layer.size.max(0) as u64,
            current,
            phase,
        });
    };
    if inner.snapshots.exists(&layer.chain_id) {
        send(LayerPhase::AlreadyExists, layer.size.max(0) as u64);
        return Ok(());
    }
    send(LayerPhase::Waiting, 0);
    let _permit = inner
        .downloads
        .acquire()
        .await
        .map_err(|_| Error::Cancelled)?;
    let compression =
        berth_snapshot::Compression::from_media_type(&layer.media_type).ok_or_else(|| {
            Error::Unsupported {
                what: "layer media type".into(),
                detail: layer.media_type.clone(),
            }
        })?;
    let (_, stream) = session.blob_stream(&layer.digest).await?;
    send(LayerPhase::Downloading, 0);

    let staging = inner.snapshots.stage().map_err(|source| Error::Layer {
        digest: layer.digest.clone(),
        source,
    })?;
    let target = staging.path().to_path_buf();
    let parents: Vec<PathBuf> = lowers
        .iter()
        .filter_map(|c| inner.snapshots.fs_path(c).ok())
        .filter(|p| p.is_dir())
        .collect();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let applier = tokio::task::spawn_blocking(move || {
        let r = berth_snapshot::apply_layer(ChannelReader::new(rx), compression, &target, &parents);
        (staging, r)
    });

    let timeout = inner.settings.progress_timeout;
    let expected_size = layer.size.max(0) as u64;
    let mut hasher = Hasher::default();
    let mut received: u64 = 0;
    let mut next_event = PROGRESS_STEP;
    let mut applier_gone = false;
    let mut stream = pin!(stream);
    let downloaded: Result<()> = loop {
        match tokio::time::timeout(timeout, stream.next()).await {
            Err(_) => {
                break Err(Error::ProgressTimeout {
                    what: format!("layer {}", layer.digest),
                    timeout,
                })
            }
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(e),
            Ok(Some(Ok(chunk))) => {
                received += chunk.len() as u64;
                inner
                    .downloaded
                    .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if received > expected_size {
                    break Err(Error::InvalidContent {
                        what: format!("layer {}", layer.digest),
                        detail: format!(
                            "more than the {expected_size} bytes the manifest declares"
                        ),
                    });
                }
                hasher.update(&chunk);
                if received >= next_event {
                    send(LayerPhase::Downloading, received);
                    next_event = received + PROGRESS_STEP;
                }
                if tx.send(chunk).await.is_err() {
                    applier_gone = true;
                    break Ok(());
                }
            }
        }
    };
    drop(tx);
    if downloaded.is_ok() && !applier_gone {
        send(LayerPhase::Unpacking, received);
    }
    let (staging, applied) = applier
        .await
        .map_err(|e| Error::Internal(format!("layer unpacker: {e}")))?;
    let verdict = (|| {
        // When the unpacker stopped reading, its error explains the rest.
        if applier_gone {
            if let Err(source) = applied {
                return Err(Error::Layer {
                    digest: layer.digest.clone(),
                    source,
                });
            }
            return Err(Error::Internal("the layer unpacker stopped early".into()));
        }
        downloaded?;
        let applied = applied.map_err(|source| Error::Layer {
            digest: layer.digest.clone(),
            source,
        })?;
        if received != expected_size {
            return Err(Error::InvalidContent {
                what: format!("layer {}", layer.digest),
                detail: format!("{received} bytes received, the manifest declares {expected_size}"),
            });
        }
        check_digest(
            &format!("layer {}", layer.digest),
            &layer.digest,
            &hasher.finish(),
        )?;
        check_digest(
            &format!("uncompressed layer {}", layer.digest),
            &layer.diff_id,
            &applied.diff_id,
        )?;
        Ok(())
    })();
    if let Err(e) = verdict {
        // Remove the partial snapshot before answering, so that a failed
        // pull has left nothing behind by the time the caller hears of it.
        let _ = tokio::task::spawn_blocking(move || drop(staging)).await;
        return Err(e);
    }
    let chain = layer.chain_id.clone();
    let store = inner.clone();
    tokio::task::spawn_blocking(move || store.snapshots.commit(staging, &chain))
        .await
        .map_err(|e| Error::Internal(format!("committing snapshot: {e}")))?
        .map_err(|source| Error::Layer {
            digest: layer.digest.clone(),
            source,
        })?;
    inner.store_changed();
    send(LayerPhase::Done, received);
    Ok(())
}

/// A blocking `Read` over chunks sent from the async download.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::DescPlatform;

    fn entry(arch: &str, variant: Option<&str>, n: char) -> Descriptor {
        Descriptor {
            media_type: manifest::OCI_MANIFEST.into(),
            digest: format!("sha256:{}", n.to_string().repeat(64)),
            size: 1,
            platform: Some(DescPlatform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(str::to_string),
            }),
            urls: vec![],
        }
    }

    #[test]
    fn platform_choice() {
        let entries = vec![
            entry("arm", Some("v6"), '1'),
            entry("arm", Some("v7"), '2'),
            entry("amd64", None, '3'),
            entry("arm64", Some("v8"), '4'),
        ];
        let pick = |p: &str| {
            choose_platform(&entries, &Platform::parse(p).unwrap())
                .map(|d| d.digest.chars().last().unwrap())
        };
        assert_eq!(pick("linux/amd64").unwrap(), '3');
        assert_eq!(pick("linux/arm/v7").unwrap(), '2');
        assert_eq!(pick("linux/arm64/v8").unwrap(), '4');
        let e = pick("linux/s390x").unwrap_err().to_string();
        assert!(e.contains("linux/amd64") && e.contains("s390x"), "{e}");
    }
}
