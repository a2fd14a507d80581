//! Frames in pieces: the rig splits an encoded image into [`CHUNK_BYTES`] chunks ([`chunk_frame`]); the runtime
//! puts them back together in a few preallocated slots ([`Reassembler`]). Freshest wins: once a frame is complete,
//! older frames still in flight are dropped, and chunks of frames older than it are late. Every such loss is
//! counted; nothing waits for a missing chunk.

use super::{Body, Pacing, WireFormat, CHUNK_BYTES};

/// What every chunk of one frame repeats about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    pub frame: u64,
    pub chunks: u16,
    pub bytes: u32,
    pub captured_us: u64,
    pub pacing: Pacing,
    pub format: WireFormat,
    pub width: u16,
    pub height: u16,
}

/// The chunks of one encoded frame, in order, ready to wrap in datagrams. `None` when the frame is too large for
/// the protocol (more than `u16::MAX` chunks) or empty.
pub fn chunk_frame<'a>(meta: FrameMeta, encoded: &'a [u8]) -> Option<impl Iterator<Item = Body<'a>> + 'a> {
    let chunks = encoded.len().div_ceil(CHUNK_BYTES);
    if chunks == 0 || chunks > u16::MAX as usize || encoded.len() > u32::MAX as usize {
        return None;
    }
    let m = FrameMeta { chunks: chunks as u16, bytes: encoded.len() as u32, ..meta };
    Some(encoded.chunks(CHUNK_BYTES).enumerate().map(move |(i, data)| Body::FrameChunk {
        frame: m.frame,
        chunk: i as u16,
        chunks: m.chunks,
        bytes: m.bytes,
        captured_us: m.captured_us,
        pacing: m.pacing,
        format: m.format,
        width: m.width,
        height: m.height,
        data,
    }))
}

/// Losses the reassembler counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub completed: u64,
    /// Frames given up with chunks missing (evicted, or overtaken by a newer complete frame).
    pub incomplete: u64,
    /// Chunks of frames older than the newest complete one.
    pub late_chunks: u64,
    pub duplicate_chunks: u64,
    /// Chunks whose fields contradict each other or the frame (sizes, counts, a frame larger than the board's).
    pub bad_chunks: u64,
}

struct Slot {
    meta: Option<FrameMeta>,
    received: u16,
    have: Vec<u64>,
    data: Vec<u8>,
}

/// A frame put back together: its fields and its encoded bytes.
pub struct Assembled<'a> {
    pub meta: FrameMeta,
    pub data: &'a [u8],
}

/// Reassembles chunked frames into buffers allocated once, at construction.
pub struct Reassembler {
    slots: Vec<Slot>,
    max_bytes: usize,
    newest_complete: Option<u64>,
    pub stats: ReassemblyStats,
}

impl Reassembler {
    /// `slots` frames in flight at once, each at most `max_bytes` encoded.
    pub fn new(slots: usize, max_bytes: usize) -> Reassembler {
        let words = max_bytes.div_ceil(CHUNK_BYTES).div_ceil(64);
        let slots = (0..slots.max(1))
            .map(|_| Slot { meta: None, received: 0, have: vec![0; words], data: vec![0; max_bytes] })
            .collect();
        Reassembler { slots, max_bytes, newest_complete: None, stats: ReassemblyStats::default() }
    }

    /// Take one chunk; returns the frame when this chunk completed it.
    pub fn push(&mut self, meta: FrameMeta, chunk: u16, data: &[u8]) -> Option<Assembled<'_>> {
        if !self.plausible(&meta, chunk, data) {
            self.stats.bad_chunks += 1;
            return None;
        }
        if self.newest_complete.is_some_and(|n| meta.frame <= n) {
            self.stats.late_chunks += 1;
            return None;
        }
        let i = self.slot_for(&meta)?;
        let slot = &mut self.slots[i];
        let (word, bit) = (chunk as usize / 64, 1u64 << (chunk % 64));
        if slot.have[word] & bit != 0 {
            self.stats.duplicate_chunks += 1;
            return None;
        }
        slot.have[word] |= bit;
        slot.received += 1;
        let at = chunk as usize * CHUNK_BYTES;
        slot.data[at..at + data.len()].copy_from_slice(data);
        if slot.received < meta.chunks {
            return None;
        }
        self.complete(i, meta)
    }

    fn plausible(&self, m: &FrameMeta, chunk: u16, data: &[u8]) -> bool {
        let bytes = m.bytes as usize;
        if bytes == 0 || bytes > self.max_bytes || m.chunks as usize != bytes.div_ceil(CHUNK_BYTES) {
            return false;
        }
        let want = if chunk + 1 == m.chunks { bytes - (m.chunks as usize - 1) * CHUNK_BYTES } else { CHUNK_BYTES };
        chunk < m.chunks && data.len() == want
    }

    /// The slot already holding this frame, else a free one, else the oldest frame's (dropped as incomplete).
    fn slot_for(&mut self, meta: &FrameMeta) -> Option<usize> {
        if let Some(i) = self.slots.iter().position(|s| s.meta.is_some_and(|m| m.frame == meta.frame)) {
            if self.slots[i].meta != Some(*meta) {
                self.stats.bad_chunks += 1; // the same frame id with other fields: not one frame
                return None;
            }
            return Some(i);
        }
        let i = match self.slots.iter().position(|s| s.meta.is_none()) {
            Some(i) => i,
            None => {
                let (i, _) = self.slots.iter().enumerate().min_by_key(|(_, s)| s.meta.map_or(0, |m| m.frame))?;
                self.stats.incomplete += 1;
                i
            }
        };
        let s = &mut self.slots[i];
        s.meta = Some(*meta);
        s.received = 0;
        s.have.iter_mut().for_each(|w| *w = 0);
        Some(i)
    }

    fn complete(&mut self, i: usize, meta: FrameMeta) -> Option<Assembled<'_>> {
        self.stats.completed += 1;
        self.newest_complete = Some(meta.frame);
        for (j, s) in self.slots.iter_mut().enumerate() {
            if j != i && s.meta.is_some_and(|m| m.frame < meta.frame) {
                s.meta = None;
                self.stats.incomplete += 1;
            }
        }
        self.slots[i].meta = None;
        Some(Assembled { meta, data: &self.slots[i].data[..meta.bytes as usize] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(frame: u64) -> FrameMeta {
        FrameMeta {
            frame,
            chunks: 0,
            bytes: 0,
            captured_us: 0,
            pacing: Pacing::RealTime,
            format: WireFormat::Rgb8,
            width: 40,
            height: 30,
        }
    }

    fn pieces(frame: u64, image: &[u8]) -> Vec<(FrameMeta, u16, Vec<u8>)> {
        chunk_frame(meta(frame), image)
            .unwrap()
            .map(|b| match b {
                Body::FrameChunk { frame, chunk, chunks, bytes, captured_us, pacing, format, width, height, data } => (
                    FrameMeta { frame, chunks, bytes, captured_us, pacing, format, width, height },
                    chunk,
                    data.to_vec(),
                ),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn reorders_and_duplicates_still_give_the_frame_once() {
        let image: Vec<u8> = (0..3600u32).map(|i| (i * 7) as u8).collect();
        let mut p = pieces(1, &image);
        assert_eq!(p.len(), 3);
        p.swap(0, 2);
        let mut r = Reassembler::new(3, 3600);
        assert!(r.push(p[0].0, p[0].1, &p[0].2).is_none());
        assert!(r.push(p[0].0, p[0].1, &p[0].2).is_none());
        assert!(r.push(p[1].0, p[1].1, &p[1].2).is_none());
        let done = r.push(p[2].0, p[2].1, &p[2].2).expect("complete");
        assert_eq!(done.data, &image[..]);
        assert_eq!(r.stats.duplicate_chunks, 1);
        assert!(r.push(p[2].0, p[2].1, &p[2].2).is_none(), "a chunk of a completed frame is late");
        assert_eq!(r.stats.late_chunks, 1);
    }

    #[test]
    fn a_newer_complete_frame_drops_the_older_incomplete_one() {
        let image = vec![9u8; 3000];
        let old = pieces(1, &image);
        let new = pieces(2, &image);
        let mut r = Reassembler::new(3, 3600);
        r.push(old[0].0, old[0].1, &old[0].2);
        for (m, c, d) in &new {
            r.push(*m, *c, d);
        }
        assert_eq!(r.stats.completed, 1);
        assert_eq!(r.stats.incomplete, 1);
        assert!(r.push(old[1].0, old[1].1, &old[1].2).is_none());
        assert_eq!(r.stats.late_chunks, 1);
    }

    #[test]
    fn contradictory_or_oversized_chunks_are_refused() {
        let image = vec![1u8; 3000];
        let p = pieces(1, &image);
        let mut r = Reassembler::new(2, 2000);
        assert!(r.push(p[0].0, p[0].1, &p[0].2).is_none());
        assert_eq!(r.stats.bad_chunks, 1, "larger than the board's frames");
        let mut r = Reassembler::new(2, 3600);
        assert!(r.push(p[0].0, p[0].1, &p[0].2[..10]).is_none());
        assert!(r.push(FrameMeta { chunks: 9, ..p[0].0 }, 0, &p[0].2).is_none());
        assert!(r.push(p[0].0, 7, &p[0].2).is_none());
        r.push(p[0].0, p[0].1, &p[0].2);
        assert!(r.push(FrameMeta { width: 1, ..p[1].0 }, p[1].1, &p[1].2).is_none(), "same id, other frame");
        assert_eq!(r.stats.bad_chunks, 4);
    }

    #[test]
    fn more_frames_in_flight_than_slots_evicts_the_oldest() {
        let image = vec![3u8; 3000];
        let mut r = Reassembler::new(2, 3600);
        for f in 1..=3 {
            let p = pieces(f, &image);
            r.push(p[0].0, p[0].1, &p[0].2);
        }
        assert_eq!(r.stats.incomplete, 1);
        let p = pieces(3, &image);
        assert!(r.push(p[1].0, p[1].1, &p[1].2).is_none());
        assert!(r.push(p[2].0, p[2].1, &p[2].2).is_some());
    }
}
