//! High-water marks that survive recovery: `DIR/.next_ids` holds the next store sequence number and the next event
//! id. Recovery may cut a torn tail and readers skip corrupt records, so "highest readable record + 1" can go back
//! and hand out an id that an earlier export already used for another event; this file cannot go back. It is
//! rewritten after every append through a temp file, fsync and atomic rename (fsync skipped when the store's
//! policy is `never`), and carries its own CRC32C so a damaged file is ignored rather than trusted.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// File name of the high-water marks inside a store directory.
pub const HWM_FILE: &str = ".next_ids";

/// Numbers that must never be handed out twice. Zero means unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HighWater {
    /// Sequence number the next record gets (at least).
    pub next_seq: u64,
    /// Event id the next snapshot gets (at least).
    pub next_event_id: u64,
    /// Highest seq whose write and fsync had returned when this was written: a record up to here was committed,
    /// so finding it cut short is damage (e.g. a flipped length field), never a torn write.
    pub committed_seq: u64,
}

impl HighWater {
    fn body(&self) -> String {
        format!(
            "next_seq {}\nnext_event_id {}\ncommitted_seq {}\n",
            self.next_seq, self.next_event_id, self.committed_seq
        )
    }

    /// Parse the file text; `None` when any line is missing or the checksum does not match.
    fn parse(text: &str) -> Option<Self> {
        let (body, crc_line) = text.rsplit_once("crc32c ")?;
        let crc = u32::from_str_radix(crc_line.trim(), 16).ok()?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return None;
        }
        let field = |key: &str| body.lines().find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok());
        Some(HighWater {
            next_seq: field("next_seq ")?,
            next_event_id: field("next_event_id ")?,
            committed_seq: field("committed_seq ")?,
        })
    }
}

/// Read the marks of `dir`; a missing or damaged file reads as zeros (unknown), never as an error.
pub fn read(dir: &Path) -> HighWater {
    fs::read_to_string(dir.join(HWM_FILE)).ok().and_then(|t| HighWater::parse(&t)).unwrap_or_default()
}

/// Replace the marks of `dir` atomically (temp file + rename); with `durable`, fsync the file and the directory
/// so the marks survive power loss.
pub fn write(dir: &Path, hw: HighWater, durable: bool) -> io::Result<()> {
    let body = hw.body();
    let text = format!("{body}crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()));
    let tmp = dir.join(".next_ids.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    fs::rename(&tmp, dir.join(HWM_FILE))?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage_reads_as_unknown() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()), HighWater::default());
        let hw = HighWater { next_seq: 42, next_event_id: 7, committed_seq: 41 };
        write(d.path(), hw, true).unwrap();
        assert_eq!(read(d.path()), hw);
        let p = d.path().join(HWM_FILE);
        let t = fs::read_to_string(&p).unwrap().replace("next_seq 42", "next_seq 40");
        fs::write(&p, t).unwrap();
        assert_eq!(read(d.path()), HighWater::default());
    }
}
