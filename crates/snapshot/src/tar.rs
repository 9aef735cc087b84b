//! A small streaming tar reader with bounded metadata.
//!
//! Why not the `tar` crate: it buffers PAX and GNU long-name records of any
//! size in memory, so a few hundred bytes of gzip can make it allocate
//! gigabytes. This reader follows Go's `archive/tar` (what docker and
//! containerd use, so what image layers are written for) and caps every
//! metadata record at [`MAX_META_SIZE`], like Go does.
//!
//! Supported: V7, USTAR, PAX (local records; global records are skipped, as
//! containerd does), GNU (long name/link, atime, base-256 numbers, old sparse
//! format) and the GNU PAX sparse formats 0.0, 0.1 and 1.0.
//!
//! Header-only entry types (links, devices, dirs, FIFOs) carry no data, even
//! if their size field says otherwise (Go semantics).

use std::io::{self, Read};

/// Tar block size.
pub(crate) const BLOCK: usize = 512;
/// Largest PAX / GNU long-name record accepted (Go: `maxSpecialFileSize`).
pub(crate) const MAX_META_SIZE: u64 = 1 << 20;
/// Largest number of fragments in a sparse map.
const MAX_SPARSE_ENTRIES: usize = 1 << 20;

/// What went wrong while reading the archive.
#[derive(Debug)]
pub(crate) enum TarError {
    /// The underlying stream failed (the caller classifies it).
    Io(io::Error),
    /// The bytes are not a valid archive.
    Format { offset: u64, reason: String },
}

impl From<io::Error> for TarError {
    fn from(e: io::Error) -> Self {
        TarError::Io(e)
    }
}

type Result<T> = std::result::Result<T, TarError>;

/// Entry types the applier understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Regular,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

/// Seconds and nanoseconds since the epoch; `nsec` is in `0..1e9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// One data fragment of a sparse file: `len` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fragment {
    pub offset: u64,
    pub len: u64,
}

/// Metadata of the current entry. Its buffers are reused across entries.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Option<Kind>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Time,
    pub atime: Option<Time>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Logical file size (for sparse files: the real size).
    pub size: u64,
    /// `(name, value)` pairs from `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// `Some` for sparse files; the data stream holds the fragments in order.
    pub sparse: Option<Vec<Fragment>>,
    /// Offset of this entry's first header (including PAX / long-name
    /// headers) in the uncompressed stream.
    pub header_offset: u64,
}

impl Entry {
    pub(crate) fn kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::Regular)
    }
}

/// Buffered byte source that tracks the stream offset.
pub(crate) struct Stream<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Stream offset of `buf[pos]`.
    offset: u64,
    /// Data bytes left in the current entry.
    remaining: u64,
}

impl<R: Read> Stream<R> {
    fn new(inner: R, capacity: usize) -> Self {
        Stream {
            inner,
            buf: vec![0; capacity.max(BLOCK)].into_boxed_slice(),
            pos: 0,
            end: 0,
            offset: 0,
            remaining: 0,
        }
    }

    /// Offset in the stream of the next unread byte.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Data bytes of the current entry not yet read.
    pub(crate) fn remaining(&self) -> u64 {
        self.remaining
    }

    fn read_inner(&mut self, at: usize) -> io::Result<usize> {
        loop {
            match self.inner.read(&mut self.buf[at..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    /// Makes at least `n <= buf.len()` bytes available; returns how many are
    /// (fewer only at end of stream).
    fn fill_to(&mut self, n: usize) -> io::Result<usize> {
        debug_assert!(n <= self.buf.len());
        if self.end - self.pos >= n {
            return Ok(self.end - self.pos);
        }
        if self.pos + n > self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        while self.end - self.pos < n {
            let got = self.read_inner(self.end)?;
            if got == 0 {
                break;
            }
            self.end += got;
        }
        Ok(self.end - self.pos)
    }

    /// Reads one block. `Ok(None)` at a clean end of stream.
    fn read_block(&mut self, out: &mut [u8; BLOCK]) -> Result<Option<()>> {
        match self.fill_to(BLOCK)? {
            0 => Ok(None),
            n if n < BLOCK => Err(TarError::Format {
                offset: self.offset + n as u64,
                reason: "unexpected end of stream inside a header block".into(),
            }),
            _ => {
                out.copy_from_slice(&self.buf[self.pos..self.pos + BLOCK]);
                self.pos += BLOCK;
                self.offset += BLOCK as u64;
                Ok(Some(()))
            }
        }
    }

    /// Discards `n` bytes.
    fn skip(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            if self.pos == self.end {
                self.pos = 0;
                self.end = 0;
                let got = self.read_inner(0)?;
                if got == 0 {
                    return Err(truncated(self.offset));
                }
                self.end = got;
            }
            let take =
                usize::try_from(n).map_or(self.end - self.pos, |n| n.min(self.end - self.pos));
            self.pos += take;
            self.offset += take as u64;
            n -= take as u64;
        }
        Ok(())
    }

    /// Returns the next chunk of the current entry's data, at most `max`
    /// bytes; empty once the entry's data is exhausted.
    pub(crate) fn data_chunk(&mut self, max: u64) -> Result<&[u8]> {
        let want = self.remaining.min(max);
        if want == 0 {
            return Ok(&[]);
        }
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
            let got = self.read_inner(0)?;
            if got == 0 {
                return Err(truncated(self.offset));
            }
            self.end = got;
        }
        let n = usize::try_from(want).map_or(self.end - self.pos, |w| w.min(self.end - self.pos));
        let start = self.pos;
        self.pos += n;
        self.offset += n as u64;
        self.remaining -= n as u64;
        Ok(&self.buf[start..start + n])
    }

    /// Reads exactly `len` bytes of entry data into `out` (cleared first).
    fn data_to_vec(&mut self, len: u64, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        let mut left = len;
        while left > 0 {
            let chunk = self.data_chunk(left)?;
            left -= chunk.len() as u64;
            out.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// Reads the rest of the stream, discarding it. Returns bytes drained.
    pub(crate) fn drain(&mut self) -> io::Result<u64> {
        let mut total = (self.end - self.pos) as u64;
        self.pos = 0;
        self.end = 0;
        loop {
            let got = self.read_inner(0)?;
            if got == 0 {
                self.offset += total;
                return Ok(total);
            }
            total += got as u64;
        }
    }
}

fn truncated(offset: u64) -> TarError {
    TarError::Format {
        offset,
        reason: "unexpected end of stream (truncated layer)".into(),
    }
}

/// Streaming archive reader.
pub(crate) struct TarReader<R> {
    pub(crate) stream: Stream<R>,
    pub(crate) entry: Entry,
    /// Padding after the current entry's data.
    padding: u64,
    done: bool,
    // Scratch buffers, reused.
    pax: Vec<u8>,
    long_name: Vec<u8>,
    long_link: Vec<u8>,
    sparse_pax: SparsePax,
}

#[derive(Default)]
struct SparsePax {
    major: Option<Vec<u8>>,
    minor: Option<Vec<u8>>,
    name: Option<Vec<u8>>,
    size: Option<u64>,
    map: Option<Vec<u8>>,
    /// 0.0 format: repeated offset / numbytes records.
    pairs: Vec<u64>,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R, buffer: usize) -> Self {
        TarReader {
            stream: Stream::new(inner, buffer),
            entry: Entry::default(),
            padding: 0,
            done: false,
            pax: Vec::new(),
            long_name: Vec::new(),
            long_link: Vec::new(),
            sparse_pax: SparsePax::default(),
        }
    }

    /// Advances to the next entry, skipping unread data of the current one.
    /// Returns `false` at the end-of-archive marker or a clean end of stream.
    pub(crate) fn next_entry(&mut self) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        let skip = self.stream.remaining + self.padding;
        self.stream.remaining = 0;
        self.padding = 0;
        self.stream.skip(skip)?;

        let mut have_pax = false;
        let mut have_long_name = false;
        let mut have_long_link = false;
        let mut first_header = None;
        let mut hdr = [0u8; BLOCK];
        loop {
            let off = self.stream.offset();
            if self.stream.read_block(&mut hdr)?.is_none() {
                if first_header.is_some() {
                    return Err(TarError::Format {
                        offset: off,
                        reason: "stream ends after a PAX/long-name header without its entry".into(),
                    });
                }
                self.done = true;
                return Ok(false);
            }
            if hdr.iter().all(|&b| b == 0) {
                if first_header.is_some() {
                    return Err(TarError::Format {
                        offset: off,
                        reason: "end-of-archive marker after a PAX/long-name header".into(),
                    });
                }
                self.done = true;
                return Ok(false);
            }
            let first = *first_header.get_or_insert(off);
            let fmt = |reason: String| TarError::Format {
                offset: off,
                reason,
            };
            verify_checksum(&hdr).map_err(|r| fmt(r.into()))?;
            let typeflag = hdr[156];
            let size = numeric(&hdr[124..136])
                .and_then(|s| u64::try_from(s).map_err(|_| "negative size"))
                .map_err(|r| fmt(format!("size field: {r}")))?;
            match typeflag {
                b'x' | b'L' | b'K' => {
                    if size > MAX_META_SIZE {
                        return Err(fmt(format!(
                            "{} record of {size} bytes exceeds the {MAX_META_SIZE}-byte limit",
                            meta_name(typeflag)
                        )));
                    }
                    self.stream.remaining = size;
                    let buf = match typeflag {
                        b'x' => {
                            have_pax = true;
                            &mut self.pax
                        }
                        b'L' => {
                            have_long_name = true;
                            &mut self.long_name
                        }
                        _ => {
                            have_long_link = true;
                            &mut self.long_link
                        }
                    };
                    self.stream.data_to_vec(size, buf)?;
                    self.stream.skip(padding(size))?;
                    if typeflag != b'x' {
                        truncate_at_nul(buf);
                    }
                }
                b'g' | b'V' => {
                    // PAX global headers (ignored, like containerd) and GNU
                    // volume labels.
                    self.stream.skip(
                        size.checked_add(padding(size))
                            .ok_or_else(|| fmt("size overflow".into()))?,
                    )?;
                }
                _ => {
                    self.entry.header_offset = first;
                    self.build_entry(&hdr, size, have_pax, have_long_name, have_long_link, off)?;
                    return Ok(true);
                }
            }
        }
    }

    fn build_entry(
        &mut self,
        hdr: &[u8; BLOCK],
        header_size: u64,
        have_pax: bool,
        have_long_name: bool,
        have_long_link: bool,
        off: u64,
    ) -> Result<()> {
        let fmt = |reason: String| TarError::Format {
            offset: off,
            reason,
        };
        let field =
            |name: &str, r: &[u8]| numeric(r).map_err(|e| fmt(format!("{name} field: {e}")));
        let e = &mut self.entry;
        e.xattrs.clear();
        e.sparse = None;
        e.atime = None;

        let magic = &hdr[257..263];
        let version = &hdr[263..265];
        let ustar = magic == b"ustar\0" && version == b"00";
        let gnu = magic == b"ustar " && version == b" \0";

        e.path.clear();
        if ustar {
            let prefix = cstr(&hdr[345..500]);
            if !prefix.is_empty() {
                e.path.extend_from_slice(prefix);
                e.path.push(b'/');
            }
        }
        e.path.extend_from_slice(cstr(&hdr[0..100]));
        e.link.clear();
        e.link.extend_from_slice(cstr(&hdr[157..257]));

        e.mode = (field("mode", &hdr[100..108])? & 0o7777) as u32;
        e.uid =
            u64::try_from(field("uid", &hdr[108..116])?).map_err(|_| fmt("negative uid".into()))?;
        e.gid =
            u64::try_from(field("gid", &hdr[116..124])?).map_err(|_| fmt("negative gid".into()))?;
        e.mtime = Time {
            sec: field("mtime", &hdr[136..148])?,
            nsec: 0,
        };
        if gnu {
            // Old Go writers put garbage here; accept only what parses.
            if let Ok(a) = numeric(&hdr[345..357]) {
                if a != 0 {
                    e.atime = Some(Time { sec: a, nsec: 0 });
                }
            }
        }

        let typeflag = hdr[156];
        let (kind, mut data_size) = match typeflag {
            b'0' | b'7' => (Kind::Regular, header_size),
            // V7 regular files with a trailing slash are directories.
            b'\0' if e.path.last() == Some(&b'/') => (Kind::Dir, 0),
            b'\0' => (Kind::Regular, header_size),
            b'1' => (Kind::HardLink, 0),
            b'2' => (Kind::Symlink, 0),
            b'3' => (Kind::Char, 0),
            b'4' => (Kind::Block, 0),
            b'5' => (Kind::Dir, 0),
            b'6' => (Kind::Fifo, 0),
            // GNU dumpdir: a directory whose data lists its contents.
            b'D' => (Kind::Dir, header_size),
            b'S' if gnu => (Kind::Regular, header_size),
            b'S' => return Err(fmt("GNU sparse entry without a GNU header".into())),
            b'M' => return Err(fmt("multi-volume archives are not supported".into())),
            t => {
                return Err(fmt(format!(
                    "unsupported entry type {:?}",
                    char::from(t).escape_default().to_string()
                )))
            }
        };
        e.kind = Some(kind);
        e.size = data_size;
        if matches!(kind, Kind::Char | Kind::Block) {
            let maj = field("devmajor", &hdr[329..337])?;
            let min = field("devminor", &hdr[337..345])?;
            e.dev_major =
                u32::try_from(maj).map_err(|_| fmt(format!("device major {maj} out of range")))?;
            e.dev_minor =
                u32::try_from(min).map_err(|_| fmt(format!("device minor {min} out of range")))?;
        } else {
            e.dev_major = 0;
            e.dev_minor = 0;
        }

        // Old GNU sparse map: in the header and in extension blocks.
        if typeflag == b'S' {
            let mut frags = Vec::new();
            parse_gnu_sparse_entries(&hdr[386..482], &mut frags).map_err(|r| fmt(r.into()))?;
            let mut extended = hdr[482] != 0;
            let real = u64::try_from(field("realsize", &hdr[483..495])?)
                .map_err(|_| fmt("negative sparse real size".into()))?;
            let mut ext = [0u8; BLOCK];
            while extended {
                let ext_off = self.stream.offset();
                if self.stream.read_block(&mut ext)?.is_none() {
                    return Err(truncated(ext_off));
                }
                parse_gnu_sparse_entries(&ext[..504], &mut frags).map_err(|r| {
                    TarError::Format {
                        offset: ext_off,
                        reason: r.into(),
                    }
                })?;
                if frags.len() > MAX_SPARSE_ENTRIES {
                    return Err(fmt("sparse map has too many entries".into()));
                }
                extended = ext[504] != 0;
            }
            e.size = real;
            e.sparse = Some(frags);
        }

        if have_pax {
            let pax = std::mem::take(&mut self.pax);
            let r = apply_pax(&pax, &mut self.entry, &mut self.sparse_pax, &mut data_size);
            self.pax = pax;
            r.map_err(fmt)?;
        }
        let e = &mut self.entry;
        // GNU long names win over PAX (Go semantics).
        if have_long_name {
            e.path.clear();
            e.path.extend_from_slice(&self.long_name);
        }
        if have_long_link {
            e.link.clear();
            e.link.extend_from_slice(&self.long_link);
        }

        self.stream.remaining = data_size;
        self.padding = padding(data_size);

        // PAX sparse formats.
        if have_pax {
            let sp = std::mem::take(&mut self.sparse_pax);
            let r = self.pax_sparse(&sp, off);
            self.sparse_pax = sp;
            r?;
        }

        if let Some(frags) = &self.entry.sparse {
            validate_sparse(frags, self.entry.size, self.stream.remaining).map_err(|r| {
                TarError::Format {
                    offset: off,
                    reason: r,
                }
            })?;
        }
        Ok(())
    }

    /// Interprets `GNU.sparse.*` records (formats 0.0, 0.1, 1.0).
    fn pax_sparse(&mut self, sp: &SparsePax, off: u64) -> Result<()> {
        let fmt = |reason: &str| TarError::Format {
            offset: off,
            reason: reason.into(),
        };
        let is_1x0 = match (sp.major.as_deref(), sp.minor.as_deref()) {
            (Some(b"0"), Some(b"0" | b"1")) => false,
            (Some(b"1"), Some(b"0")) => true,
            (Some(_), _) | (_, Some(_)) => {
                return Err(fmt("unknown GNU sparse PAX format version"))
            }
            (None, None) if sp.map.is_some() || !sp.pairs.is_empty() => false,
            (None, None) => return Ok(()),
        };
        if self.entry.kind() != Kind::Regular {
            return Err(fmt("GNU sparse records on a non-regular entry"));
        }
        if let Some(name) = &sp.name {
            self.entry.path.clear();
            self.entry.path.extend_from_slice(name);
        }
        if let Some(size) = sp.size {
            self.entry.size = size;
        }
        let mut frags = Vec::new();
        if is_1x0 {
            self.read_sparse_map_1x0(&mut frags, off)?;
        } else if let Some(map) = &sp.map {
            let mut nums = Vec::new();
            if !map.is_empty() {
                for tok in map.split(|&b| b == b',') {
                    nums.push(
                        parse_decimal_u64(tok).ok_or_else(|| fmt("malformed GNU.sparse.map"))?,
                    );
                    if nums.len() > 2 * MAX_SPARSE_ENTRIES {
                        return Err(fmt("sparse map has too many entries"));
                    }
                }
            }
            pairs_to_fragments(&nums, &mut frags).map_err(fmt)?;
        } else {
            pairs_to_fragments(&sp.pairs, &mut frags).map_err(fmt)?;
        }
        self.entry.sparse = Some(frags);
        Ok(())
    }

    /// Format 1.0 stores the map, in decimal lines, at the start of the data,
    /// padded to a block boundary.
    fn read_sparse_map_1x0(&mut self, frags: &mut Vec<Fragment>, off: u64) -> Result<()> {
        let mut text = Vec::new();
        let mut nums: Vec<u64> = Vec::new();
        let mut count: Option<u64> = None;
        let mut start = 0;
        loop {
            // Consume complete lines from `text`.
            while let Some(nl) = text[start..].iter().position(|&b| b == b'\n') {
                let tok = &text[start..start + nl];
                start += nl + 1;
                let n = parse_decimal_u64(tok).ok_or(TarError::Format {
                    offset: off,
                    reason: "malformed GNU sparse 1.0 map".into(),
                })?;
                match count {
                    None => {
                        if n > MAX_SPARSE_ENTRIES as u64 {
                            return Err(TarError::Format {
                                offset: off,
                                reason: "sparse map has too many entries".into(),
                            });
                        }
                        count = Some(n);
                    }
                    Some(_) => nums.push(n),
                }
                if count.is_some_and(|c| nums.len() as u64 == 2 * c) {
                    pairs_to_fragments(&nums, frags).map_err(|r| TarError::Format {
                        offset: off,
                        reason: r.into(),
                    })?;
                    return Ok(());
                }
            }
            if self.stream.remaining < BLOCK as u64 {
                return Err(TarError::Format {
                    offset: off,
                    reason: "GNU sparse 1.0 map runs past the entry data".into(),
                });
            }
            let mut block = Vec::with_capacity(BLOCK);
            self.stream.data_to_vec(BLOCK as u64, &mut block)?;
            text.drain(..start);
            start = 0;
            text.extend_from_slice(&block);
        }
    }
}

fn meta_name(typeflag: u8) -> &'static str {
    match typeflag {
        b'x' => "PAX",
        b'L' => "GNU long name",
        _ => "GNU long link",
    }
}

pub(crate) fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The bytes of a NUL-terminated header string field.
fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(i) => &field[..i],
        None => field,
    }
}

fn truncate_at_nul(v: &mut Vec<u8>) {
    if let Some(i) = v.iter().position(|&b| b == 0) {
        v.truncate(i);
    }
}

/// Accepts the unsigned and the (historic) signed header checksum.
fn verify_checksum(hdr: &[u8; BLOCK]) -> std::result::Result<(), &'static str> {
    let stored = numeric(&hdr[148..156]).map_err(|_| "malformed checksum field")?;
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in hdr.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || stored == signed {
        Ok(())
    } else {
        Err("header checksum mismatch (not a tar stream, or corrupt)")
    }
}

/// Parses an octal or base-256 numeric header field (Go's `parseNumeric`).
pub(crate) fn numeric(b: &[u8]) -> std::result::Result<i64, &'static str> {
    if let Some(&first) = b.first() {
        if first & 0x80 != 0 {
            // Base-256, two's complement; the top bit marks the encoding.
            let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
            let mut x: u64 = 0;
            for (i, &c) in b.iter().enumerate() {
                let mut c = c ^ inv;
                if i == 0 {
                    c &= 0x7f;
                }
                if x >> 56 > 0 {
                    return Err("base-256 number overflows");
                }
                x = x << 8 | u64::from(c);
            }
            if x >> 63 > 0 {
                return Err("base-256 number overflows");
            }
            let x = x as i64;
            return Ok(if inv == 0xff { !x } else { x });
        }
    }
    // Octal, padded with spaces or NULs on either side.
    let trimmed = trim(b);
    let digits = cstr(trimmed);
    let mut x: u64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return Err("not an octal number");
        }
        x = x
            .checked_mul(8)
            .and_then(|x| x.checked_add(u64::from(d - b'0')))
            .ok_or("octal number overflows")?;
    }
    i64::try_from(x).map_err(|_| "octal number overflows")
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | 0, rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | 0] = b {
        b = rest;
    }
    b
}

fn parse_decimal_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut x: u64 = 0;
    for &d in b {
        if !d.is_ascii_digit() {
            return None;
        }
        x = x.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(x)
}

fn parse_decimal_i64(b: &[u8]) -> Option<i64> {
    match b {
        [b'-', rest @ ..] => parse_decimal_u64(rest).and_then(|v| 0i64.checked_sub_unsigned(v)),
        _ => parse_decimal_u64(b).and_then(|v| i64::try_from(v).ok()),
    }
}

/// `sec[.frac]`, possibly negative (Go's `parsePAXTime`).
pub(crate) fn parse_pax_time(b: &[u8]) -> Option<Time> {
    let (secs, frac) = match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b""[..]),
    };
    let sec = parse_decimal_i64(secs)?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nsec: u32 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if secs.first() == Some(&b'-') && nsec > 0 {
        // -1.5 means 1.5 seconds before the epoch.
        Some(Time {
            sec: sec.checked_sub(1)?,
            nsec: 1_000_000_000 - nsec,
        })
    } else {
        Some(Time { sec, nsec })
    }
}

/// Applies local PAX records to `e`. `data_size` is overridden by `size`.
fn apply_pax(
    mut pax: &[u8],
    e: &mut Entry,
    sp: &mut SparsePax,
    data_size: &mut u64,
) -> std::result::Result<(), String> {
    *sp = SparsePax::default();
    let bad = |what: &str| format!("malformed PAX record: {what}");
    while !pax.is_empty() {
        // "<len> <key>=<value>\n", where <len> counts the whole record.
        let sp_idx = pax
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("no length"))?;
        let len = parse_decimal_u64(&pax[..sp_idx]).ok_or_else(|| bad("bad length"))?;
        let len = usize::try_from(len).map_err(|_| bad("bad length"))?;
        if len <= sp_idx + 1 || len > pax.len() || pax[len - 1] != b'\n' {
            return Err(bad("length does not match"));
        }
        let rec = &pax[sp_idx + 1..len - 1];
        pax = &pax[len..];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("no '='"))?;
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        if key.is_empty() || key.contains(&0) {
            return Err(bad("empty key or NUL in key"));
        }
        let num = |v: &[u8]| parse_decimal_u64(v).ok_or_else(|| bad(&String::from_utf8_lossy(key)));
        match key {
            b"path" | b"linkpath" => {
                if value.contains(&0) {
                    return Err(bad("NUL byte in path"));
                }
                // An empty value unsets the record: keep the header's field.
                if !value.is_empty() {
                    let dst = if key == b"path" {
                        &mut e.path
                    } else {
                        &mut e.link
                    };
                    dst.clear();
                    dst.extend_from_slice(value);
                }
            }
            b"uid" if !value.is_empty() => e.uid = num(value)?,
            b"gid" if !value.is_empty() => e.gid = num(value)?,
            b"size" if !value.is_empty() => {
                let s = num(value)?;
                if e.kind != Some(Kind::HardLink)
                    && !matches!(
                        e.kind,
                        Some(Kind::Symlink | Kind::Char | Kind::Block | Kind::Dir | Kind::Fifo)
                    )
                {
                    *data_size = s;
                    e.size = s;
                }
            }
            b"mtime" if !value.is_empty() => {
                e.mtime = parse_pax_time(value).ok_or_else(|| bad("mtime"))?;
            }
            b"atime" if !value.is_empty() => {
                e.atime = Some(parse_pax_time(value).ok_or_else(|| bad("atime"))?);
            }
            b"GNU.sparse.major" => sp.major = Some(value.to_vec()),
            b"GNU.sparse.minor" => sp.minor = Some(value.to_vec()),
            b"GNU.sparse.name" => sp.name = Some(value.to_vec()),
            b"GNU.sparse.size" | b"GNU.sparse.realsize" => sp.size = Some(num(value)?),
            b"GNU.sparse.map" => sp.map = Some(value.to_vec()),
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                // 0.0 format: strictly alternating offset, numbytes.
                let want_offset = sp.pairs.len() % 2 == 0;
                if want_offset != (key == b"GNU.sparse.offset") {
                    return Err(bad("GNU.sparse.offset/numbytes out of order"));
                }
                if sp.pairs.len() >= 2 * MAX_SPARSE_ENTRIES {
                    return Err("sparse map has too many entries".into());
                }
                sp.pairs.push(num(value)?);
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if !name.is_empty() {
                        e.xattrs.push((name.to_vec(), value.to_vec()));
                    }
                }
                // Others (uname, gname, comment, ctime, charset, ...) are
                // irrelevant to extraction.
            }
        }
    }
    Ok(())
}

fn parse_gnu_sparse_entries(
    b: &[u8],
    out: &mut Vec<Fragment>,
) -> std::result::Result<(), &'static str> {
    for ent in b.chunks_exact(24) {
        if ent[0] == 0 {
            // GNU stops at the first empty slot.
            break;
        }
        let offset = u64::try_from(numeric(&ent[..12])?).map_err(|_| "negative sparse offset")?;
        let len = u64::try_from(numeric(&ent[12..])?).map_err(|_| "negative sparse length")?;
        out.push(Fragment { offset, len });
    }
    Ok(())
}

fn pairs_to_fragments(
    nums: &[u64],
    out: &mut Vec<Fragment>,
) -> std::result::Result<(), &'static str> {
    if nums.len() % 2 != 0 {
        return Err("sparse map has an odd number of values");
    }
    out.extend(nums.chunks_exact(2).map(|p| Fragment {
        offset: p[0],
        len: p[1],
    }));
    Ok(())
}

/// Fragments must be in order, not overlap, fit in the file, and account for
/// exactly the entry's data bytes.
fn validate_sparse(frags: &[Fragment], size: u64, data: u64) -> std::result::Result<(), String> {
    let mut next = 0u64;
    let mut total = 0u64;
    for f in frags {
        let end = f
            .offset
            .checked_add(f.len)
            .ok_or("sparse fragment overflows")?;
        if f.offset < next || end > size {
            return Err(format!(
                "sparse fragment {}+{} overlaps or exceeds the file size {size}",
                f.offset, f.len
            ));
        }
        next = end;
        total += f.len;
    }
    if total != data {
        return Err(format!(
            "sparse map describes {total} data bytes but the entry holds {data}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(bytes: &[u8]) -> Vec<(Vec<u8>, Kind, u64, Vec<u8>)> {
        let mut r = TarReader::new(bytes, 4096);
        let mut out = Vec::new();
        while r.next_entry().unwrap() {
            let mut data = Vec::new();
            let rem = r.stream.remaining();
            r.stream.data_to_vec(rem, &mut data).unwrap();
            out.push((r.entry.path.clone(), r.entry.kind(), r.entry.size, data));
        }
        out
    }

    fn header(name: &[u8], typeflag: u8, size: u64) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        let s = format!("{size:011o}");
        h[124..135].copy_from_slice(s.as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        set_checksum(&mut h);
        h
    }

    fn set_checksum(h: &mut [u8; BLOCK]) {
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    }

    /// PAX records with correct length prefixes.
    fn pax(recs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in recs {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while format!("{len}").len() + body.len() != len {
                len += 1;
            }
            out.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        out
    }

    fn pad(v: &mut Vec<u8>) {
        let n = padding(v.len() as u64) as usize;
        v.extend(std::iter::repeat_n(0, n));
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(numeric(b"0000644\0"), Ok(0o644));
        assert_eq!(numeric(b"  644 \0"), Ok(0o644));
        assert_eq!(numeric(b"\0\0\0\0"), Ok(0));
        assert!(numeric(b"0009").is_err());
        assert_eq!(numeric(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0]), Ok(256));
        assert_eq!(numeric(&[0xff; 8]), Ok(-1));
        assert!(numeric(&[0x80, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(numeric(b"7777777777777777777777777").is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12"), Some(Time { sec: 12, nsec: 0 }));
        assert_eq!(
            parse_pax_time(b"12.5"),
            Some(Time {
                sec: 12,
                nsec: 500_000_000
            })
        );
        assert_eq!(
            parse_pax_time(b"-1.25"),
            Some(Time {
                sec: -2,
                nsec: 750_000_000
            })
        );
        assert_eq!(
            parse_pax_time(b"1.1234567891"),
            Some(Time {
                sec: 1,
                nsec: 123_456_789
            })
        );
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"1.x"), None);
    }

    #[test]
    fn reads_plain_entries_and_prefix() {
        let mut v = Vec::new();
        let mut h = header(b"file", b'0', 5);
        h[345..348].copy_from_slice(b"dir");
        set_checksum(&mut h);
        v.extend_from_slice(&h);
        v.extend_from_slice(b"hello");
        pad(&mut v);
        v.extend_from_slice(&header(b"d/", b'5', 999)); // size ignored for dirs
        v.extend_from_slice(&[0; 1024]);
        let e = entries(&v);
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0],
            (b"dir/file".to_vec(), Kind::Regular, 5, b"hello".to_vec())
        );
        assert_eq!(e[1].0, b"d/");
        assert_eq!(e[1].1, Kind::Dir);
    }

    #[test]
    fn missing_end_marker_is_a_clean_end() {
        let v = header(b"a", b'0', 0).to_vec();
        assert_eq!(entries(&v).len(), 1);
    }

    #[test]
    fn rejects_bad_checksum_and_truncation() {
        let mut h = header(b"a", b'0', 3);
        h[0] = b'b';
        let mut r = TarReader::new(&h[..], 4096);
        assert!(matches!(
            r.next_entry(),
            Err(TarError::Format { offset: 0, .. })
        ));

        let mut v = header(b"a", b'0', 1000).to_vec();
        v.extend_from_slice(&[1; 10]);
        let mut r = TarReader::new(&v[..], 4096);
        assert!(r.next_entry().unwrap());
        assert!(matches!(r.next_entry(), Err(TarError::Format { .. })));

        let mut r = TarReader::new(&v[..100], 4096);
        assert!(matches!(r.next_entry(), Err(TarError::Format { .. })));
    }

    #[test]
    fn pax_overrides_and_xattrs() {
        let recs = &pax(&[
            ("path", "a/very/long/pax/name"),
            ("SCHILY.xattr.user.k", "v"),
            ("uid", "4242"),
            ("mtime", "1700000000.5"),
        ]);
        let mut v = header(b"PaxHeader", b'x', recs.len() as u64).to_vec();
        v.extend_from_slice(recs);
        pad(&mut v);
        v.extend_from_slice(&header(b"short", b'0', 0));
        let mut r = TarReader::new(&v[..], 4096);
        assert!(r.next_entry().unwrap());
        assert_eq!(r.entry.path, b"a/very/long/pax/name");
        assert_eq!(r.entry.uid, 4242);
        assert_eq!(r.entry.xattrs, vec![(b"user.k".to_vec(), b"v".to_vec())]);
        assert_eq!(
            r.entry.mtime,
            Time {
                sec: 1_700_000_000,
                nsec: 500_000_000
            }
        );
        assert_eq!(r.entry.header_offset, 0);
        assert!(!r.next_entry().unwrap());
    }

    #[test]
    fn rejects_malformed_pax() {
        for recs in [
            &b"99 path=x\n"[..],
            b"5 a=b\n",
            b"10 path\n",
            b"11 pa\0th=x\n",
            b"12 path=a\0b\n",
        ] {
            let mut v = header(b"P", b'x', recs.len() as u64).to_vec();
            v.extend_from_slice(recs);
            pad(&mut v);
            v.extend_from_slice(&header(b"f", b'0', 0));
            let mut r = TarReader::new(&v[..], 4096);
            assert!(
                matches!(r.next_entry(), Err(TarError::Format { .. })),
                "{recs:?}"
            );
        }
    }

    #[test]
    fn oversized_metadata_is_refused_without_reading_it() {
        for t in [b'x', b'L', b'K'] {
            let v = header(b"big", t, MAX_META_SIZE + 1).to_vec();
            let mut r = TarReader::new(&v[..], 4096);
            match r.next_entry() {
                Err(TarError::Format { reason, .. }) => {
                    assert!(reason.contains("exceeds"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn gnu_long_name_wins_and_is_nul_trimmed() {
        let name = b"x/".repeat(100);
        let mut v = header(b"././@LongLink", b'L', name.len() as u64 + 1).to_vec();
        v.extend_from_slice(&name);
        v.push(0);
        pad(&mut v);
        v.extend_from_slice(&header(b"trunc", b'0', 0));
        let e = entries(&v);
        assert_eq!(e[0].0, name);
    }

    #[test]
    fn meta_header_without_entry_is_an_error() {
        let recs = &pax(&[("path", "x")]);
        let mut v = header(b"P", b'x', recs.len() as u64).to_vec();
        v.extend_from_slice(recs);
        pad(&mut v);
        let mut r = TarReader::new(&v[..], 4096);
        assert!(matches!(r.next_entry(), Err(TarError::Format { .. })));
    }

    #[test]
    fn unsupported_types_are_errors() {
        let v = header(b"weird", b'Z', 0).to_vec();
        let mut r = TarReader::new(&v[..], 4096);
        assert!(matches!(r.next_entry(), Err(TarError::Format { .. })));
    }

    #[test]
    fn old_gnu_sparse() {
        let mut h = header(b"sparse", b'S', 6);
        h[257..263].copy_from_slice(b"ustar ");
        h[263..265].copy_from_slice(b" \0");
        let put = |h: &mut [u8; BLOCK], at: usize, v: u64| {
            h[at..at + 11].copy_from_slice(format!("{v:011o}").as_bytes());
        };
        put(&mut h, 386, 0);
        put(&mut h, 398, 2);
        put(&mut h, 410, 100);
        put(&mut h, 422, 4);
        put(&mut h, 483, 1000);
        set_checksum(&mut h);
        let mut v = h.to_vec();
        v.extend_from_slice(b"abWXYZ");
        pad(&mut v);
        let mut r = TarReader::new(&v[..], 4096);
        assert!(r.next_entry().unwrap());
        assert_eq!(r.entry.size, 1000);
        assert_eq!(
            r.entry.sparse.as_deref(),
            Some(
                &[
                    Fragment { offset: 0, len: 2 },
                    Fragment {
                        offset: 100,
                        len: 4
                    }
                ][..]
            )
        );
        assert_eq!(r.stream.remaining(), 6);
    }

    #[test]
    fn pax_sparse_1x0() {
        let recs = &pax(&[
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", "real"),
            ("GNU.sparse.realsize", "50"),
        ]);
        let mut v = header(b"P", b'x', recs.len() as u64).to_vec();
        v.extend_from_slice(recs);
        pad(&mut v);
        let mut data = b"2\n0\n3\n40\n2\n".to_vec();
        pad(&mut data);
        data.extend_from_slice(b"abcde");
        v.extend_from_slice(&header(b"GNUSparseFile.0/real", b'0', data.len() as u64));
        v.extend_from_slice(&data);
        pad(&mut v);
        let mut r = TarReader::new(&v[..], 4096);
        assert!(r.next_entry().unwrap());
        assert_eq!(r.entry.path, b"real");
        assert_eq!(r.entry.size, 50);
        assert_eq!(r.stream.remaining(), 5);
        assert_eq!(r.entry.sparse.as_ref().unwrap().len(), 2);
        assert!(!r.next_entry().unwrap());
    }

    #[test]
    fn sparse_map_must_match_data() {
        let recs = &pax(&[("GNU.sparse.map", "0,3,10,9"), ("GNU.sparse.size", "100")]);
        let mut v = header(b"P", b'x', recs.len() as u64).to_vec();
        v.extend_from_slice(recs);
        pad(&mut v);
        v.extend_from_slice(&header(b"f", b'0', 5));
        v.extend_from_slice(&[0; 512]);
        let mut r = TarReader::new(&v[..], 4096);
        assert!(matches!(r.next_entry(), Err(TarError::Format { .. })));
    }

    #[test]
    fn small_buffers_and_many_entries() {
        // Exercise buffer refills at odd boundaries.
        let mut v = Vec::new();
        for i in 0..50u64 {
            let body = vec![b'a' + (i % 26) as u8; (i * 37) as usize];
            v.extend_from_slice(&header(format!("f{i}").as_bytes(), b'0', body.len() as u64));
            v.extend_from_slice(&body);
            pad(&mut v);
        }
        let mut r = TarReader::new(&v[..], 700);
        let mut n = 0;
        while r.next_entry().unwrap() {
            let mut d = Vec::new();
            let rem = r.stream.remaining();
            r.stream.data_to_vec(rem, &mut d).unwrap();
            assert_eq!(d.len() as u64, n * 37);
            n += 1;
        }
        assert_eq!(n, 50);
    }
}
