//! The rtvla wire protocol, version 2 (users read `docs/wire-protocol.md`; this module is its source of truth).
//!
//! Frames and ego state in, commands out, one postcard-encoded [`Datagram`] per UDP datagram of at most
//! [`MAX_DATAGRAM`] bytes. Every datagram names its sender's session (random, chosen at start: a restarted peer
//! is recognised at its first datagram) and a per-session sequence number; with a pre-shared key an HMAC-SHA256
//! tag over all of it follows, so a forged or altered datagram is refused before it is parsed, and a replayed one
//! by its sequence number ([`replay`]). Frames larger than one datagram travel as chunks ([`frames`]).
//!
//! Shared by both ends: the runtime's `net` endpoint (frame source + vehicle link) and the rig side
//! (`rtvla sim serve`, `tools/rtvla_rig.py`).

pub mod frames;
pub mod key;
pub mod replay;

use hmac::{Mac, SimpleHmac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::camera::pixel::PixelFormat;
use crate::types::{Command, EgoState};

pub use key::WireKey;

/// Protocol version, the first field of every datagram. A peer speaking another version is refused by name.
pub const WIRE_VERSION: u16 = 2;
/// Largest datagram either side sends or accepts, in bytes (fits a 1 500-byte Ethernet MTU with IP/UDP headers).
pub const MAX_DATAGRAM: usize = 1400;
/// Length of the HMAC-SHA256 tag that ends every datagram on a keyed link.
pub const TAG_LEN: usize = 32;
/// Image bytes per frame chunk: what is left of [`MAX_DATAGRAM`] after the header, the chunk fields and the tag.
pub const CHUNK_BYTES: usize = 1280;

/// One datagram: who sends it (session + sequence number) and what it carries.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Datagram<'a> {
    pub version: u16,
    /// The sender's session: random per process start, so a restart is told apart from a replay.
    pub session: u64,
    /// Increases by one with every datagram the session sends (replay protection).
    pub seq: u64,
    #[serde(borrow)]
    pub body: Body<'a>,
}

/// Who is speaking (in [`Body::Hello`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// rtvla: receives frames and state, sends commands.
    Runtime,
    /// A simulator, HIL bench or camera rig: sends frames and state, receives commands.
    Rig,
}

/// How the rig paces the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pacing {
    /// The rig waits for the command of frame N before it steps to frame N + 1: deterministic (CI, scoring).
    Lockstep,
    /// The rig runs on its own clock; the runtime takes the freshest frame at each tick.
    RealTime,
}

/// What a datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body<'a> {
    /// Sent by each side at start (and by the runtime until the first frame arrives): announces the session.
    Hello { role: Role },
    /// Runtime → rig: actuate this; computed at control tick `tick` from frame `frame` (the newest frame the
    /// runtime had; in lockstep the rig steps when the command for its current frame arrives).
    Command { tick: u64, frame: u64, command: Command },
    /// Rig → runtime: ego state after step `frame` (the frame with the same id shows this moment). `done` ends the
    /// run. `ttc_s`, `collision`, `infraction`: ground truth where the rig has it (else ∞ / false); they feed the
    /// event triggers only, never the driving.
    State { frame: u64, ego: EgoState, done: bool, ttc_s: f32, collision: bool, infraction: bool },
    /// Rig → runtime: one piece of frame `frame` (bytes `chunk * CHUNK_BYTES ..` of its encoded image).
    FrameChunk {
        frame: u64,
        chunk: u16,
        chunks: u16,
        /// Encoded size of the whole frame, bytes.
        bytes: u32,
        /// When the rig captured or rendered it, µs on the rig's clock (reported, never compared across hosts).
        captured_us: u64,
        pacing: Pacing,
        format: WireFormat,
        width: u16,
        height: u16,
        #[serde(borrow)]
        data: &'a [u8],
    },
}

/// Image encodings a rig may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireFormat {
    Rgb8,
    Yuyv,
    Jpeg,
}

impl WireFormat {
    /// The camera pixel format the frame source converts from.
    pub fn pixel_format(self) -> PixelFormat {
        match self {
            WireFormat::Rgb8 => PixelFormat::Rgb24,
            WireFormat::Yuyv => PixelFormat::Yuyv,
            WireFormat::Jpeg => PixelFormat::Mjpeg,
        }
    }
}

/// Why a datagram was refused. Every variant is counted by the receiver; none ends the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Not a datagram of this protocol (truncated, garbage, trailing bytes).
    Decode,
    /// Another protocol version.
    Version(u16),
    /// The tag is missing or wrong: not sent with our key.
    Auth,
    /// A keyed peer talks to a link with no key configured.
    UnexpectedTag,
    /// Would not fit [`MAX_DATAGRAM`].
    Encode,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Decode => f.write_str("not an rtvla wire datagram"),
            WireError::Version(v) => write!(f, "wire protocol version {v}, this build speaks {WIRE_VERSION}"),
            WireError::Auth => f.write_str("authentication failed (wrong or missing key)"),
            WireError::UnexpectedTag => f.write_str("datagram carries a MAC but no key is configured here"),
            WireError::Encode => write!(f, "datagram larger than {MAX_DATAGRAM} bytes"),
        }
    }
}

type HmacSha256 = SimpleHmac<Sha256>;

fn tag(key: &WireKey, bytes: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key.bytes()).expect("HMAC takes any key length");
    mac.update(bytes);
    mac.finalize().into_bytes().into()
}

/// Encode `d` into `buf` (at least [`MAX_DATAGRAM`] bytes), appending the tag when `key` is set. No allocation.
pub fn encode<'b>(d: &Datagram<'_>, key: Option<&WireKey>, buf: &'b mut [u8]) -> Result<&'b [u8], WireError> {
    let room = buf.len().min(MAX_DATAGRAM) - if key.is_some() { TAG_LEN } else { 0 };
    let n = postcard::to_slice(d, &mut buf[..room]).map_err(|_| WireError::Encode)?.len();
    if let Some(k) = key {
        let t = tag(k, &buf[..n]);
        buf[n..n + TAG_LEN].copy_from_slice(&t);
        return Ok(&buf[..n + TAG_LEN]);
    }
    Ok(&buf[..n])
}

/// Decode one datagram: version first (a mismatch is named), then the tag when `key` is set (nothing
/// unauthenticated is parsed), then the rest. No allocation; frame data borrows from `bytes`.
pub fn decode<'a>(bytes: &'a [u8], key: Option<&WireKey>) -> Result<Datagram<'a>, WireError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(WireError::Decode);
    }
    let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(|_| WireError::Decode)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let signed = match key {
        Some(k) => {
            let split = bytes.len().checked_sub(TAG_LEN).ok_or(WireError::Auth)?;
            let (signed, got) = bytes.split_at(split);
            let want = tag(k, signed);
            // Constant-time compare: the tag must not leak how many bytes matched.
            if got.iter().zip(want.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
                return Err(WireError::Auth);
            }
            signed
        }
        None => bytes,
    };
    let (d, rest) = postcard::take_from_bytes::<Datagram<'a>>(signed).map_err(|_| WireError::Decode)?;
    if !rest.is_empty() {
        return Err(if key.is_none() && rest.len() == TAG_LEN { WireError::UnexpectedTag } else { WireError::Decode });
    }
    Ok(d)
}

/// A random session id for this process (never 0, which marks "no session yet").
pub fn new_session_id() -> u64 {
    loop {
        let s: u64 = rand::random();
        if s != 0 {
            return s;
        }
    }
}

#[cfg(test)]
mod tests;
