//! The rtvla vehicle wire protocol, version 1 (documented in `docs/wire-protocol.md`).
//!
//! One postcard-encoded [`Datagram`] per UDP datagram. The runtime sends `Command`s to the vehicle/simulator and
//! receives `State`s from it. Any simulator or rig that speaks this can drive rtvla.

use serde::{Deserialize, Serialize};

use crate::types::{Command, EgoState};

/// Protocol version carried in every datagram; a peer drops datagrams of another version.
pub const WIRE_VERSION: u16 = 1;
/// Largest encoded datagram, in bytes (receive buffers are this big).
pub const MAX_DATAGRAM: usize = 256;

/// One datagram.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Datagram {
    pub version: u16,
    pub body: Body,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Runtime → vehicle: actuate this for control tick `tick`.
    Command { tick: u64, command: Command },
    /// Vehicle → runtime: ego state; `seq` increases with every state sent; `done` ends the episode/route.
    State { seq: u64, ego: EgoState, done: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    Decode,
    Version(u16),
    Encode,
}

/// Encode into `buf`, returning the used prefix. No allocation.
pub fn encode<'a>(body: &Body, buf: &'a mut [u8]) -> Result<&'a [u8], WireError> {
    let d = Datagram { version: WIRE_VERSION, body: *body };
    postcard::to_slice(&d, buf).map(|s| &*s).map_err(|_| WireError::Encode)
}

/// Decode one datagram and check its version. No allocation.
pub fn decode(bytes: &[u8]) -> Result<Body, WireError> {
    let d: Datagram = postcard::from_bytes(bytes).map_err(|_| WireError::Decode)?;
    if d.version != WIRE_VERSION {
        return Err(WireError::Version(d.version));
    }
    Ok(d.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let mut buf = [0u8; MAX_DATAGRAM];
        let body = Body::State {
            seq: 7,
            ego: EgoState { speed_mps: 3.5, target_points: [[10.0, 1.0], [30.0, -2.0]] },
            done: false,
        };
        let bytes = encode(&body, &mut buf).unwrap().to_vec();
        assert_eq!(decode(&bytes).unwrap(), body);
        let mut other = bytes.clone();
        other[0] = 9; // version varint 1 → 9
        assert_eq!(decode(&other), Err(WireError::Version(9)));
        assert_eq!(decode(&bytes[..3]), Err(WireError::Decode));
        assert_eq!(decode(&[]), Err(WireError::Decode));
    }
}
