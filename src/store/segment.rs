//! Append-only segment files with framed, checksummed records (docs/ARCHITECTURE.md §3 "Store on flash").
//!
//! Layout of a store directory: `seg-000001.rtv`, `seg-000002.rtv`, … Each segment starts with a 16-byte header
//! `b"RTVS" | format_version u16 | reserved u16 | segment_no u32 | crc32c(first 12 bytes) u32`, then records:
//! `magic b"RTVR" (4) | len u32 | seq u64 | crc32c(len ‖ seq ‖ payload) u32 | payload (len bytes)`, all little-endian.
//!
//! A record is *committed* once [`SegmentStore::append`] returned with `durable == true` (write + fsync returned).
//! Boot recovery ([`SegmentStore::open`]) truncates only a torn tail: the final frame of the newest segment when it
//! is incomplete (a write cut by power loss). Any other frame that fails its checks is corruption: it stays on disk,
//! is reported with file and offset, and is skipped by readers, which resynchronise on the next valid record. Every allocation driven by an on-disk length is bounded by
//! [`MAX_PAYLOAD`].
//!
//! Each frame is written with one `write()`, so a killed writer process leaves a whole record or none (the page
//! cache outlives it) — except when a SIGKILL lands while the kernel copies a multi-page frame (Linux checks for a
//! fatal signal between pages and returns short). Torn tails are otherwise what losing the machine leaves;
//! `cargo xtask powercut` cuts a VM's power to exercise them (docs/ARCHITECTURE.md §3, §5).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Segment header magic.
pub const SEG_MAGIC: [u8; 4] = *b"RTVS";
/// Record magic.
pub const REC_MAGIC: [u8; 4] = *b"RTVR";
/// On-disk format version written in every segment header.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of a segment header.
pub const SEG_HEADER_LEN: usize = 16;
/// Bytes of a record header (magic, len, seq, crc).
pub const REC_HEADER_LEN: usize = 20;
/// Largest payload a record may carry (one snapshot, ≤ 64 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest framed record.
pub const MAX_RECORD: usize = REC_HEADER_LEN + MAX_PAYLOAD;

/// When the writer calls fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync after every record: each append returns committed.
    EveryRecord,
    /// fsync at most once per interval (on append or [`SegmentStore::sync_if_due`]).
    Interval(Duration),
    /// Never fsync explicitly (the OS decides; tests and tmpfs only).
    Never,
}

impl FsyncPolicy {
    /// Parse a board-profile value: `every_record`, `never`, `interval` (1 s) or `interval:MS`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "every_record" => Ok(FsyncPolicy::EveryRecord),
            "never" => Ok(FsyncPolicy::Never),
            "interval" => Ok(FsyncPolicy::Interval(Duration::from_secs(1))),
            _ => match s.strip_prefix("interval:").and_then(|ms| ms.parse::<u64>().ok()) {
                Some(ms) => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
                None => Err(crate::error::bad_input(format!(
                    "fsync policy `{s}`: expected every_record, interval, interval:MS or never"
                ))),
            },
        }
    }
}

/// Store limits and durability.
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// Total bytes of all segments; the oldest segment is evicted when exceeded.
    pub budget_bytes: u64,
    /// A segment is closed and a new one started once it would exceed this size.
    pub segment_bytes: u64,
    /// fsync policy.
    pub fsync: FsyncPolicy,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { budget_bytes: 256 * 1024 * 1024, segment_bytes: 4 * 1024 * 1024, fsync: FsyncPolicy::EveryRecord }
    }
}

/// Why an append or open failed. The writer counts these and keeps going.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The device is full even after evicting old segments.
    #[error("store {dir}: no space left on device")]
    NoSpace { dir: PathBuf },
    /// The directory or file is read-only.
    #[error("store {dir}: read-only or permission denied: {source}")]
    ReadOnly { dir: PathBuf, source: io::Error },
    /// The directory does not exist (and could not be created).
    #[error("store {dir}: directory missing: {source}")]
    Missing { dir: PathBuf, source: io::Error },
    /// A payload larger than [`MAX_PAYLOAD`].
    #[error("record of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    /// Another process (or store instance) is writing this directory.
    #[error("store {dir}: in use by {} (lock held on {dir}/.lock)", holder.map_or("another writer".to_string(), |p| format!("PID {p}")))]
    Locked { dir: PathBuf, holder: Option<u32> },
    /// Segment numbers are used up: the highest one in the directory is `u32::MAX`. Numbers order segments
    /// (eviction removes the lowest), so wrapping to 1 would make the newest segment look oldest and reuse names
    /// of live segments; at one 4 MiB segment per second this takes 136 years, so in practice only a stray file
    /// named `seg-4294967295.rtv` gets here.
    #[error("store {dir}: segment numbers exhausted (a segment numbered {} exists); move the store aside", u32::MAX)]
    SegmentsExhausted { dir: PathBuf },
    /// Sequence numbers are used up. The next seq is kept in a u64 that must stay above every record's seq, so
    /// `u64::MAX` itself marks "none left" and the last record gets `u64::MAX - 1`; wrapping to 0 instead would
    /// put records behind higher ones, which readers and recovery would take for damage.
    #[error("store {dir}: sequence numbers exhausted (the last record has seq {}); move the store aside", u64::MAX - 1)]
    SeqExhausted { dir: PathBuf },
    /// Any other I/O failure.
    #[error("store {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
}

impl StoreError {
    fn from_io(dir: &Path, e: io::Error) -> Self {
        let dir = dir.to_path_buf();
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => StoreError::NoSpace { dir },
            Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => StoreError::ReadOnly { dir, source: e },
            Some(libc::ENOENT) => StoreError::Missing { dir, source: e },
            _ => StoreError::Io { dir, source: e },
        }
    }
}

/// One corrupt region (or the torn tail) found by a scan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Corruption {
    /// Segment file name.
    pub segment: String,
    /// Byte offset in that file where the bad bytes start.
    pub offset: u64,
    /// Bytes skipped until the next frame or valid record (or end of file).
    pub len: u64,
    /// What was wrong.
    pub reason: &'static str,
    /// True only for the torn tail: an incomplete final frame of the newest segment (a write cut by power loss,
    /// never committed). Everything else is corruption.
    pub torn: bool,
}

/// What boot recovery found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RecoveryReport {
    /// Segment files present after recovery.
    pub segments: usize,
    /// Valid records in all segments.
    pub records_ok: u64,
    /// Bytes cut from the end of the newest segment: its torn tail only (corruption is never cut).
    pub bytes_truncated: u64,
    /// Corrupt records and regions anywhere (left on disk, never returned to readers).
    pub corrupt: Vec<Corruption>,
    /// Highest valid sequence number, if any.
    pub last_seq: Option<u64>,
}

/// A valid record located by a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLoc {
    /// Offset of the record header in the segment.
    pub offset: u64,
    /// Sequence number.
    pub seq: u64,
    /// Payload length.
    pub len: u32,
}

impl RecordLoc {
    /// Byte range of the payload in the segment buffer.
    pub fn payload_range(&self) -> std::ops::Range<usize> {
        let start = self.offset as usize + REC_HEADER_LEN;
        start..start + self.len as usize
    }
}

/// Result of scanning one segment's bytes.
#[derive(Clone, Debug, Default)]
pub struct SegmentScan {
    /// Valid records, in file order, with strictly increasing seq.
    pub records: Vec<RecordLoc>,
    /// Corrupt regions `(offset, len, reason)` in file order: one per damaged frame where the frames can still be
    /// told apart by their length fields, else one per run of bytes up to the next valid record.
    pub corrupt: Vec<(u64, u64, &'static str)>,
    /// The final frame `(offset, len)` when it is incomplete (cut short before its declared end, or inside its
    /// header). Only this can be a torn write, and only in the newest segment; the caller decides.
    pub torn: Option<(u64, u64)>,
    /// End of the last valid record (or of the header).
    pub valid_end: u64,
    /// False when the segment header itself is bad or cut short.
    pub header_ok: bool,
}

/// Encode a segment header.
pub fn segment_header(segment_no: u32) -> [u8; SEG_HEADER_LEN] {
    let mut h = [0u8; SEG_HEADER_LEN];
    h[0..4].copy_from_slice(&SEG_MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&segment_no.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

fn header_ok(buf: &[u8]) -> bool {
    buf.len() >= SEG_HEADER_LEN
        && buf[0..4] == SEG_MAGIC
        && u16::from_le_bytes([buf[4], buf[5]]) == FORMAT_VERSION
        && crc32c::crc32c(&buf[0..12]) == u32::from_le_bytes([buf[12], buf[13], buf[14], buf[15]])
}

/// Frame one record into `out` (appends `REC_HEADER_LEN + payload.len()` bytes).
pub fn frame_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    let mut crc = crc32c::crc32c(&len.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&REC_MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Try to parse one record at `pos`. Never reads past `buf`, never allocates.
fn parse_at(buf: &[u8], pos: usize) -> Result<RecordLoc, &'static str> {
    let rest = &buf[pos..];
    if rest.len() < REC_HEADER_LEN {
        return Err("truncated record header");
    }
    if rest[0..4] != REC_MAGIC {
        return Err("bad record magic");
    }
    let len = le_u32(&rest[4..8]);
    if len as usize > MAX_PAYLOAD {
        return Err("record length over limit");
    }
    let seq = u64::from_le_bytes([rest[8], rest[9], rest[10], rest[11], rest[12], rest[13], rest[14], rest[15]]);
    let crc = le_u32(&rest[16..20]);
    let end = REC_HEADER_LEN + len as usize;
    if rest.len() < end {
        return Err("truncated record payload");
    }
    let mut c = crc32c::crc32c(&rest[4..16]);
    c = crc32c::crc32c_append(c, &rest[REC_HEADER_LEN..end]);
    if c != crc {
        return Err("record crc mismatch");
    }
    Ok(RecordLoc { offset: pos as u64, seq, len })
}

/// Little-endian u32 from the first 4 bytes (callers check the length).
fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// True when `rest` (the bytes up to end of file) is a record frame cut short: a prefix of a plausible header, or
/// a plausible header whose payload ends before its declared length. A torn write looks like this and nothing else
/// does; a complete frame with a bad checksum is corruption.
fn incomplete_frame(rest: &[u8]) -> bool {
    let m = rest.len().min(4);
    if rest.is_empty() || rest[..m] != REC_MAGIC[..m] {
        return false;
    }
    if rest.len() < 8 {
        return true;
    }
    let len = le_u32(&rest[4..8]) as usize;
    len <= MAX_PAYLOAD && rest.len() < REC_HEADER_LEN + len
}

/// Length of the whole frame at the start of `rest` when its magic and length field are plausible and the frame
/// fits in `rest`; lets a run of damaged frames be reported one by one.
fn frame_len(rest: &[u8]) -> Option<usize> {
    if rest.len() < REC_HEADER_LEN || rest[0..4] != REC_MAGIC {
        return None;
    }
    let len = le_u32(&rest[4..8]) as usize;
    (len <= MAX_PAYLOAD && REC_HEADER_LEN + len <= rest.len()).then_some(REC_HEADER_LEN + len)
}

/// First offset at or after `from` where a valid record frame starts (or `buf.len()`): resynchronisation after
/// damage, so a bad record never hides the valid ones behind it.
fn next_valid(buf: &[u8], from: usize) -> usize {
    let mut pos = from;
    while pos < buf.len() {
        match buf[pos..].windows(4).position(|w| w == REC_MAGIC) {
            Some(k) => pos += k,
            None => return buf.len(),
        }
        if parse_at(buf, pos).is_ok() {
            return pos;
        }
        pos += 1;
    }
    buf.len()
}

/// Classify the bad bytes `start..end` (no valid record inside): one corruption per damaged frame while the length
/// fields chain from frame to frame, the rest as one region; an incomplete final frame at end of file is the torn
/// candidate.
fn split_bad(buf: &[u8], start: usize, end: usize, first_reason: &'static str, scan: &mut SegmentScan) {
    let (mut p, mut reason) = (start, first_reason);
    while p < end {
        let rest = &buf[p..end];
        if end == buf.len() && incomplete_frame(rest) {
            scan.torn = Some((p as u64, rest.len() as u64));
            return;
        }
        let Some(n) = frame_len(rest) else { break };
        let next = &buf[p + n..end];
        let chained = next.is_empty() || next.starts_with(&REC_MAGIC) || (end == buf.len() && incomplete_frame(next));
        if !chained {
            break;
        }
        scan.corrupt.push((p as u64, n as u64, reason));
        p += n;
        reason = parse_at(&buf[..end], p).err().unwrap_or("record crc mismatch");
    }
    if p < end {
        scan.corrupt.push((p as u64, (end - p) as u64, reason));
    }
}

/// Check the 16-byte segment header. A file shorter than that whose bytes are a prefix of a header is a torn
/// segment start (the writer crashed while creating it); a damaged full header is corruption, and the records
/// behind it are still scanned. Returns where the records start, or `None` when there is nothing more to scan.
fn scan_header(buf: &[u8], scan: &mut SegmentScan) -> Option<usize> {
    scan.header_ok = header_ok(buf);
    if buf.len() < SEG_HEADER_LEN {
        let m = buf.len().min(4);
        if buf[..m] == SEG_MAGIC[..m] {
            scan.torn = Some((0, buf.len() as u64));
        } else {
            scan.corrupt.push((0, buf.len() as u64, "bad segment header"));
        }
        return None;
    }
    if !scan.header_ok {
        scan.corrupt.push((0, SEG_HEADER_LEN as u64, "bad segment header"));
    }
    scan.valid_end = SEG_HEADER_LEN as u64;
    Some(SEG_HEADER_LEN)
}

/// Scan a whole segment buffer: valid records, each corrupt frame or region (skipped by resynchronising on the
/// next valid record), and an incomplete final frame (the torn candidate). Records whose seq does not increase are
/// treated as corrupt. Never panics, never allocates by a length field.
pub fn scan_segment(buf: &[u8]) -> SegmentScan {
    let mut scan = SegmentScan::default();
    let Some(mut pos) = scan_header(buf, &mut scan) else { return scan };
    let mut last_seq: Option<u64> = None;
    while pos < buf.len() {
        let parsed = parse_at(buf, pos).and_then(|r| match last_seq {
            Some(s) if r.seq <= s => Err("sequence not increasing"),
            _ => Ok(r),
        });
        match parsed {
            Ok(r) => {
                last_seq = Some(r.seq);
                pos += REC_HEADER_LEN + r.len as usize;
                scan.valid_end = pos as u64;
                scan.records.push(r);
            }
            Err(reason) => {
                let next = next_valid(buf, pos + 1);
                split_bad(buf, pos, next, reason, &mut scan);
                pos = next;
            }
        }
    }
    scan
}

/// Segment file name for a number.
pub fn segment_name(no: u32) -> String {
    format!("seg-{no:06}.rtv")
}

fn parse_segment_name(name: &str) -> Option<u32> {
    name.strip_prefix("seg-")?.strip_suffix(".rtv")?.parse().ok()
}

/// Entries named like a segment: number, path, and whether it is a regular file (symlinks are not followed).
fn segment_entries(dir: &Path) -> io::Result<Vec<(u32, PathBuf, bool)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if let Some(no) = e.file_name().to_str().and_then(parse_segment_name) {
            v.push((no, e.path(), e.file_type()?.is_file()));
        }
    }
    v.sort_unstable_by_key(|(n, _, _)| *n);
    Ok(v)
}

/// Segment numbers and paths in a directory, oldest first. Only regular files: a directory (or device, socket,
/// symlink) that merely has a segment's name holds no records and cannot be read as one, and must not stop the
/// whole store from being listed, verified or opened; [`non_segment_entries`] names them.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    Ok(segment_entries(dir)?.into_iter().filter(|e| e.2).map(|(n, p, _)| (n, p)).collect())
}

/// Names of the entries that look like segments but are not regular files (skipped by [`list_segments`]), so
/// `store verify` can report them.
pub fn non_segment_entries(dir: &Path) -> io::Result<Vec<String>> {
    let names = segment_entries(dir)?.into_iter().filter(|e| !e.2);
    Ok(names.map(|(_, p, _)| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect())
}

/// Read a segment file whole. Segments are bounded by the writer; a foreign file is read as-is.
pub fn read_segment(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One record read back: its seq, segment and payload.
#[derive(Clone, Debug)]
pub struct Record {
    /// Sequence number.
    pub seq: u64,
    /// Segment file name.
    pub segment: String,
    /// Offset in the segment.
    pub offset: u64,
    /// Payload bytes (CRC checked).
    pub payload: Vec<u8>,
}

/// Read every valid record of a store directory, oldest first, without modifying anything. Corrupt regions are
/// reported in the second value (including a torn tail, flagged by `reason`), never returned as records.
pub fn read_all(dir: &Path) -> io::Result<(Vec<Record>, Vec<Corruption>)> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for_each_record(dir, |r| out.push(r), |c| bad.push(c))?;
    Ok((out, bad))
}

/// Visit every valid record (one segment in memory at a time) and every corrupt region, the torn tail included
/// (flagged `torn`). Only the newest segment can have a torn tail: an incomplete frame anywhere else is corruption.
pub fn for_each_record(
    dir: &Path,
    mut on_record: impl FnMut(Record),
    mut on_corrupt: impl FnMut(Corruption),
) -> io::Result<()> {
    let mut last_seq: Option<u64> = None;
    let segs = list_segments(dir)?;
    let n = segs.len();
    let committed = super::hwm::read(dir).committed_seq;
    for (i, (_, path)) in segs.into_iter().enumerate() {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let buf = read_segment(&path)?;
        let scan = scan_segment(&buf);
        for c in scan_findings(&name, &buf, &scan, i + 1 == n, committed) {
            on_corrupt(c);
        }
        for r in scan.records {
            if last_seq.is_some_and(|s| r.seq <= s) {
                on_corrupt(Corruption {
                    segment: name.clone(),
                    offset: r.offset,
                    len: REC_HEADER_LEN as u64 + r.len as u64,
                    reason: "sequence not increasing across segments",
                    torn: false,
                });
                continue;
            }
            last_seq = Some(r.seq);
            on_record(Record {
                seq: r.seq,
                segment: name.clone(),
                offset: r.offset,
                payload: buf[r.payload_range()].to_vec(),
            });
        }
    }
    Ok(())
}

/// The corrupt regions of one scanned segment, then its incomplete final frame: a torn tail only when
/// [`torn_tail`] says so, else corruption.
fn scan_findings(name: &str, buf: &[u8], scan: &SegmentScan, newest: bool, committed: u64) -> Vec<Corruption> {
    let mut v: Vec<Corruption> = scan
        .corrupt
        .iter()
        .map(|&(offset, len, reason)| Corruption { segment: name.to_string(), offset, len, reason, torn: false })
        .collect();
    if let Some((offset, len)) = scan.torn {
        let torn = torn_tail(buf, scan, newest, committed).is_some();
        let reason = match (torn, newest) {
            (true, _) => "incomplete last record",
            (false, true) => "committed record cut short (or its length field damaged)",
            (false, false) => "incomplete record in a closed segment",
        };
        v.push(Corruption { segment: name.to_string(), offset, len, reason, torn });
    }
    v
}

/// The torn tail `(offset, len)` of a scanned segment, if it has one: an incomplete final frame, in the newest
/// segment (a closed segment was complete once a newer one was started), whose seq (when its header got that far)
/// is above `committed`, the highest seq known to have been fsynced: a write power loss interrupted cannot be one
/// that had already returned.
pub fn torn_tail(buf: &[u8], scan: &SegmentScan, newest: bool, committed: u64) -> Option<(u64, u64)> {
    let (offset, len) = scan.torn.filter(|_| newest)?;
    let head = buf.get(offset as usize + 8..offset as usize + 16).filter(|_| offset >= SEG_HEADER_LEN as u64);
    let seq = head.map(|h| u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]));
    seq.is_none_or(|s| s > committed).then_some((offset, len))
}

/// Outcome of one append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number given to the record.
    pub seq: u64,
    /// True when write and fsync both returned (the record is committed).
    pub durable: bool,
    /// Segments evicted to stay within budget.
    pub evicted: u32,
}

struct Segment {
    no: u32,
    path: PathBuf,
    len: u64,
}

/// The writer's handle on a store directory. One writer per directory.
pub struct SegmentStore {
    dir: PathBuf,
    cfg: StoreConfig,
    segments: Vec<Segment>,
    file: Option<File>,
    next_seq: u64,
    /// Event id high-water mark, persisted in [`super::hwm`] with `next_seq` after every append.
    next_event_id: u64,
    /// Highest seq known fsynced (persisted with the marks; see [`torn_tail`]).
    committed_seq: u64,
    /// High-water-mark writes that failed (best effort: the record itself was written).
    hwm_failures: u64,
    last_sync: Instant,
    unsynced: bool,
    frame: Vec<u8>,
    /// Exclusive `flock` on DIR/.lock for the store's lifetime (released when the file closes, also on a crash).
    _lock: Option<File>,
}

/// One writer per directory: recovery truncates tails and appends continue sequence numbers, so two writers
/// would corrupt each other. A directory where the lock file cannot be created (read-only) is left unlocked: its
/// writes fail anyway and are reported as such.
fn lock_dir(dir: &Path) -> Result<Option<File>, StoreError> {
    use std::os::fd::AsRawFd;
    let f = match OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(".lock")) {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)) => {
            return Ok(None)
        }
        Err(e) => return Err(StoreError::from_io(dir, e)),
    };
    // A forked child briefly shares our open files until it execs (flock locks belong to the open file), so a
    // lock that is busy is retried for a moment before it counts as another writer.
    for attempt in 0..40 {
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(f));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(StoreError::from_io(dir, e));
        }
        if attempt < 39 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let holder = std::fs::read_to_string(dir.join(".lock")).ok().and_then(|t| t.trim().parse().ok());
    Err(StoreError::Locked { dir: dir.to_path_buf(), holder })
}

/// Fails with [`StoreError::Locked`] (naming the holder's PID) when another writer holds the store in `dir`; `Ok`
/// when it is free or does not exist yet. `drive` asks before its first tick, so a store in use is a clear error
/// up front rather than a run that records nothing.
pub fn check_not_locked(dir: &Path) -> Result<(), StoreError> {
    if !dir.join(".lock").exists() {
        return Ok(());
    }
    lock_dir(dir).map(drop)
}

/// Boot recovery of one segment: report its corruption, cut its torn tail when it is the newest (the only bytes
/// recovery may remove: they were never committed), and say whether appends may continue in it (only when its
/// header is good and its end is clean, so new records never sit behind damage). `None`: the whole file was a torn
/// segment start and is gone.
fn recover_segment(
    dir: &Path,
    no: u32,
    path: PathBuf,
    newest: bool,
    committed: u64,
    report: &mut RecoveryReport,
    last_seq: &mut Option<u64>,
) -> io::Result<(Option<Segment>, bool)> {
    let buf = read_segment(&path)?;
    let scan = scan_segment(&buf);
    let name = segment_name(no);
    report.corrupt.extend(scan_findings(&name, &buf, &scan, newest, committed).into_iter().filter(|c| !c.torn));
    if let Some(r) = scan.records.last() {
        *last_seq = Some(last_seq.map_or(r.seq, |s| s.max(r.seq)));
    }
    report.records_ok += scan.records.len() as u64;
    let mut len = buf.len() as u64;
    if let Some((offset, cut)) = torn_tail(&buf, &scan, newest, committed) {
        report.bytes_truncated += cut;
        if offset == 0 {
            fs::remove_file(&path)?;
            fsync_dir(dir)?;
            return Ok((None, false));
        }
        let f = OpenOptions::new().write(true).open(&path)?;
        f.set_len(offset)?;
        f.sync_all()?;
        len = offset;
    }
    let torn_kept = scan.torn.is_some() && len == buf.len() as u64;
    let clean_end = !torn_kept && scan.corrupt.last().is_none_or(|&(o, l, _)| o + l < len);
    Ok((Some(Segment { no, path, len }), scan.header_ok && clean_end))
}

impl SegmentStore {
    /// Open (creating the directory if needed) and run boot recovery: only a torn tail (an incomplete final frame of
    /// the newest segment) is truncated (and fsynced); corrupt records anywhere stay on disk, are reported and are
    /// skipped by readers. Sequence numbers continue above both the highest valid record and the persisted
    /// high-water mark, so they never go back.
    pub fn open(dir: impl AsRef<Path>, cfg: StoreConfig) -> Result<(Self, RecoveryReport), StoreError> {
        let dir = dir.as_ref().to_path_buf();
        if cfg.segment_bytes < (SEG_HEADER_LEN + MAX_RECORD) as u64 || cfg.budget_bytes < cfg.segment_bytes {
            return Err(StoreError::Io {
                dir,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "segment_bytes must be ≥ {} and ≤ budget_bytes (got {} / {})",
                        SEG_HEADER_LEN + MAX_RECORD,
                        cfg.segment_bytes,
                        cfg.budget_bytes
                    ),
                ),
            });
        }
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| StoreError::from_io(&dir, e))?;
        }
        let lock = lock_dir(&dir)?;
        // Name ourselves in the lock file, so a second writer can say who holds it. Best effort.
        if let Some(mut f) = lock.as_ref() {
            let _ = f.set_len(0).and_then(|_| f.write_all(format!("{}\n", std::process::id()).as_bytes()));
        }
        let err = |e| StoreError::from_io(&dir, e);
        let mut report = RecoveryReport::default();
        let mut segments = Vec::new();
        let listed = list_segments(&dir).map_err(err)?;
        let n = listed.len();
        let mut last_seq: Option<u64> = None;
        let mut appendable = false;
        let hw = super::hwm::read(&dir);
        for (i, (no, path)) in listed.into_iter().enumerate() {
            let newest = i + 1 == n;
            let (seg, ok) =
                recover_segment(&dir, no, path, newest, hw.committed_seq, &mut report, &mut last_seq).map_err(err)?;
            if let Some(seg) = seg {
                segments.push(seg);
            }
            appendable = ok;
        }
        report.segments = segments.len();
        report.last_seq = last_seq;
        let mut store = SegmentStore {
            dir,
            cfg,
            segments,
            file: None,
            next_seq: last_seq.map_or(1, |s| s.saturating_add(1)).max(hw.next_seq),
            next_event_id: hw.next_event_id.max(1),
            committed_seq: hw.committed_seq,
            hwm_failures: 0,
            last_sync: Instant::now(),
            unsynced: false,
            frame: Vec::with_capacity(MAX_RECORD),
            _lock: lock,
        };
        match store.segments.last() {
            Some(last) if appendable => {
                let f =
                    OpenOptions::new().append(true).open(&last.path).map_err(|e| StoreError::from_io(&store.dir, e))?;
                store.file = Some(f);
            }
            _ => {} // Appends start a fresh segment: damage stays behind, in a closed segment.
        }
        Ok((store, report))
    }

    /// Directory of this store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sequence number the next record will get; `u64::MAX` when none is left (appends fail with
    /// [`StoreError::SeqExhausted`]).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Total bytes of all segments.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn start_segment(&mut self) -> Result<(), StoreError> {
        if let Some(f) = self.file.take() {
            if self.cfg.fsync != FsyncPolicy::Never {
                f.sync_all().map_err(|e| StoreError::from_io(&self.dir, e))?;
            }
        }
        // Continue past the highest number (never wrap: order is by number); a name already taken by something
        // that is not one of our segments (a file that appeared later, a directory) is skipped, never truncated.
        let mut no = self.segments.last().map_or(Some(1), |s| s.no.checked_add(1));
        loop {
            let Some(n) = no else { return Err(StoreError::SegmentsExhausted { dir: self.dir.clone() }) };
            match self.create_segment(n) {
                Ok(true) => return Ok(()),
                Ok(false) => no = n.checked_add(1),
                Err(e) => return Err(StoreError::from_io(&self.dir, e)),
            }
        }
    }

    /// Create segment `no` with `create_new` (O_EXCL), so an existing file is never clobbered: `Ok(false)` when the
    /// name is taken. A half-created segment (its header write failed) is removed: it is ours and holds nothing.
    fn create_segment(&mut self, no: u32) -> io::Result<bool> {
        let path = self.dir.join(segment_name(no));
        let mut f = match OpenOptions::new().create_new(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e),
        };
        let res = (|| -> io::Result<File> {
            f.write_all(&segment_header(no))?;
            f.sync_all()?;
            fsync_dir(&self.dir)?;
            OpenOptions::new().append(true).open(&path)
        })();
        drop(f);
        match res {
            Ok(f) => {
                self.segments.push(Segment { no, path, len: SEG_HEADER_LEN as u64 });
                self.file = Some(f);
                Ok(true)
            }
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Remove the oldest segments while over budget (never the one being written).
    fn evict(&mut self, incoming: u64) -> Result<u32, StoreError> {
        let mut evicted = 0;
        while self.segments.len() > 1 && self.total_bytes() + incoming > self.cfg.budget_bytes {
            self.remove_oldest()?;
            evicted += 1;
        }
        Ok(evicted)
    }

    fn remove_oldest(&mut self) -> Result<(), StoreError> {
        let old = self.segments.remove(0);
        match fs::remove_file(&old.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                self.segments.insert(0, old);
                return Err(StoreError::from_io(&self.dir, e));
            }
        }
        fsync_dir(&self.dir).map_err(|e| StoreError::from_io(&self.dir, e))
    }

    /// Append one record. On `EveryRecord` the record is committed when this returns `Ok` (`durable == true`).
    /// On a failed write the segment is cut back to its last good length (or abandoned for a new one), so a failure
    /// never leaves a half record in front of later ones. On ENOSPC the oldest segment is evicted and the write
    /// retried once.
    pub fn append(&mut self, payload: &[u8]) -> Result<Appended, StoreError> {
        let a = self.append_record(payload)?;
        self.persist_hwm(a.durable);
        Ok(a)
    }

    /// Append one snapshot whose event id is `event_id`: as [`Self::append`], and the event-id high-water mark
    /// moves past it, so a later run never reuses the id even if this record is later lost to corruption.
    pub fn append_event(&mut self, payload: &[u8], event_id: u64) -> Result<Appended, StoreError> {
        let a = self.append_record(payload)?;
        self.next_event_id = self.next_event_id.max(event_id.saturating_add(1));
        self.persist_hwm(a.durable);
        Ok(a)
    }

    /// Event id the next snapshot should get at least (from the persisted high-water mark; 1 when unknown).
    pub fn next_event_id(&self) -> u64 {
        self.next_event_id
    }

    /// How many high-water-mark writes failed (e.g. disk full); the records themselves were written.
    pub fn hwm_failures(&self) -> u64 {
        self.hwm_failures
    }

    /// Write the high-water marks after a record went out, fsynced when the record was (so the interval policy
    /// keeps its cost). Best effort: a failure is counted, the append stands.
    fn persist_hwm(&mut self, durable: bool) {
        if durable {
            self.committed_seq = self.next_seq.saturating_sub(1);
        }
        let hw = super::hwm::HighWater {
            next_seq: self.next_seq,
            next_event_id: self.next_event_id,
            committed_seq: self.committed_seq,
        };
        if super::hwm::write(&self.dir, hw, durable).is_err() {
            self.hwm_failures += 1;
        }
    }

    /// The append itself (see [`Self::append`]), without the high-water marks.
    fn append_record(&mut self, payload: &[u8]) -> Result<Appended, StoreError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(StoreError::TooLarge(payload.len()));
        }
        if self.next_seq == u64::MAX {
            return Err(StoreError::SeqExhausted { dir: self.dir.clone() });
        }
        let rec_len = (REC_HEADER_LEN + payload.len()) as u64;
        let mut evicted = 0;
        let mut retried = false;
        loop {
            match self.try_append(payload, rec_len, &mut evicted) {
                Ok(a) => return Ok(a),
                Err(StoreError::NoSpace { .. }) if !retried && self.segments.len() > 1 => {
                    retried = true;
                    self.remove_oldest()?;
                    evicted += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_append(&mut self, payload: &[u8], rec_len: u64, evicted: &mut u32) -> Result<Appended, StoreError> {
        let need_new = match self.segments.last() {
            None => true,
            Some(s) => self.file.is_none() || s.len + rec_len > self.cfg.segment_bytes,
        };
        if need_new {
            self.start_segment()?;
        }
        *evicted += self.evict(rec_len)?;
        let seq = self.next_seq;
        self.frame.clear();
        frame_record(seq, payload, &mut self.frame);
        let file = self.file.as_mut().expect("segment open");
        let seg = self.segments.last_mut().expect("segment exists");
        if let Err(e) = file.write_all(&self.frame) {
            // Cut back any partial write; if that fails too, abandon this segment (next append starts a new one).
            let cut = file.set_len(seg.len).and_then(|_| file.seek(SeekFrom::End(0)).map(|_| ()));
            let no_space = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG));
            if cut.is_err() || !no_space {
                self.file = None;
            }
            return Err(StoreError::from_io(&self.dir, e));
        }
        seg.len += rec_len;
        self.next_seq += 1;
        self.unsynced = true;
        let durable = match self.cfg.fsync {
            FsyncPolicy::EveryRecord => {
                self.sync()?;
                true
            }
            FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d => {
                self.sync()?;
                true
            }
            _ => false,
        };
        Ok(Appended { seq, durable, evicted: *evicted })
    }

    /// fsync the current segment now.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(f) = &self.file {
            if self.unsynced {
                if let Err(e) = f.sync_data() {
                    // After a failed fsync the page cache state is unknown: start a fresh segment next time.
                    self.file = None;
                    return Err(StoreError::from_io(&self.dir, e));
                }
            }
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// fsync if the interval policy says it is due (call periodically from the writer thread).
    pub fn sync_if_due(&mut self) -> Result<(), StoreError> {
        match self.cfg.fsync {
            FsyncPolicy::Interval(d) if self.unsynced && self.last_sync.elapsed() >= d => self.sync(),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StoreConfig {
        StoreConfig { budget_bytes: 1 << 30, segment_bytes: 1 << 20, fsync: FsyncPolicy::Never }
    }

    #[test]
    fn one_writer_per_directory() {
        let d = tempfile::tempdir().unwrap();
        let (mut first, _) = SegmentStore::open(d.path(), cfg()).unwrap();
        first.append(b"committed").unwrap();
        // A second writer (same or another process: flock is per open file) is refused, not allowed to recover.
        let err = SegmentStore::open(d.path(), cfg()).err().expect("second writer");
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        let me = format!("in use by PID {}", std::process::id());
        assert!(err.to_string().contains(&me), "{err}");
        assert!(matches!(check_not_locked(d.path()), Err(StoreError::Locked { holder: Some(_), .. })));
        drop(first);
        check_not_locked(d.path()).expect("free once the writer closed it");
        let (_, r) = SegmentStore::open(d.path(), cfg()).unwrap();
        assert_eq!(r.records_ok, 1);
    }

    #[test]
    fn roundtrip_and_seq_continues() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, r) = SegmentStore::open(d.path(), cfg()).unwrap();
        assert_eq!(r.records_ok, 0);
        for i in 0..10u8 {
            assert_eq!(s.append(&vec![i; i as usize * 7]).unwrap().seq, i as u64 + 1);
        }
        drop(s);
        let (mut s, r) = SegmentStore::open(d.path(), cfg()).unwrap();
        assert_eq!((r.records_ok, r.bytes_truncated, r.last_seq), (10, 0, Some(10)));
        assert_eq!(s.append(b"x").unwrap().seq, 11);
        let (recs, bad) = read_all(d.path()).unwrap();
        assert!(bad.is_empty());
        assert_eq!(recs.len(), 11);
        assert_eq!(recs[3].payload, vec![3u8; 21]);
    }

    #[test]
    fn rolls_and_evicts_oldest() {
        let d = tempfile::tempdir().unwrap();
        let seg = (SEG_HEADER_LEN + MAX_RECORD) as u64;
        let c = StoreConfig { budget_bytes: 3 * seg, segment_bytes: seg, fsync: FsyncPolicy::Never };
        let (mut s, _) = SegmentStore::open(d.path(), c).unwrap();
        let payload = vec![7u8; 40_000];
        for _ in 0..20 {
            s.append(&payload).unwrap();
            assert!(s.total_bytes() <= c.budget_bytes);
        }
        assert!(s.segment_count() >= 3 && s.segment_count() < 20);
        let (recs, bad) = read_all(d.path()).unwrap();
        assert!(bad.is_empty());
        assert_eq!(recs.last().unwrap().seq, 20);
        assert!(recs.len() < 20 && recs.len() >= 3);
        let names: Vec<_> = list_segments(d.path()).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.first(), Some(&(20 - names.len() as u32 + 1)));
    }

    #[test]
    fn too_large_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = SegmentStore::open(d.path(), cfg()).unwrap();
        assert!(matches!(s.append(&vec![0; MAX_PAYLOAD + 1]), Err(StoreError::TooLarge(_))));
        assert_eq!(s.append(&vec![0; MAX_PAYLOAD]).unwrap().seq, 1);
    }

    #[test]
    fn interval_policy_reports_durability() {
        let d = tempfile::tempdir().unwrap();
        let c = StoreConfig { fsync: FsyncPolicy::Interval(Duration::from_secs(3600)), ..cfg() };
        let (mut s, _) = SegmentStore::open(d.path(), c).unwrap();
        assert!(!s.append(b"a").unwrap().durable);
        s.sync_if_due().unwrap();
        s.sync().unwrap();
        drop(s); // one writer per directory
        let c = StoreConfig { fsync: FsyncPolicy::Interval(Duration::ZERO), ..cfg() };
        let (mut s, _) = SegmentStore::open(d.path(), c).unwrap();
        assert!(s.append(b"b").unwrap().durable);
        drop(s);
        let c = StoreConfig { fsync: FsyncPolicy::EveryRecord, ..cfg() };
        let (mut s, _) = SegmentStore::open(d.path(), c).unwrap();
        assert_eq!(s.append(b"c").unwrap(), Appended { seq: 3, durable: true, evicted: 0 });
    }

    /// A segment of `n` records (payloads of 30 bytes) and each record's offset.
    fn seg_of(n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut b = segment_header(1).to_vec();
        let mut off = Vec::new();
        for seq in 1..=n {
            off.push(b.len());
            frame_record(seq, &[seq as u8; 30], &mut b);
        }
        (b, off)
    }

    #[test]
    fn flipped_records_are_listed_one_by_one_and_resynced_past() {
        let (mut b, off) = seg_of(6);
        for i in [1, 2, 4] {
            b[off[i] + REC_HEADER_LEN + 1] ^= 1;
        }
        let sc = scan_segment(&b);
        assert_eq!(sc.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 4, 6]);
        let bad: Vec<u64> = sc.corrupt.iter().map(|c| c.0).collect();
        assert_eq!(bad, vec![off[1] as u64, off[2] as u64, off[4] as u64]);
        assert!(sc.corrupt.iter().all(|c| c.1 == 50 && c.2 == "record crc mismatch"));
        assert_eq!(sc.torn, None);
    }

    #[test]
    fn complete_bad_last_record_is_corrupt_incomplete_one_is_torn() {
        let (mut b, off) = seg_of(3);
        b[off[2] + REC_HEADER_LEN] ^= 0x80;
        let sc = scan_segment(&b);
        assert_eq!((sc.corrupt.len(), sc.torn), (1, None));
        let (b, off) = seg_of(3);
        for keep in 1..50 {
            let sc = scan_segment(&b[..off[2] + keep]);
            assert_eq!(sc.torn, Some((off[2] as u64, keep as u64)), "keep {keep}");
            assert!(sc.corrupt.is_empty(), "keep {keep}");
        }
        // Garbage at the end is not a frame at all: corruption.
        let mut g = b.clone();
        g.extend_from_slice(b"garbage!");
        let sc = scan_segment(&g);
        assert_eq!((sc.corrupt.len(), sc.torn), (1, None));
    }

    #[test]
    fn recovery_keeps_corrupt_records_and_appends_in_a_new_segment() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = SegmentStore::open(d.path(), cfg()).unwrap();
        for i in 0..4u8 {
            s.append(&[i; 30]).unwrap();
        }
        drop(s);
        let p = d.path().join(segment_name(1));
        let mut b = fs::read(&p).unwrap();
        let n = b.len();
        b[n - 3] ^= 4; // the last record, complete and committed
        fs::write(&p, &b).unwrap();
        let (mut s, r) = SegmentStore::open(d.path(), cfg()).unwrap();
        assert_eq!((r.bytes_truncated, r.corrupt.len(), r.records_ok), (0, 1, 3));
        assert_eq!(s.append(b"next").unwrap().seq, 5, "the unreadable record's seq is not reused");
        assert_eq!(fs::read(&p).unwrap().len(), n);
        assert_eq!(s.segment_count(), 2);
    }

    #[test]
    fn fsync_policy_parses() {
        assert_eq!(FsyncPolicy::parse("every_record").unwrap(), FsyncPolicy::EveryRecord);
        assert_eq!(FsyncPolicy::parse("interval:250").unwrap(), FsyncPolicy::Interval(Duration::from_millis(250)));
        assert!(FsyncPolicy::parse("sometimes").is_err());
    }
}
