use rand::{Rng, SeedableRng};

use super::frames::{FrameMeta, Reassembler};
use super::*;

fn key(b: u8) -> WireKey {
    WireKey::from_bytes(&[b; 32]).unwrap()
}

fn state(seq: u64) -> Datagram<'static> {
    Datagram {
        version: WIRE_VERSION,
        session: 42,
        seq,
        body: Body::State {
            frame: seq,
            ego: EgoState { speed_mps: 3.5, target_points: [[10.0, 1.0], [30.0, -2.0]] },
            done: false,
            ttc_s: f32::INFINITY,
            collision: false,
            infraction: false,
        },
    }
}

#[test]
fn round_trip_with_and_without_a_key() {
    let mut buf = [0u8; MAX_DATAGRAM];
    let d = state(7);
    let plain = encode(&d, None, &mut buf).unwrap().to_vec();
    assert_eq!(decode(&plain, None).unwrap(), d);
    let k = key(1);
    let signed = encode(&d, Some(&k), &mut buf).unwrap().to_vec();
    assert_eq!(signed.len(), plain.len() + TAG_LEN);
    assert_eq!(decode(&signed, Some(&k)).unwrap(), d);
}

#[test]
fn version_key_and_tampering_are_told_apart() {
    let mut buf = [0u8; MAX_DATAGRAM];
    let k = key(1);
    let signed = encode(&state(1), Some(&k), &mut buf).unwrap().to_vec();
    assert_eq!(decode(&signed, Some(&key(2))), Err(WireError::Auth), "wrong key");
    let plain = encode(&state(1), None, &mut buf).unwrap().to_vec();
    assert_eq!(decode(&plain, Some(&k)), Err(WireError::Auth), "unauthenticated on a keyed link");
    assert_eq!(decode(&signed, None), Err(WireError::UnexpectedTag), "keyed peer, no key here");
    let mut flipped = signed.clone();
    flipped[5] ^= 0x10;
    assert_eq!(decode(&flipped, Some(&k)), Err(WireError::Auth), "altered in flight");
    let mut v1 = plain.clone();
    v1[0] = 1;
    assert_eq!(decode(&v1, None), Err(WireError::Version(1)));
    assert!(WireError::Version(1).to_string().contains("version 1, this build speaks 2"));
    assert_eq!(decode(&plain[..4], None), Err(WireError::Decode));
    assert_eq!(decode(&[], None), Err(WireError::Decode));
}

#[test]
fn a_frame_survives_chunking_and_signing() {
    let k = key(3);
    let image: Vec<u8> = (0..40 * 30 * 3).map(|i| (i % 251) as u8).collect();
    let meta = FrameMeta {
        frame: 5,
        chunks: 0,
        bytes: 0,
        captured_us: 123,
        pacing: Pacing::Lockstep,
        format: WireFormat::Rgb8,
        width: 40,
        height: 30,
    };
    let mut r = Reassembler::new(2, image.len());
    let mut out = None;
    let mut buf = [0u8; MAX_DATAGRAM];
    for (seq, body) in frames::chunk_frame(meta, &image).unwrap().enumerate() {
        let bytes = encode(&Datagram { version: WIRE_VERSION, session: 1, seq: seq as u64, body }, Some(&k), &mut buf)
            .unwrap()
            .to_vec();
        assert!(bytes.len() <= MAX_DATAGRAM, "{} bytes", bytes.len());
        if let Body::FrameChunk { frame, chunk, chunks, bytes, captured_us, pacing, format, width, height, data } =
            decode(&bytes, Some(&k)).unwrap().body
        {
            let m = FrameMeta { frame, chunks, bytes, captured_us, pacing, format, width, height };
            if let Some(a) = r.push(m, chunk, data) {
                out = Some(a.data.to_vec());
            }
        }
    }
    assert_eq!(out.unwrap(), image);
}

/// A full chunk with the largest field values still fits one datagram with its tag.
#[test]
fn the_largest_chunk_fits_one_datagram() {
    let data = [0xffu8; CHUNK_BYTES];
    let body = Body::FrameChunk {
        frame: u64::MAX,
        chunk: u16::MAX,
        chunks: u16::MAX,
        bytes: u32::MAX,
        captured_us: u64::MAX,
        pacing: Pacing::RealTime,
        format: WireFormat::Jpeg,
        width: u16::MAX,
        height: u16::MAX,
        data: &data,
    };
    let mut buf = [0u8; MAX_DATAGRAM];
    let d = Datagram { version: WIRE_VERSION, session: u64::MAX, seq: u64::MAX, body };
    assert!(encode(&d, Some(&key(1)), &mut buf).is_ok());
}

/// ≥ 1 M inputs: random bytes, and valid datagrams with random bytes flipped, truncated or extended, decoded with
/// and without a key; every decoded frame chunk goes through a reassembler. Nothing may panic.
#[test]
fn the_decoder_survives_a_million_hostile_inputs() {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(0x5eed);
    let k = key(9);
    let mut r = Reassembler::new(3, 64 * 1024);
    let mut buf = [0u8; MAX_DATAGRAM + 64];
    let mut valid = Vec::new();
    let mut enc = [0u8; MAX_DATAGRAM];
    let image = vec![7u8; 5000];
    let meta = FrameMeta {
        frame: 1,
        chunks: 0,
        bytes: 0,
        captured_us: 0,
        pacing: Pacing::RealTime,
        format: WireFormat::Jpeg,
        width: 64,
        height: 48,
    };
    for body in frames::chunk_frame(meta, &image).unwrap().chain([state(1).body]) {
        let d = Datagram { version: WIRE_VERSION, session: 3, seq: 1, body };
        valid.push(encode(&d, None, &mut enc).unwrap().to_vec());
        valid.push(encode(&d, Some(&k), &mut enc).unwrap().to_vec());
    }
    let (mut decoded, mut n) = (0u64, 0u64);
    while n < 1_000_000 {
        let len = if rng.random_bool(0.5) {
            let v = &valid[rng.random_range(0..valid.len())];
            let len = (v.len() as i64 + rng.random_range(-8..8)).clamp(0, buf.len() as i64) as usize;
            let m = len.min(v.len());
            buf[..m].copy_from_slice(&v[..m]);
            for _ in 0..rng.random_range(0..4) {
                if len > 0 {
                    buf[rng.random_range(0..len)] ^= 1 << rng.random_range(0..8);
                }
            }
            len
        } else {
            let len = rng.random_range(0..buf.len());
            rng.fill(&mut buf[..len]);
            len
        };
        for key in [None, Some(&k)] {
            n += 1;
            if let Ok(d) = decode(&buf[..len], key) {
                decoded += 1;
                if let Body::FrameChunk {
                    frame,
                    chunk,
                    chunks,
                    bytes,
                    captured_us,
                    pacing,
                    format,
                    width,
                    height,
                    data,
                } = d.body
                {
                    let m = FrameMeta { frame, chunks, bytes, captured_us, pacing, format, width, height };
                    let _ = r.push(m, chunk, data);
                }
            }
        }
    }
    assert!(decoded > 1000, "the mutations must reach the body decoder too ({decoded} decoded)");
}
