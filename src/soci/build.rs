//! Building the zTOCs of one image manifest: each indexable layer is streamed from the
//! repository straight into the zTOC builder (no disk, memory bounded by the builder's
//! window ring and a few in-flight chunks), several layers at once, reusing cached
//! zTOCs where the cache has a valid one.

use super::cache::{reusable_ztoc, CachedLayer, ZtocCache};
use super::index::{soci_index_manifest, ZtocEntry, CONFIG_BLOB};
use super::layers::{decide, LayerDecision};
use super::memory::{initial_estimate, MemoryBudget, Reservation, IN_FLIGHT_CHUNKS};
use super::settings::{IndexVersion, SociSettings};
use super::time_budget::LayerTimeBudget;
use super::{Result, SociError};
use crate::oci::gojson::{GoDescriptor, GoManifest};
use crate::oci::Sha256Digest;
use crate::registry::{push_bytes, Manifest, Repository};
use crate::ztoc::{EncodedZtoc, LayerCompression, LayerFacts, ZtocBuilder, ZtocOptions};

/// Checking a cached zTOC decodes it: its entries then take a few times its size.
const CACHED_ZTOC_DECODE_FACTOR: u64 = 4;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

/// What happens, for progress bars and logs.
#[derive(Debug, Clone)]
pub enum ProgressEvent {
    /// A layer's zTOC is being made (from the cache or by reading the layer).
    LayerStarted {
        /// The layer's digest.
        layer: Sha256Digest,
        /// The layer's size in bytes.
        size: u64,
    },
    /// Bytes of a layer were read.
    LayerBytes {
        /// The layer's digest.
        layer: Sha256Digest,
        /// The size of this chunk (not a running total).
        bytes: u64,
    },
    /// A layer's zTOC is pushed.
    LayerFinished {
        /// The layer's digest.
        layer: Sha256Digest,
        /// True when the zTOC came from the cache and the layer was not read.
        from_cache: bool,
    },
}

/// A progress callback (the CLI draws bars with it; the Lambda passes none).
pub type Progress = Arc<dyn Fn(ProgressEvent) + Send + Sync>;

/// What became of one layer.
#[derive(Debug, Clone)]
pub struct LayerOutcome {
    /// The layer's digest.
    pub layer: Sha256Digest,
    /// The layer's media type.
    pub media_type: String,
    /// The layer's size in bytes.
    pub size: u64,
    /// Whether it got a zTOC, and why not.
    pub result: LayerResult,
}

/// What became of one layer: indexed, or skipped with a reason.
#[derive(Debug, Clone)]
pub enum LayerResult {
    /// The layer has a zTOC in the repository.
    Indexed {
        /// The zTOC's descriptor in the SOCI index.
        entry: ZtocEntry,
        /// True when the zTOC came from the cache.
        from_cache: bool,
        /// Layer bytes read to build it (0 when from the cache).
        bytes_read: u64,
        /// Entries (files, directories, links) the zTOC lists.
        files: usize,
    },
    /// No zTOC, with the reason (a media type without a zTOC format such as zstd, or under `MIN_LAYER_SIZE`).
    Skipped(String),
}

/// The SOCI index of one image manifest (not yet pushed: v1 and v2 push it differently),
/// with its zTOCs and config already in the repository.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    /// `None` when no layer was indexable: nothing was pushed.
    pub manifest: Option<Manifest>,
    /// Every layer of the image, in order.
    pub layers: Vec<LayerOutcome>,
}

impl BuiltIndex {
    /// Layer bytes read over all layers (cache hits read none).
    pub fn bytes_read(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| {
                if let LayerResult::Indexed { bytes_read, .. } = l.result {
                    bytes_read
                } else {
                    0
                }
            })
            .sum()
    }
}

/// Builds (or fetches from the cache) the zTOC of every indexable layer of `image`,
/// pushes them and the `{}` config to `repo`, and returns the SOCI index manifest.
///
/// Under a `budget`, a layer that is not in the cache is started only when the budget
/// admits it; when any is left, the others still finish (and go to the cache) and the
/// result is [`SociError::OutOfTime`] naming the layers left (its `image` is filled in
/// by the caller, which knows which image this is).
#[allow(clippy::too_many_arguments)]
pub async fn build_index_for_manifest(
    repo: &dyn Repository,
    image: &GoManifest,
    version: IndexVersion,
    subject: Option<GoDescriptor>,
    settings: &SociSettings,
    cache: &dyn ZtocCache,
    progress: Option<Progress>,
    budget: Option<&LayerTimeBudget>,
) -> Result<BuiltIndex> {
    let left = std::sync::Mutex::new(Vec::new());
    let left = &left;
    // One memory budget for the image's layers: an invocation indexes one image manifest
    // at a time, so this bounds the function's zTOC memory.
    let memory = settings
        .memory_budget
        .map(|b| Arc::new(MemoryBudget::new(b)));
    let work = image.layers.iter().map(|layer| {
        let progress = progress.clone();
        let memory = memory.clone();
        async move {
            let digest: Sha256Digest = layer.digest.parse().map_err(|e| SociError::Invalid {
                what: format!("layer {}", layer.digest),
                message: format!("{e}"),
            })?;
            let result = match decide(&layer.media_type, layer.size, settings.min_layer_size) {
                LayerDecision::Skip(reason) => LayerResult::Skipped(reason),
                LayerDecision::Index(compression) => {
                    match index_layer(
                        repo,
                        &digest,
                        layer,
                        compression,
                        settings,
                        cache,
                        progress,
                        memory.as_ref(),
                        budget,
                    )
                    .await?
                    {
                        Some(result) => result,
                        None => {
                            left.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(digest.clone());
                            LayerResult::Skipped("left for the retry: out of time".into())
                        }
                    }
                }
            };
            Ok::<_, SociError>(LayerOutcome {
                layer: digest,
                media_type: layer.media_type.clone(),
                size: layer.size,
                result,
            })
        }
    });
    // `buffered` keeps image layer order (zTOC descriptors follow it) while running
    // `layer_concurrency` layers at once.
    let layers: Vec<LayerOutcome> = futures::stream::iter(work)
        .buffered(settings.layer_concurrency.max(1))
        .try_collect()
        .await?;
    let left = std::mem::take(&mut *left.lock().unwrap_or_else(|e| e.into_inner()));
    if !left.is_empty() {
        return Err(SociError::OutOfTime {
            image: String::new(),
            left,
        });
    }
    let entries: Vec<ZtocEntry> = layers
        .iter()
        .filter_map(|l| {
            if let LayerResult::Indexed { entry, .. } = &l.result {
                Some(entry.clone())
            } else {
                None
            }
        })
        .collect();
    if entries.is_empty() {
        return Ok(BuiltIndex {
            manifest: None,
            layers,
        });
    }
    push_bytes(repo, Bytes::from_static(CONFIG_BLOB)).await?;
    let manifest = soci_index_manifest(version, &entries, subject, &settings.build_tool_identifier);
    Ok(BuiltIndex {
        manifest: Some(manifest),
        layers,
    })
}

/// The layer's zTOC, from the cache or built; `None` when it is not cached and the time
/// `budget` has no time for it (nothing was started).
///
/// Within the `memory` budget, if there is one: reserves the layer's estimated need, and
/// starts it again with what it learnt it needs when it outgrew its reservation while
/// other layers held the rest of the budget (see `memory.rs`).
#[allow(clippy::too_many_arguments)]
async fn index_layer(
    repo: &dyn Repository,
    digest: &Sha256Digest,
    layer: &GoDescriptor,
    compression: LayerCompression,
    settings: &SociSettings,
    cache: &dyn ZtocCache,
    progress: Option<Progress>,
    memory: Option<&Arc<MemoryBudget>>,
    budget: Option<&LayerTimeBudget>,
) -> Result<Option<LayerResult>> {
    if let Some(p) = &progress {
        p(ProgressEvent::LayerStarted {
            layer: digest.clone(),
            size: layer.size,
        });
    }
    let mut need = initial_estimate(layer.size);
    loop {
        let reservation = match memory {
            Some(b) => Some(b.reserve(need).await),
            None => None,
        };
        let attempt = index_layer_once(
            repo,
            digest,
            layer,
            compression,
            settings,
            cache,
            progress.clone(),
            reservation,
            budget,
        )
        .await?;
        let (needed, read) = match attempt {
            LayerBuild::Done(result) => return Ok(result),
            LayerBuild::Outgrew { needed, read } => (needed, read),
        };
        let total = memory.map_or(u64::MAX, |b| b.total());
        if needed > total {
            return Err(SociError::MemoryBudget {
                layer: digest.clone(),
                needed,
                budget: total,
            });
        }
        // Next time reserve what the layer is heading for: what it needed so far, scaled
        // to its whole size, and at least a quarter more than it needed (the reservation
        // is capped at the budget, where it can no longer be outgrown but by failing).
        let projected = u128::from(needed) * u128::from(layer.size) / u128::from(read.max(1));
        need = u64::try_from(projected)
            .unwrap_or(u64::MAX)
            .max(needed.saturating_add(needed / 4));
        tracing::info!(
            layer = %digest,
            needed,
            read,
            next_reservation = need.min(total),
            budget = total,
            "the layer outgrew its memory reservation while other layers held the rest of the budget; it starts again once the budget has room"
        );
    }
}

/// How one attempt at a layer ended.
enum LayerBuild<T> {
    Done(T),
    /// It needed `needed` bytes after `read` bytes of the layer, more than its
    /// reservation could grow to now.
    Outgrew {
        needed: u64,
        read: u64,
    },
}

/// Grows a reservation to what a layer needs now (with a quarter to spare, so that it
/// grows rarely); false when the budget has no room for the need itself, now or ever.
fn grow_reservation(reservation: &mut Reservation, needed: u64) -> bool {
    if needed <= reservation.bytes() {
        return true;
    }
    if needed > reservation.budget() {
        return false;
    }
    let spare = needed.saturating_add(reservation.bytes() / 4);
    reservation.try_grow_to(spare.min(reservation.budget())) || reservation.try_grow_to(needed)
}

#[allow(clippy::too_many_arguments)]
async fn index_layer_once(
    repo: &dyn Repository,
    digest: &Sha256Digest,
    layer: &GoDescriptor,
    compression: LayerCompression,
    settings: &SociSettings,
    cache: &dyn ZtocCache,
    progress: Option<Progress>,
    mut reservation: Option<Reservation>,
    budget: Option<&LayerTimeBudget>,
) -> Result<LayerBuild<Option<LayerResult>>> {
    let cache_key = CachedLayer {
        digest,
        facts: LayerFacts {
            size: layer.size,
            compression,
            span_size: settings.span_size,
        },
    };
    let cached = match cache.get(&cache_key).await {
        Some(bytes) => {
            let needed = IN_FLIGHT_CHUNKS + CACHED_ZTOC_DECODE_FACTOR * bytes.len() as u64;
            if let Some(r) = reservation.as_mut() {
                if !grow_reservation(r, needed) {
                    return Ok(LayerBuild::Outgrew { needed, read: 0 });
                }
            }
            match reusable_ztoc(&bytes, &cache_key) {
                Ok(ztoc) => Some((bytes, ztoc)),
                Err(err) => {
                    tracing::warn!(layer = %digest, error = %err, "cached zTOC rejected; rebuilding it from the layer");
                    None
                }
            }
        }
        None => None,
    };
    let from_cache = cached.is_some();
    let (bytes, files, uses_xattrs, bytes_read) = match cached {
        Some((bytes, ztoc)) => (bytes, ztoc.files.len(), ztoc.uses_xattrs(), 0),
        None => {
            if let Some(budget) = budget {
                if !budget.admits(layer.size) {
                    tracing::warn!(
                        layer = %digest,
                        size = layer.size,
                        estimate = ?budget.estimate(layer.size),
                        remaining = ?budget.deadline().remaining(),
                        "not enough time left for this layer; leaving it for the retry"
                    );
                    return Ok(LayerBuild::Done(None));
                }
            }
            let started = budget.map(|b| b.now());
            let options = ZtocOptions {
                span_size: settings.span_size,
                build_tool_identifier: settings.build_tool_identifier.clone(),
            };
            let built = stream_layer_into_builder(
                repo,
                digest,
                layer.size,
                compression,
                options,
                progress.clone(),
                reservation.take(),
            )
            .await?;
            if let (Some(budget), Some(started)) = (budget, started) {
                budget.record(layer.size, started);
            }
            let (ztoc, kept) = match built {
                LayerBuild::Done(done) => done,
                LayerBuild::Outgrew { needed, read } => {
                    return Ok(LayerBuild::Outgrew { needed, read })
                }
            };
            reservation = kept;
            let bytes = ztoc.bytes;
            // In the cache as soon as it is built: a run stopped by its deadline (or
            // failing on another layer) leaves it for the retry.
            cache.put(&cache_key, bytes.clone()).await;
            (bytes, ztoc.entries, ztoc.uses_xattrs, layer.size)
        }
    };
    // From here on the layer holds only its zTOC: the rest goes back to the budget.
    let ztoc_size = bytes.len() as u64;
    if let Some(r) = reservation.as_mut() {
        r.shrink_to(ztoc_size);
    }
    let ztoc_digest = push_bytes(repo, bytes.clone()).await?;
    if let Some(p) = &progress {
        p(ProgressEvent::LayerFinished {
            layer: digest.clone(),
            from_cache,
        });
    }
    tracing::info!(layer = %digest, ztoc = %ztoc_digest, files, from_cache, "zTOC ready");
    // The zTOC is pushed: its memory goes back to the budget.
    drop((bytes, reservation));
    Ok(LayerBuild::Done(Some(LayerResult::Indexed {
        entry: ZtocEntry {
            ztoc_digest,
            ztoc_size,
            layer_digest: digest.clone(),
            layer_media_type: layer.media_type.clone(),
            span_size: settings.span_size,
            disable_xattrs: settings.xattr_optimization && !uses_xattrs,
        },
        from_cache,
        bytes_read,
        files,
    })))
}

/// Streams a layer blob into a [`ZtocBuilder`] running on a blocking thread: download
/// and inflate overlap, and at most a few chunks are in flight. The zTOC comes back
/// encoded ([`ZtocBuilder::finish_encoded`]): its entries never all exist as
/// [`crate::ztoc::FileMetadata`].
///
/// With a `reservation`, the build grows it to what it needs as the layer comes in
/// ([`ZtocBuilder::memory_needed`]), and stops with [`LayerBuild::Outgrew`] when the
/// budget has no room for that now; the reservation comes back with the zTOC.
async fn stream_layer_into_builder(
    repo: &dyn Repository,
    digest: &Sha256Digest,
    expected_size: u64,
    compression: LayerCompression,
    options: ZtocOptions,
    progress: Option<Progress>,
    reservation: Option<Reservation>,
) -> Result<LayerBuild<(EncodedZtoc, Option<Reservation>)>> {
    let mut stream = crate::registry::open_blob(repo, digest, expected_size).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let worker = tokio::task::spawn_blocking(move || {
        let mut reservation = reservation;
        let mut builder = ZtocBuilder::new(compression, options);
        let mut fed = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            builder.feed(&chunk)?;
            fed += chunk.len() as u64;
            if let Some(r) = reservation.as_mut() {
                let needed = builder.memory_needed() + IN_FLIGHT_CHUNKS;
                if !grow_reservation(r, needed) {
                    return Ok(LayerBuild::Outgrew { needed, read: fed });
                }
            }
        }
        let ztoc = builder.finish_encoded()?;
        Ok(LayerBuild::Done((ztoc, reservation)))
    });
    let mut read = 0u64;
    let mut stream_error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                read += chunk.len() as u64;
                if let Some(p) = &progress {
                    p(ProgressEvent::LayerBytes {
                        layer: digest.clone(),
                        bytes: chunk.len() as u64,
                    });
                }
                if tx.send(chunk).await.is_err() {
                    break; // the builder stopped (an error, or memory), reported below
                }
            }
            Err(err) => {
                stream_error = Some(err);
                break;
            }
        }
    }
    drop((tx, stream));
    let built = worker.await.map_err(|e| SociError::Builder {
        layer: digest.clone(),
        message: e.to_string(),
    })?;
    if let Ok(LayerBuild::Outgrew { needed, read }) = built {
        return Ok(LayerBuild::Outgrew { needed, read });
    }
    // A broken download also makes the builder see a truncated layer: report the cause.
    if let Some(err) = stream_error {
        return Err(err.into());
    }
    let built = built.map_err(|source| SociError::Layer {
        layer: digest.clone(),
        source,
    })?;
    if read != expected_size {
        return Err(SociError::LayerSize {
            layer: digest.clone(),
            expected: expected_size,
            actual: read,
        });
    }
    Ok(built)
}
