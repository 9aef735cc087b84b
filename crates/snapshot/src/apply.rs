//! The layer applier: untars an OCI layer into an overlayfs upper directory.
//!
//! # Containment
//!
//! Every path is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! against a descriptor of the target directory, so symlinks written by the
//! layer (absolute or relative, chained, dangling) are interpreted as if the
//! target were `/` and can never lead outside it. Entries are then created
//! relative to the resolved parent descriptor with `*at` calls that do not
//! follow a final symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `mknodat`,
//! `symlinkat`, `linkat` without `AT_SYMLINK_FOLLOW`).
//!
//! Entry names are cleaned lexically: empty and `.` components are dropped, a
//! leading `/` is ignored (absolute names land inside the target, as with
//! docker and containerd), and `..` removes the previous component. A name
//! whose `..` would climb above the root is **refused** with
//! [`Error::InvalidLayer`] (docker's behaviour; containerd clamps it to the
//! root instead). No legitimate layer builder writes such names, so refusing
//! surfaces hostile images instead of silently reinterpreting them.
//!
//! # Durability
//!
//! Nothing is fsynced per file, like containerd's default. With
//! [`ApplyOptions::sync_fs`] a single `syncfs(2)` on the target's filesystem
//! runs after the last entry, which is much cheaper than per-file `fsync`.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
    CWD,
};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::tar::{Entry, Kind, Stream, TarError, TarReader, Time};
use crate::Compression;

/// Buffer size for the decompressed stream (and thus for file writes).
const BUFFER_SIZE: usize = 128 * 1024;
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Result of a successful [`apply_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `sha256:<hex>` of the uncompressed tar stream, including any bytes
    /// after the end-of-archive marker.
    pub diff_id: String,
    /// Length of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Number of archive members (files, dirs, links, whiteouts, ...), not
    /// counting PAX and GNU long-name headers.
    pub entries: u64,
}

/// Tuning knobs for [`apply_layer_with`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// Refuse layers whose uncompressed stream is longer than this
    /// (decompression bombs). `None`: unlimited.
    pub max_uncompressed_size: Option<u64>,
    /// Run one `syncfs(2)` on the target filesystem before returning.
    pub sync_fs: bool,
}

impl ApplyOptions {
    /// Sets [`ApplyOptions::max_uncompressed_size`].
    pub fn max_uncompressed_size(mut self, limit: u64) -> Self {
        self.max_uncompressed_size = Some(limit);
        self
    }

    /// Sets [`ApplyOptions::sync_fs`].
    pub fn sync_fs(mut self, sync: bool) -> Self {
        self.sync_fs = sync;
        self
    }
}

/// Decompresses `reader` and applies the tar stream into the empty directory
/// `target` (an overlay upper dir), converting OCI whiteouts to overlayfs
/// form. `parents` are the lower snapshots' fs dirs, topmost first, consulted
/// only for the metadata of parent directories the layer implies but does
/// not contain. Reads the stream to EOF, so the digest covers trailing bytes.
///
/// Reading, decompressing and hashing run on a helper thread, overlapped
/// with the filesystem work on the calling thread (hence `Send`). The call
/// blocks; from async code run it under `spawn_blocking`.
///
/// The caller must be privileged (chown, mknod, `trusted.*` xattrs). On error
/// `target` holds a partial tree: discard it.
pub fn apply_layer(
    reader: impl Read + Send,
    compression: Compression,
    target: &Path,
    parents: &[PathBuf],
) -> Result<Applied> {
    apply_layer_with(
        reader,
        compression,
        target,
        parents,
        &ApplyOptions::default(),
    )
}

/// [`apply_layer`] with options.
pub fn apply_layer_with(
    reader: impl Read + Send,
    compression: Compression,
    target: &Path,
    parents: &[PathBuf],
    options: &ApplyOptions,
) -> Result<Applied> {
    let mut applier = Applier::new(target, parents)?;
    let limit = options.max_uncompressed_size.unwrap_or(u64::MAX);
    let (produced, extracted) = std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel(QUEUE_DEPTH);
        let (recycle_tx, recycle_rx) = mpsc::channel();
        let producer = std::thread::Builder::new()
            .name("layer-decompress".into())
            .spawn_scoped(s, move || {
                produce(reader, compression, limit, &tx, &recycle_rx)
            })
            .map_err(|e| Error::io("spawn decompression thread for", target, e))?;
        let chunks = ChunkReader {
            rx,
            recycle: recycle_tx,
            cur: None,
            pos: 0,
        };
        // Consumes (and on return drops) the receiving end, which stops the
        // producer early if extraction failed.
        let extracted = extract(&mut applier, chunks);
        let produced = producer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        Ok::<_, Error>((produced, extracted))
    })?;

    let entries = match extracted {
        Ok(entries) => entries,
        Err(ExtractError::Fs(e)) => return Err(e),
        Err(ExtractError::Stream {
            error,
            entry,
            offset,
        }) => {
            return Err(classify_stream_error(
                error, entry, offset, produced, target,
            ))
        }
    };
    if let Some(failure) = produced.failure {
        // Extraction saw a clean end, yet the producer failed: only possible
        // if the failure came after the last byte was handed over.
        return Err(failure.into_error(target, produced.count));
    }
    let diff_id = format!("sha256:{}", hex::encode(produced.digest));
    let uncompressed_size = produced.count;
    if options.sync_fs {
        rfs::syncfs(&*applier.root).map_err(|e| Error::io("syncfs", target, e))?;
    }
    tracing::debug!(target = %target.display(), %diff_id, uncompressed_size, entries, "applied layer");
    Ok(Applied {
        diff_id,
        uncompressed_size,
        entries,
    })
}

/// Chunks in flight between the decompression thread and the applier.
const QUEUE_DEPTH: usize = 4;
/// Size of one chunk (a multiple of the tar block size).
const CHUNK_SIZE: usize = 256 * 1024;

struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

/// What the decompression thread reports when it is done.
struct Produced {
    digest: [u8; 32],
    count: u64,
    failure: Option<ProducerFailure>,
}

enum ProducerFailure {
    /// The caller's reader failed.
    Source(io::Error),
    /// The decompressor rejected the data.
    Decompress(io::Error),
    /// The uncompressed stream exceeded the limit.
    Limit(u64),
    /// The decompressor could not be set up.
    Init(io::Error),
}

impl ProducerFailure {
    fn into_error(self, target: &Path, offset: u64) -> Error {
        match self {
            ProducerFailure::Source(source) => Error::Read { source },
            ProducerFailure::Decompress(e) => Error::InvalidLayer {
                reason: match e.kind() {
                    io::ErrorKind::UnexpectedEof => "compressed stream is truncated".to_string(),
                    _ => format!("decompression failed: {e}"),
                },
                entry: None,
                offset: Some(offset),
            },
            ProducerFailure::Limit(limit) => Error::invalid(format!(
                "uncompressed layer exceeds the limit of {limit} bytes"
            )),
            ProducerFailure::Init(e) => Error::io("initialize decompressor for", target, e),
        }
    }
}

/// The decompression thread: reads the source, decompresses, hashes and
/// counts, and hands full chunks to the applier. Runs to EOF unless the
/// applier goes away.
fn produce<R: Read>(
    reader: R,
    compression: Compression,
    limit: u64,
    tx: &mpsc::SyncSender<io::Result<Chunk>>,
    recycle: &mpsc::Receiver<Vec<u8>>,
) -> Produced {
    let source_error = Rc::new(Cell::new(None));
    let source = Source {
        inner: reader,
        error: Rc::clone(&source_error),
    };
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    let fail = |failure: ProducerFailure, hasher: Sha256, count: u64| {
        // Wake the applier with an error; the real one is reported by us.
        let _ = tx.send(Err(io::Error::other("layer stream failed")));
        Produced {
            digest: hasher.finalize().into(),
            count,
            failure: Some(failure),
        }
    };
    let mut decoder: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(source),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(
            BufReader::with_capacity(64 * 1024, source),
        )),
        Compression::Zstd => match zstd::stream::read::Decoder::new(source) {
            Ok(d) => Box::new(d),
            Err(e) => return fail(ProducerFailure::Init(e), hasher, count),
        },
    };
    loop {
        let mut buf = recycle.try_recv().unwrap_or_else(|_| vec![0; CHUNK_SIZE]);
        let mut len = 0;
        let eof = loop {
            if len == buf.len() {
                break false;
            }
            match decoder.read(&mut buf[len..]) {
                Ok(0) => break true,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    hasher.update(&buf[..len]);
                    count += len as u64;
                    let failure = match source_error.take() {
                        Some(se) => ProducerFailure::Source(se),
                        None => ProducerFailure::Decompress(e),
                    };
                    return fail(failure, hasher, count);
                }
            }
        };
        hasher.update(&buf[..len]);
        count += len as u64;
        if count > limit {
            return fail(ProducerFailure::Limit(limit), hasher, count);
        }
        if len > 0 && tx.send(Ok(Chunk { buf, len })).is_err() {
            // The applier stopped (it failed); its error is the one to report.
            break;
        }
        if eof {
            break;
        }
    }
    Produced {
        digest: hasher.finalize().into(),
        count,
        failure: None,
    }
}

/// The applier's end of the pipe.
struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Chunk>>,
    recycle: mpsc::Sender<Vec<u8>>,
    cur: Option<Chunk>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(c) = &self.cur {
                if self.pos < c.len {
                    let n = out.len().min(c.len - self.pos);
                    out[..n].copy_from_slice(&c.buf[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
                if let Some(c) = self.cur.take() {
                    let _ = self.recycle.send(c.buf);
                }
            }
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.cur = Some(c);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The producer finished (or panicked; the join reports it).
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
    }
}

enum ExtractError {
    /// Reading the archive failed; classified once the producer reports.
    Stream {
        error: TarError,
        entry: Option<String>,
        offset: u64,
    },
    /// A filesystem operation failed, or an entry is invalid.
    Fs(Error),
}

/// Applies every entry, then drains the stream. Returns the entry count.
fn extract(
    applier: &mut Applier<'_>,
    chunks: ChunkReader,
) -> std::result::Result<u64, ExtractError> {
    let mut tar = TarReader::new(chunks, BUFFER_SIZE);
    let stream_error =
        |error, stream: &Stream<ChunkReader>, entry: Option<&Entry>| ExtractError::Stream {
            error,
            entry: entry.map(|e| String::from_utf8_lossy(&e.path).into_owned()),
            offset: stream.offset(),
        };
    let mut entries = 0u64;
    let mut path = Vec::new();
    let mut link = Vec::new();
    loop {
        match tar.next_entry() {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(stream_error(e, &tar.stream, None)),
        }
        entries += 1;
        let entry = &tar.entry;
        match applier.apply_entry(entry, &mut tar.stream, &mut path, &mut link) {
            Ok(()) => {}
            Err(Failure::Stream(e)) => return Err(stream_error(e, &tar.stream, Some(entry))),
            Err(Failure::Fs(e)) => return Err(ExtractError::Fs(with_location(e, entry))),
        }
    }
    applier.finish().map_err(ExtractError::Fs)?;
    // Trailing bytes after the end-of-archive marker count for the digest.
    tar.stream
        .drain()
        .map_err(|e| stream_error(TarError::Io(e), &tar.stream, None))?;
    Ok(entries)
}

/// Wraps the caller's reader so its failures can be told apart from
/// decompression errors (which are the layer's fault).
struct Source<R> {
    inner: R,
    error: Rc<Cell<Option<io::Error>>>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                let kind = e.kind();
                self.error.set(Some(e));
                Err(io::Error::new(kind, "layer source read failed"))
            }
            r => r,
        }
    }
}

fn classify_stream_error(
    error: TarError,
    entry: Option<String>,
    offset: u64,
    produced: Produced,
    target: &Path,
) -> Error {
    match error {
        TarError::Format { offset, reason } => Error::InvalidLayer {
            reason,
            entry,
            offset: Some(offset),
        },
        // The pipe only fails when the producer did; it knows why.
        TarError::Io(e) => match produced.failure {
            Some(ProducerFailure::Decompress(de)) => Error::InvalidLayer {
                reason: match de.kind() {
                    io::ErrorKind::UnexpectedEof => "compressed stream is truncated".to_string(),
                    _ => format!("decompression failed: {de}"),
                },
                entry,
                offset: Some(offset),
            },
            Some(f) => f.into_error(target, offset),
            None => Error::Read { source: e },
        },
    }
}

fn with_location(e: Error, entry: &Entry) -> Error {
    match e {
        Error::InvalidLayer {
            reason,
            entry: None,
            offset: None,
        } => Error::InvalidLayer {
            reason,
            entry: Some(String::from_utf8_lossy(&entry.path).into_owned()),
            offset: Some(entry.header_offset),
        },
        e => e,
    }
}

enum Failure {
    /// Reading the archive failed.
    Stream(TarError),
    /// Acting on the filesystem failed, or the entry is invalid.
    Fs(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Fs(e)
    }
}

impl From<TarError> for Failure {
    fn from(e: TarError) -> Self {
        Failure::Stream(e)
    }
}

/// Cleans an archive path lexically into `out` (no leading slash, no empty,
/// `.` or `..` components). Errors if `..` climbs above the root.
pub(crate) fn clean_path(raw: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), &'static str> {
    out.clear();
    if raw.contains(&0) {
        return Err("NUL byte in path");
    }
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.is_empty() {
                    return Err("path climbs above the layer root");
                }
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(())
}

/// Splits a cleaned, non-empty path into (parent, base).
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn timespec(t: Time) -> Timespec {
    Timespec {
        tv_sec: t.sec,
        tv_nsec: i64::from(t.nsec),
    }
}

fn timestamps(atime: Option<Time>, mtime: Time) -> Timestamps {
    Timestamps {
        last_access: timespec(atime.unwrap_or(mtime)),
        last_modification: timespec(mtime),
    }
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// `openat2(dirfd, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, retrying
/// the `EAGAIN` the kernel returns when a concurrent rename races the lookup.
fn open_in_root(root: BorrowedFd<'_>, path: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rfs::openat2(
            root,
            os(path),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        ) {
            Err(Errno::AGAIN | Errno::INTR) if tries < 32 => tries += 1,
            r => return r,
        }
    }
}

fn is_whiteout(st: &rfs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Which xattrs from layers (and from lower dirs, for implied parents) are
/// applied. `trusted.overlay.*` would let a layer speak overlayfs internals
/// (redirects, metacopy, origin) and is never taken from content.
fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || (name.starts_with(b"trusted.") && !name.starts_with(b"trusted.overlay."))
        || name == b"security.capability"
}

/// Where to set an xattr.
enum XattrTarget<'a> {
    /// An open regular file or directory.
    Fd(BorrowedFd<'a>),
    /// A symlink or special file, addressed as `/proc/self/fd/<dir>/<name>`
    /// with `lsetxattr` (opening a device node could have side effects).
    At(BorrowedFd<'a>, &'a [u8]),
}

struct Applier<'t> {
    target: &'t Path,
    root: Rc<OwnedFd>,
    lowers: Vec<OwnedFd>,
    /// The last parent directory resolved: (cleaned path, O_PATH fd).
    /// Invalidated whenever anything is removed from the tree, the only
    /// operation that can change what a path resolves to.
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Directory times to set once all entries are written.
    dir_times: HashMap<Vec<u8>, Timestamps>,
    warned_unsupported_xattr: bool,
}

impl<'t> Applier<'t> {
    fn new(target: &'t Path, parents: &[PathBuf]) -> Result<Self> {
        let root = rfs::open(
            target,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open apply target", target, e))?;
        let mut dir = rfs::Dir::read_from(&root).map_err(|e| Error::io("read", target, e))?;
        for ent in &mut dir {
            let ent = ent.map_err(|e| Error::io("read", target, e))?;
            let name = ent.file_name().to_bytes();
            if name != b"." && name != b".." {
                return Err(Error::TargetNotEmpty {
                    path: target.to_path_buf(),
                });
            }
        }
        let lowers = parents
            .iter()
            .map(|p| {
                rfs::openat(
                    CWD,
                    p,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::io("open parent snapshot", p, e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Applier {
            target,
            root: Rc::new(root),
            lowers,
            cache: None,
            dir_times: HashMap::new(),
            warned_unsupported_xattr: false,
        })
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        self.target.join(os(rel))
    }

    fn io(&self, op: &'static str, rel: &[u8], e: impl Into<io::Error>) -> Error {
        Error::io(op, self.path(rel), e)
    }

    fn apply_entry(
        &mut self,
        e: &Entry,
        stream: &mut Stream<ChunkReader>,
        path: &mut Vec<u8>,
        link: &mut Vec<u8>,
    ) -> std::result::Result<(), Failure> {
        clean_path(&e.path, path).map_err(Error::invalid)?;
        if path.is_empty() {
            tracing::debug!(name = %String::from_utf8_lossy(&e.path), "skipping layer root entry");
            return Ok(());
        }
        let (parent, base) = split(path);

        if let Some(name) = base.strip_prefix(WHITEOUT_PREFIX) {
            if base == OPAQUE_MARKER {
                self.opaque(parent)?;
            } else if name.starts_with(WHITEOUT_PREFIX) {
                tracing::debug!(name = %String::from_utf8_lossy(&e.path), "ignoring whiteout meta file");
            } else {
                self.whiteout(parent, name, path)?;
            }
            return Ok(());
        }

        match e.kind() {
            Kind::Regular => self.regular(e, stream, path, parent, base),
            Kind::Dir => Ok(self.directory(e, path, parent, base)?),
            Kind::Symlink => Ok(self.symlink(e, path, parent, base)?),
            Kind::HardLink => Ok(self.hardlink(e, path, parent, base, link)?),
            Kind::Char | Kind::Block | Kind::Fifo => Ok(self.special(e, path, parent, base)?),
        }
    }

    /// Opens (creating implied directories) the parent directory `rel`.
    fn parent_dir(&mut self, rel: &[u8]) -> Result<Rc<OwnedFd>> {
        if rel.is_empty() {
            return Ok(Rc::clone(&self.root));
        }
        if let Some((p, fd)) = &self.cache {
            if p == rel {
                return Ok(Rc::clone(fd));
            }
        }
        let fd = match open_in_root(self.root.as_fd(), rel, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => Rc::new(fd),
            Err(Errno::NOENT) => self.create_parents(rel)?,
            Err(e) => return Err(self.resolve_error(rel, e)),
        };
        match &mut self.cache {
            Some((p, f)) => {
                p.clear();
                p.extend_from_slice(rel);
                *f = Rc::clone(&fd);
            }
            None => self.cache = Some((rel.to_vec(), Rc::clone(&fd))),
        }
        Ok(fd)
    }

    fn resolve_error(&self, rel: &[u8], e: Errno) -> Error {
        let rel_s = String::from_utf8_lossy(rel);
        match e {
            Errno::NOTDIR => Error::invalid(format!("parent {rel_s:?} is not a directory")),
            Errno::LOOP => Error::invalid(format!(
                "too many levels of symbolic links resolving {rel_s:?}"
            )),
            Errno::NAMETOOLONG => Error::invalid(format!("path {rel_s:?} is too long")),
            e => self.io("resolve", rel, e),
        }
    }

    /// Creates the missing directories of `rel`, with metadata copied from
    /// the lower snapshots.
    fn create_parents(&mut self, rel: &[u8]) -> Result<Rc<OwnedFd>> {
        let mut cur = Rc::clone(&self.root);
        let mut creating = false;
        let mut end = 0;
        for comp in rel.split(|&b| b == b'/') {
            end += comp.len();
            let prefix = &rel[..end];
            end += 1; // the slash
            if !creating {
                match open_in_root(self.root.as_fd(), prefix, OFlags::PATH | OFlags::DIRECTORY) {
                    Ok(fd) => {
                        cur = Rc::new(fd);
                        continue;
                    }
                    Err(Errno::NOENT) => creating = true,
                    Err(e) => return Err(self.resolve_error(prefix, e)),
                }
            }
            match rfs::mkdirat(&*cur, os(comp), Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    return Err(Error::invalid(format!(
                        "{:?} is a symbolic link to a directory that does not exist in this layer",
                        String::from_utf8_lossy(prefix)
                    )))
                }
                Err(Errno::NAMETOOLONG) => {
                    return Err(Error::invalid(format!(
                        "path component {:?} is too long",
                        String::from_utf8_lossy(comp)
                    )))
                }
                Err(e) => return Err(self.io("mkdir", prefix, e)),
            }
            self.init_implied_dir(cur.as_fd(), comp, prefix)?;
            let fd = rfs::openat(
                &*cur,
                os(comp),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.io("open", prefix, e))?;
            cur = Rc::new(fd);
        }
        Ok(cur)
    }

    /// Gives a just-created implied directory the owner, mode, times and
    /// xattrs of the same directory in the topmost lower that has it
    /// (containerd's behaviour), else root:root 0755.
    fn init_implied_dir(&mut self, parent: BorrowedFd<'_>, name: &[u8], rel: &[u8]) -> Result<()> {
        let mut found: Option<(rfs::Stat, OwnedFd)> = None;
        for (i, lower) in self.lowers.iter().enumerate() {
            match open_in_root(lower.as_fd(), rel, OFlags::PATH | OFlags::NOFOLLOW) {
                Ok(fd) => {
                    if let Ok(st) = rfs::fstat(&fd) {
                        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                            found = Some((st, fd));
                        }
                    }
                    // A non-directory here (incl. a whiteout) hides the
                    // lowers below: use defaults.
                    break;
                }
                Err(Errno::NOENT) => {
                    if i + 1 < self.lowers.len() && lower_hides(lower.as_fd(), rel) {
                        break;
                    }
                }
                // ENOTDIR: an ancestor was replaced by a non-directory here.
                Err(_) => break,
            }
        }
        let (mode, uid, gid) = match &found {
            Some((st, _)) => (st.st_mode & 0o7777, st.st_uid, st.st_gid),
            None => (0o755, 0, 0),
        };
        rfs::chownat(
            parent,
            os(name),
            Some(rfs::Uid::from_raw(uid)),
            Some(rfs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.io("chown", rel, e))?;
        rfs::chmodat(
            parent,
            os(name),
            Mode::from_raw_mode(mode),
            AtFlags::empty(),
        )
        .map_err(|e| self.io("chmod", rel, e))?;
        if let Some((st, lower_fd)) = found {
            self.copy_up_xattrs(&lower_fd, parent, name, rel)?;
            self.dir_times.insert(rel.to_vec(), stat_times(&st));
        }
        Ok(())
    }

    fn copy_up_xattrs(
        &mut self,
        lower: &OwnedFd,
        parent: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
    ) -> Result<()> {
        let Ok(src) = rfs::openat(
            lower,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return Ok(());
        };
        let names = match fsutil::list_xattrs(&src) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(path = %self.path(rel).display(), error = %e, "cannot list lower xattrs");
                return Ok(());
            }
        };
        if !names
            .split(|&b| b == 0)
            .any(|n| !n.is_empty() && xattr_allowed(n))
        {
            return Ok(());
        }
        let dst = rfs::openat(
            parent,
            os(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io("open", rel, e))?;
        for xname in names
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty() && xattr_allowed(n))
        {
            if let Ok(value) = fsutil::get_xattr(&src, xname) {
                self.set_xattr(XattrTarget::Fd(dst.as_fd()), xname, &value, rel)?;
            }
        }
        Ok(())
    }

    /// Removes whatever is at `parent/name` (recursively for directories).
    fn replace(&mut self, parent: BorrowedFd<'_>, name: &[u8], rel: &[u8]) -> Result<()> {
        self.cache = None;
        fsutil::remove_tree(parent, os(name)).map_err(|e| self.io("remove", rel, e))
    }

    fn regular(
        &mut self,
        e: &Entry,
        stream: &mut Stream<ChunkReader>,
        rel: &[u8],
        parent: &[u8],
        base: &[u8],
    ) -> std::result::Result<(), Failure> {
        let pfd = self.parent_dir(parent)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(0o600);
        let fd = match rfs::openat(&*pfd, os(base), flags, mode) {
            Err(Errno::EXIST) => {
                self.replace(pfd.as_fd(), base, rel)?;
                rfs::openat(&*pfd, os(base), flags, mode)
            }
            r => r,
        }
        .map_err(|err| self.create_error(rel, base, err))?;
        let mut file = File::from(fd);

        match &e.sparse {
            None => loop {
                let chunk = stream.data_chunk(u64::MAX)?;
                if chunk.is_empty() {
                    break;
                }
                file.write_all(chunk)
                    .map_err(|err| self.io("write", rel, err))?;
            },
            Some(frags) => {
                for f in frags {
                    let mut off = f.offset;
                    let end = f.offset + f.len;
                    while off < end {
                        let chunk = stream.data_chunk(end - off)?;
                        file.write_all_at(chunk, off)
                            .map_err(|err| self.io("write", rel, err))?;
                        off += chunk.len() as u64;
                    }
                }
                file.set_len(e.size)
                    .map_err(|err| self.io("truncate", rel, err))?;
            }
        }
        debug_assert_eq!(stream.remaining(), 0);

        // chown clears setuid/setgid and security.capability, so: chown,
        // then chmod, then xattrs.
        let (uid, gid) = owner(e)?;
        rfs::fchown(&file, Some(uid), Some(gid)).map_err(|err| self.io("chown", rel, err))?;
        rfs::fchmod(&file, Mode::from_raw_mode(e.mode))
            .map_err(|err| self.io("chmod", rel, err))?;
        for (name, value) in &e.xattrs {
            self.set_xattr(XattrTarget::Fd(file.as_fd()), name, value, rel)?;
        }
        rfs::futimens(&file, &timestamps(e.atime, e.mtime))
            .map_err(|err| self.io("set times on", rel, err))?;
        Ok(())
    }

    fn create_error(&self, rel: &[u8], base: &[u8], e: Errno) -> Error {
        match e {
            Errno::NAMETOOLONG => Error::invalid(format!(
                "file name {:?} is too long",
                String::from_utf8_lossy(base)
            )),
            e => self.io("create", rel, e),
        }
    }

    fn directory(&mut self, e: &Entry, rel: &[u8], parent: &[u8], base: &[u8]) -> Result<()> {
        let pfd = self.parent_dir(parent)?;
        let mut opaque = false;
        match rfs::mkdirat(&*pfd, os(base), Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = rfs::statat(&*pfd, os(base), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|err| self.io("stat", rel, err))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    // A directory replacing this layer's whiteout must hide
                    // the lower directory, i.e. be opaque.
                    opaque = is_whiteout(&st);
                    self.replace(pfd.as_fd(), base, rel)?;
                    rfs::mkdirat(&*pfd, os(base), Mode::from_raw_mode(0o700))
                        .map_err(|err| self.create_error(rel, base, err))?;
                }
            }
            Err(err) => return Err(self.create_error(rel, base, err)),
        }
        let (uid, gid) = owner(e)?;
        rfs::chownat(
            &*pfd,
            os(base),
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| self.io("chown", rel, err))?;
        rfs::chmodat(
            &*pfd,
            os(base),
            Mode::from_raw_mode(e.mode),
            AtFlags::empty(),
        )
        .map_err(|err| self.io("chmod", rel, err))?;
        if opaque || !e.xattrs.is_empty() {
            let dfd = rfs::openat(
                &*pfd,
                os(base),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|err| self.io("open", rel, err))?;
            for (name, value) in &e.xattrs {
                self.set_xattr(XattrTarget::Fd(dfd.as_fd()), name, value, rel)?;
            }
            if opaque {
                rfs::fsetxattr(&dfd, OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(|err| self.io("set opaque xattr on", rel, err))?;
            }
        }
        self.dir_times
            .insert(rel.to_vec(), timestamps(e.atime, e.mtime));
        Ok(())
    }

    fn symlink(&mut self, e: &Entry, rel: &[u8], parent: &[u8], base: &[u8]) -> Result<()> {
        if e.link.is_empty() {
            return Err(Error::invalid("symbolic link with an empty target"));
        }
        let pfd = self.parent_dir(parent)?;
        // The target is stored verbatim: it is resolved later, inside the
        // container's root.
        match rfs::symlinkat(os(&e.link), &*pfd, os(base)) {
            Err(Errno::EXIST) => {
                self.replace(pfd.as_fd(), base, rel)?;
                rfs::symlinkat(os(&e.link), &*pfd, os(base))
            }
            r => r,
        }
        .map_err(|err| match err {
            Errno::NAMETOOLONG if e.link.len() >= 4096 => {
                Error::invalid("symbolic link target is too long")
            }
            err => self.create_error(rel, base, err),
        })?;
        self.finish_at(e, pfd.as_fd(), rel, base, false)
    }

    fn special(&mut self, e: &Entry, rel: &[u8], parent: &[u8], base: &[u8]) -> Result<()> {
        let pfd = self.parent_dir(parent)?;
        let (ft, dev) = match e.kind() {
            Kind::Char => (
                FileType::CharacterDevice,
                rfs::makedev(e.dev_major, e.dev_minor),
            ),
            Kind::Block => (
                FileType::BlockDevice,
                rfs::makedev(e.dev_major, e.dev_minor),
            ),
            _ => (FileType::Fifo, 0),
        };
        let mode = Mode::from_raw_mode(0o600);
        match rfs::mknodat(&*pfd, os(base), ft, mode, dev) {
            Err(Errno::EXIST) => {
                self.replace(pfd.as_fd(), base, rel)?;
                rfs::mknodat(&*pfd, os(base), ft, mode, dev)
            }
            r => r,
        }
        .map_err(|err| match err {
            Errno::NAMETOOLONG => self.create_error(rel, base, err),
            err => self.io("mknod", rel, err),
        })?;
        self.finish_at(e, pfd.as_fd(), rel, base, true)
    }

    /// Ownership, mode, xattrs and times for an entry that cannot be opened
    /// (symlink, device, FIFO).
    fn finish_at(
        &mut self,
        e: &Entry,
        pfd: BorrowedFd<'_>,
        rel: &[u8],
        base: &[u8],
        chmod: bool,
    ) -> Result<()> {
        let (uid, gid) = owner(e)?;
        rfs::chownat(
            pfd,
            os(base),
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| self.io("chown", rel, err))?;
        if chmod {
            // Just created by mknodat, so not a symlink: following is safe.
            rfs::chmodat(pfd, os(base), Mode::from_raw_mode(e.mode), AtFlags::empty())
                .map_err(|err| self.io("chmod", rel, err))?;
        }
        for (name, value) in &e.xattrs {
            self.set_xattr(XattrTarget::At(pfd, base), name, value, rel)?;
        }
        rfs::utimensat(
            pfd,
            os(base),
            &timestamps(e.atime, e.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| self.io("set times on", rel, err))
    }

    fn hardlink(
        &mut self,
        e: &Entry,
        rel: &[u8],
        parent: &[u8],
        base: &[u8],
        link: &mut Vec<u8>,
    ) -> Result<()> {
        let target_name = || String::from_utf8_lossy(&e.link).into_owned();
        clean_path(&e.link, link)
            .map_err(|r| Error::invalid(format!("hard link target {:?}: {r}", target_name())))?;
        if link.is_empty() {
            return Err(Error::invalid("hard link to the layer root"));
        }
        let (tparent, tbase) = split(link);
        // The target must already exist in this layer: the target directory
        // started empty, and the lookup cannot leave it.
        let not_found = || {
            Error::invalid(format!(
                "hard link target {:?} is not an earlier entry of this layer",
                target_name()
            ))
        };
        let tpfd = if tparent.is_empty() {
            Rc::clone(&self.root)
        } else {
            match open_in_root(self.root.as_fd(), tparent, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => Rc::new(fd),
                Err(Errno::NOENT | Errno::NOTDIR) => return Err(not_found()),
                Err(err) => return Err(self.resolve_error(tparent, err)),
            }
        };
        let tst = match rfs::statat(&*tpfd, os(tbase), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Err(not_found()),
            Err(err) => return Err(self.io("stat", link, err)),
        };
        if FileType::from_raw_mode(tst.st_mode) == FileType::Directory {
            return Err(Error::invalid(format!(
                "hard link target {:?} is a directory",
                target_name()
            )));
        }
        let pfd = self.parent_dir(parent)?;
        match rfs::linkat(&*tpfd, os(tbase), &*pfd, os(base), AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                let st = rfs::statat(&*pfd, os(base), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|err| self.io("stat", rel, err))?;
                if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino {
                    return Ok(()); // already that file
                }
                self.replace(pfd.as_fd(), base, rel)?;
                rfs::linkat(&*tpfd, os(tbase), &*pfd, os(base), AtFlags::empty())
                    .map_err(|err| self.io("link", rel, err))
            }
            Err(Errno::MLINK) => Err(self.io("link", rel, Errno::MLINK)),
            Err(err) => Err(self.create_error(rel, base, err)),
        }
        // Hard link headers carry no metadata of their own (GNU tar
        // semantics): the inode keeps the target entry's.
    }

    /// `.wh.<name>` → character device 0:0 `<name>`.
    fn whiteout(&mut self, parent: &[u8], name: &[u8], rel: &[u8]) -> Result<()> {
        if name.is_empty() || name == b"." || name == b".." {
            return Err(Error::invalid(format!(
                "invalid whiteout name {:?}",
                String::from_utf8_lossy(rel)
            )));
        }
        let pfd = self.parent_dir(parent)?;
        let dev = rfs::makedev(0, 0);
        let mut target_rel = parent.to_vec();
        if !target_rel.is_empty() {
            target_rel.push(b'/');
        }
        target_rel.extend_from_slice(name);
        match rfs::mknodat(
            &*pfd,
            os(name),
            FileType::CharacterDevice,
            Mode::empty(),
            dev,
        ) {
            Err(Errno::EXIST) => {
                self.replace(pfd.as_fd(), name, &target_rel)?;
                rfs::mknodat(
                    &*pfd,
                    os(name),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    dev,
                )
            }
            r => r,
        }
        .map_err(|err| self.io("create whiteout", &target_rel, err))
    }

    /// `.wh..wh..opq` in `dir` → `trusted.overlay.opaque=y` on `dir`.
    fn opaque(&mut self, dir: &[u8]) -> Result<()> {
        let fd = self.parent_dir(dir)?;
        let dfd = rfs::openat(
            &*fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io("open", dir, e))?;
        rfs::fsetxattr(&dfd, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(|e| self.io("set opaque xattr on", dir, e))
    }

    fn set_xattr(
        &mut self,
        target: XattrTarget<'_>,
        name: &[u8],
        value: &[u8],
        rel: &[u8],
    ) -> Result<()> {
        if !xattr_allowed(name) {
            if name.starts_with(b"trusted.overlay.") {
                tracing::warn!(path = %self.path(rel).display(), name = %String::from_utf8_lossy(name),
                    "layer sets an overlayfs-internal xattr; ignored");
            } else {
                tracing::debug!(path = %self.path(rel).display(), name = %String::from_utf8_lossy(name),
                    "ignoring xattr outside the allowed namespaces");
            }
            return Ok(());
        }
        let r = match target {
            XattrTarget::Fd(fd) => rfs::fsetxattr(fd, os(name), value, XattrFlags::empty()),
            XattrTarget::At(dir, base) => {
                let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                p.extend_from_slice(base);
                rfs::lsetxattr(os(&p), os(name), value, XattrFlags::empty())
            }
        };
        match r {
            Ok(()) => Ok(()),
            Err(Errno::NOTSUP) => {
                if !self.warned_unsupported_xattr {
                    self.warned_unsupported_xattr = true;
                    tracing::warn!(path = %self.path(rel).display(), name = %String::from_utf8_lossy(name),
                        "filesystem does not support this xattr; skipping (further such warnings suppressed)");
                }
                Ok(())
            }
            // user.* is not allowed on symlinks and special files.
            Err(Errno::PERM)
                if name.starts_with(b"user.") && matches!(target, XattrTarget::At(..)) =>
            {
                tracing::debug!(path = %self.path(rel).display(), "user xattr on a special file; skipped");
                Ok(())
            }
            Err(Errno::TOOBIG | Errno::RANGE) => Err(Error::invalid(format!(
                "xattr {:?} is too large",
                String::from_utf8_lossy(name)
            ))),
            Err(e) => Err(self.io("set xattr on", rel, e)),
        }
    }

    /// Applies deferred directory times (creating children changed them).
    fn finish(&mut self) -> Result<()> {
        self.cache = None;
        for (rel, times) in std::mem::take(&mut self.dir_times) {
            let fd = match open_in_root(
                self.root.as_fd(),
                &rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            ) {
                Ok(fd) => fd,
                // Replaced by a non-directory or removed by a later entry.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(self.io("open", &rel, e)),
            };
            rfs::futimens(&fd, &times).map_err(|e| self.io("set times on", &rel, e))?;
        }
        Ok(())
    }
}

/// Whether an ancestor of `rel` in `lower` is an opaque directory (so lower
/// layers below it do not show through).
fn lower_hides(lower: BorrowedFd<'_>, rel: &[u8]) -> bool {
    let mut end = 0;
    for comp in rel.split(|&b| b == b'/') {
        end += comp.len();
        if end >= rel.len() {
            return false;
        }
        let Ok(fd) = open_in_root(lower, &rel[..end], OFlags::RDONLY | OFlags::DIRECTORY) else {
            return false;
        };
        if matches!(
            fsutil::get_xattr(&fd, OPAQUE_XATTR.as_bytes()).as_deref(),
            Ok(b"y")
        ) {
            return true;
        }
        end += 1;
    }
    false
}

#[allow(clippy::unnecessary_cast)] // field types vary by architecture
fn stat_times(st: &rfs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as i64,
            tv_nsec: st.st_atime_nsec as i64,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as i64,
            tv_nsec: st.st_mtime_nsec as i64,
        },
    }
}

fn owner(e: &Entry) -> Result<(rfs::Uid, rfs::Gid)> {
    // u32::MAX is "no change" for chown: refuse it along with overflow.
    let id = |v: u64, what: &str| {
        u32::try_from(v)
            .ok()
            .filter(|&v| v != u32::MAX)
            .ok_or_else(|| Error::invalid(format!("{what} {v} is out of range")))
    };
    Ok((
        rfs::Uid::from_raw(id(e.uid, "uid")?),
        rfs::Gid::from_raw(id(e.gid, "gid")?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> std::result::Result<String, &'static str> {
        let mut out = Vec::new();
        clean_path(s.as_bytes(), &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean("a/b/c").unwrap(), "a/b/c");
        assert_eq!(clean("./a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(clean("/abs/path").unwrap(), "abs/path");
        assert_eq!(clean("a/../b").unwrap(), "b");
        assert_eq!(clean("a/b/../../c").unwrap(), "c");
        assert_eq!(clean("./").unwrap(), "");
        assert_eq!(clean("").unwrap(), "");
        assert!(clean("..").is_err());
        assert!(clean("../../etc/evil").is_err());
        assert!(clean("a/../../b").is_err());
        assert!(clean("/../x").is_err());
        assert!(clean("a\0b").is_err());
    }

    #[test]
    fn split_paths() {
        assert_eq!(split(b"a"), (&b""[..], &b"a"[..]));
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
    }

    #[test]
    fn xattr_allowlist() {
        assert!(xattr_allowed(b"user.foo"));
        assert!(xattr_allowed(b"trusted.foo"));
        assert!(xattr_allowed(b"security.capability"));
        assert!(!xattr_allowed(b"trusted.overlay.redirect"));
        assert!(!xattr_allowed(b"trusted.overlay.opaque"));
        assert!(!xattr_allowed(b"security.selinux"));
        assert!(!xattr_allowed(b"system.posix_acl_access"));
    }

    #[test]
    fn ids_out_of_range_are_invalid() {
        let e = Entry {
            uid: u64::from(u32::MAX),
            ..Entry::default()
        };
        assert!(owner(&e).is_err());
        let e = Entry {
            gid: 1 << 33,
            ..Entry::default()
        };
        assert!(owner(&e).is_err());
        let e = Entry {
            uid: 1000,
            gid: 1000,
            ..Entry::default()
        };
        assert!(owner(&e).is_ok());
    }
}
