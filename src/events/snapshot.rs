//! The event snapshot: one self-contained, versioned, postcard-encoded record (≤ 64 KiB) per safety-critical moment.
//!
//! Every variable-length field is a `heapless` container, so a decoded snapshot has a fixed size, decoding never
//! allocates from a length prefix, and an over-long prefix is an error.

use serde::{Deserialize, Serialize};

use crate::types::{Command, Point, PATH_POINTS, SPEED_POINTS};

/// Schema version, the first field of every snapshot. Bump on any incompatible change. 2: `model_id` appended
/// (schema-1 records still decode, with an unknown model). 3: `run` ([`RunInfo`]) appended, trigger kinds
/// `collision` and `infraction` added at the end of the enum (schema-1/2 records still decode, with an unknown run).
pub const SCHEMA_VERSION: u16 = 3;
/// Bytes of a [`Snapshot::model_id`]: the first bytes of the driving graph's sha256.
pub const MODEL_ID_BYTES: usize = 8;
/// Largest encoded snapshot.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024;
/// Most pre-window ticks a snapshot can hold.
pub const MAX_PRE_TICKS: usize = 80;
/// Most post-window ticks a snapshot can hold.
pub const MAX_POST_TICKS: usize = 40;
/// Most keyframes per snapshot: three from the lead-up (−2 s, −1 s, −0.5 s with a 2 s pre-window), the trigger
/// tick, and two after it.
pub const MAX_KEYFRAMES: usize = 6;
/// Most visual-feature values per keyframe (e.g. 32 tokens × 64 dims).
pub const MAX_FEATURES: usize = 2048;
/// Largest JPEG thumbnail a record may hold (the decoder's bound: schema-1/2 records were written with up to 8 KiB).
pub const MAX_JPEG_BYTES: usize = 8 * 1024;
/// Largest JPEG thumbnail the writer stores now (it lowers the quality until one fits): six keyframes of 8 KiB
/// would not fit the 64 KiB record beside the windows, 3.5 KiB does (a 96 × 48 thumbnail is ~2 KiB at q75).
pub const JPEG_BUDGET_BYTES: usize = 3584;
/// Thumbnail width, pixels.
pub const THUMB_W: usize = 96;
/// Thumbnail height, pixels.
pub const THUMB_H: usize = 48;
/// Bytes of a raw RGB thumbnail.
pub const THUMB_RGB_BYTES: usize = THUMB_W * THUMB_H * 3;
/// Cause text capacity.
pub const CAUSE_LEN: usize = 64;
/// Run id capacity ("20261130T045012Z-1a2b" is 21).
pub const RUN_ID_LEN: usize = 24;
/// Board, scenario and policy name capacity.
pub const NAME_LEN: usize = 32;

/// Telemetry flag: the supervisor fell back (stop / safe command).
pub const FLAG_FALLBACK: u16 = 1 << 0;
/// Telemetry flag: the tick missed its deadline.
pub const FLAG_DEADLINE_MISS: u16 = 1 << 1;
/// Telemetry flag: an external / manual trigger was requested this tick.
pub const FLAG_EXTERNAL: u16 = 1 << 2;
/// Telemetry flag: the camera frame was stale.
pub const FLAG_STALE_FRAME: u16 = 1 << 3;
/// Telemetry flag: the model produced a non-finite output.
pub const FLAG_NAN: u16 = 1 << 4;
/// Telemetry flag: the vehicle hit something this tick (the simulator's ground truth; a bumper / airbag signal on
/// a car that has one).
pub const FLAG_COLLISION: u16 = 1 << 5;
/// Telemetry flag: a traffic-rule infraction this tick (red light, stop sign, route deviation; simulator).
pub const FLAG_INFRACTION: u16 = 1 << 6;

/// Why an event was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TriggerKind {
    /// Brake ≥ threshold at speed, or strong deceleration.
    HardBrake,
    /// |Δsteer|/dt above threshold.
    SteerRate,
    /// Time-to-collision below threshold.
    NearMiss,
    /// The loop missed its deadline.
    DeadlineMiss,
    /// The supervisor fell back.
    Fallback,
    /// Manual / external request (signal, UDP).
    External,
    /// The vehicle hit something (appended in schema 3: postcard numbers variants, older records keep theirs).
    Collision,
    /// A traffic-rule infraction: red light, stop sign, route deviation.
    Infraction,
}

impl TriggerKind {
    /// All kinds, in index order.
    pub const ALL: [TriggerKind; 8] = [
        TriggerKind::HardBrake,
        TriggerKind::SteerRate,
        TriggerKind::NearMiss,
        TriggerKind::DeadlineMiss,
        TriggerKind::Fallback,
        TriggerKind::External,
        TriggerKind::Collision,
        TriggerKind::Infraction,
    ];

    /// All kinds, most severe first: collision > near miss > infraction > hard brake > fallback > deadline miss >
    /// steer rate > external. What happened to the world outranks what the car did about it, which outranks the
    /// computer's own health; a manual request is least. The order decides which kind names a tick on which
    /// several fire, and which events may cut an open one short ([`TriggerKind::outranks`]).
    pub const BY_SEVERITY: [TriggerKind; 8] = [
        TriggerKind::Collision,
        TriggerKind::NearMiss,
        TriggerKind::Infraction,
        TriggerKind::HardBrake,
        TriggerKind::Fallback,
        TriggerKind::DeadlineMiss,
        TriggerKind::SteerRate,
        TriggerKind::External,
    ];

    /// Stable index (0..8).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Severity rank: higher is more severe (see [`TriggerKind::BY_SEVERITY`]).
    pub fn severity(self) -> u8 {
        let pos = TriggerKind::BY_SEVERITY.iter().position(|k| *k == self).unwrap_or(0);
        (TriggerKind::BY_SEVERITY.len() - pos) as u8
    }

    /// Strictly more severe than `other`: a cool-down or an open event of `other` must not swallow `self`.
    pub fn outranks(self, other: TriggerKind) -> bool {
        self.severity() > other.severity()
    }

    /// snake_case name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            TriggerKind::HardBrake => "hard_brake",
            TriggerKind::SteerRate => "steer_rate",
            TriggerKind::NearMiss => "near_miss",
            TriggerKind::DeadlineMiss => "deadline_miss",
            TriggerKind::Fallback => "fallback",
            TriggerKind::External => "external",
            TriggerKind::Collision => "collision",
            TriggerKind::Infraction => "infraction",
        }
    }
}

/// What the loop records every tick (fixed size, `Copy`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TickTelemetry {
    /// Monotonic time of the tick, µs.
    pub time_us: u64,
    /// Tick counter.
    pub tick: u64,
    /// Ego speed, m/s.
    pub speed: f32,
    /// The two route target points, ego frame.
    pub target_points: [Point; 2],
    /// Predicted path (20 points, 1 m apart).
    pub path: [Point; PATH_POINTS],
    /// Predicted speed waypoints (10, 0.25 s apart).
    pub speed_wps: [Point; SPEED_POINTS],
    /// Command sent this tick.
    pub command: Command,
    /// Whole tick duration, ms.
    pub tick_ms: f32,
    /// Inference duration, ms.
    pub infer_ms: f32,
    /// Time to collision, s (`f32::INFINITY` when nothing is ahead or unknown).
    pub ttc_s: f32,
    /// `FLAG_*` bits.
    pub flags: u16,
}

impl Default for TickTelemetry {
    fn default() -> Self {
        TickTelemetry {
            time_us: 0,
            tick: 0,
            speed: 0.0,
            target_points: [[0.0; 2]; 2],
            path: [[0.0; 2]; PATH_POINTS],
            speed_wps: [[0.0; 2]; SPEED_POINTS],
            command: Command::default(),
            tick_ms: 0.0,
            infer_ms: 0.0,
            ttc_s: f32::INFINITY,
            flags: 0,
        }
    }
}

/// One keyframe: the student's visual features (f16 bits) and a JPEG thumbnail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Keyframe {
    /// Tick of this keyframe.
    pub tick: u64,
    /// Monotonic time, µs.
    pub time_us: u64,
    /// Feature tensor shape `[tokens, dims]`.
    pub shape: [u16; 2],
    /// Features as IEEE f16, little-endian bytes (2 per value), row-major `[tokens × dims]`. Bytes, not `u16`,
    /// because postcard would varint-encode most f16 bit patterns in 3 bytes.
    pub features: heapless::Vec<u8, { MAX_FEATURES * 2 }>,
    /// Thumbnail width (0 when absent).
    pub thumb_w: u16,
    /// Thumbnail height.
    pub thumb_h: u16,
    /// Baseline JPEG bytes (empty when absent).
    pub jpeg: heapless::Vec<u8, MAX_JPEG_BYTES>,
}

impl Keyframe {
    /// Features converted back to f32.
    pub fn features_f32(&self) -> impl Iterator<Item = f32> + '_ {
        self.features.chunks_exact(2).map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
    }
}

/// Which run wrote a snapshot: set once when `drive` starts and copied into every snapshot (fixed-size fields, so
/// the copy on the loop thread allocates nothing). A shared, cumulative store holds many runs; these fields tell
/// them apart (`store ls`, the HTML report).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Chosen once per `drive` run: UTC start time and 4 random hex digits ("20261130T045012Z-1a2b"). Empty: unknown.
    pub run_id: heapless::String<RUN_ID_LEN>,
    /// Board profile name.
    pub board: heapless::String<NAME_LEN>,
    /// Who drove: "model" (the student) or "expert" (the simulator's privileged expert).
    pub policy: heapless::String<NAME_LEN>,
    /// sha256 of the student's ONNX file (its manifest's `sha256`); all zero when no model drove or unknown.
    pub model_sha256: [u8; 32],
    /// Simulator scenario, when the simulator was the vehicle (None on a real vehicle).
    pub scenario: Option<heapless::String<NAME_LEN>>,
    /// Simulator seed, with `scenario`.
    pub seed: Option<u64>,
}

impl RunInfo {
    /// Worst-case postcard size: three strings (length byte + text), the hash, the option tags, a varint u64.
    pub const MAX_ENCODED: usize = (1 + RUN_ID_LEN) + 2 * (1 + NAME_LEN) + 32 + (1 + 1 + NAME_LEN) + (1 + 10);

    /// A manifest's sha256 text as bytes (all zero when it is not 64 hex digits: unknown).
    pub fn sha256_from_hex(text: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        if hex::decode_to_slice(text.trim(), &mut out).is_err() {
            out = [0; 32];
        }
        out
    }

    /// `model_sha256` as hex, or `None` when unknown.
    pub fn model_sha256_hex(&self) -> Option<String> {
        (self.model_sha256 != [0; 32]).then(|| hex::encode(self.model_sha256))
    }

    /// Copy `text` into a bounded string, cut at a character boundary when too long (never an error).
    pub fn bounded<const N: usize>(text: &str) -> heapless::String<N> {
        let mut out = heapless::String::new();
        for c in text.chars() {
            if out.push(c).is_err() {
                break;
            }
        }
        out
    }
}

/// One event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always [`SCHEMA_VERSION`] when written; first on the wire.
    pub schema_version: u16,
    /// Event id (unique per run; the store seq is unique per store).
    pub event_id: u64,
    /// Why.
    pub trigger: TriggerKind,
    /// Human-readable cause ("brake 1.00 at 8.3 m/s").
    pub cause: heapless::String<CAUSE_LEN>,
    /// Wall-clock time of the trigger, µs since the Unix epoch.
    pub wall_time_us: u64,
    /// Monotonic time of the trigger tick, µs.
    pub mono_time_us: u64,
    /// Tick that fired the trigger.
    pub trigger_tick: u64,
    /// Ticks before the trigger (oldest first); the trigger tick is the last one.
    pub pre: heapless::Vec<TickTelemetry, MAX_PRE_TICKS>,
    /// Ticks after the trigger.
    pub post: heapless::Vec<TickTelemetry, MAX_POST_TICKS>,
    /// Up to three keyframes.
    pub keyframes: heapless::Vec<Keyframe, MAX_KEYFRAMES>,
    /// The driving graph whose features the keyframes hold: the first [`MODEL_ID_BYTES`] of its ONNX file's sha256
    /// (all zero: unknown — a schema-1 record). Features mean something only to the language branch trained on that
    /// graph; its manifest lists the graphs it reads, so `explain` never decodes another model's features. Last on
    /// the wire, so a schema-1 record is this record without it (and without `run`).
    pub model_id: [u8; MODEL_ID_BYTES],
    /// The run that wrote it (schema 3; default — all empty — for older records). Last on the wire, so a schema-2
    /// record is this record without it.
    pub run: RunInfo,
}

impl Snapshot {
    /// An empty snapshot (boxed: it is ~60 KiB).
    pub fn new_boxed() -> Box<Snapshot> {
        Box::new(Snapshot {
            schema_version: SCHEMA_VERSION,
            event_id: 0,
            trigger: TriggerKind::External,
            cause: heapless::String::new(),
            wall_time_us: 0,
            mono_time_us: 0,
            trigger_tick: 0,
            pre: heapless::Vec::new(),
            post: heapless::Vec::new(),
            keyframes: heapless::Vec::new(),
            model_id: [0; MODEL_ID_BYTES],
            run: RunInfo::default(),
        })
    }

    /// Clear every field for reuse (no deallocation: all fields are inline).
    pub fn clear(&mut self) {
        self.schema_version = SCHEMA_VERSION;
        self.event_id = 0;
        self.cause.clear();
        self.wall_time_us = 0;
        self.mono_time_us = 0;
        self.trigger_tick = 0;
        self.pre.clear();
        self.post.clear();
        self.keyframes.clear();
        self.model_id = [0; MODEL_ID_BYTES];
        self.run = RunInfo::default();
    }

    /// `model_id` as hex, or `None` when unknown (schema 1).
    pub fn model_id_hex(&self) -> Option<String> {
        (self.model_id != [0; MODEL_ID_BYTES]).then(|| hex::encode(self.model_id))
    }

    /// Window duration from the first to the last tick, seconds.
    pub fn duration_s(&self) -> f64 {
        let first = self.pre.first().or(self.post.first()).map(|t| t.time_us);
        let last = self.post.last().or(self.pre.last()).map(|t| t.time_us);
        match (first, last) {
            (Some(a), Some(b)) if b >= a => (b - a) as f64 * 1e-6,
            _ => 0.0,
        }
    }

    /// Encode into `buf` (use a [`MAX_SNAPSHOT_BYTES`] buffer); returns the used prefix. Errors, never panics,
    /// when the snapshot does not fit.
    pub fn encode_into<'a>(&self, buf: &'a mut [u8]) -> anyhow::Result<&'a mut [u8]> {
        let cap = buf.len().min(MAX_SNAPSHOT_BYTES);
        postcard::to_slice(self, &mut buf[..cap])
            .map_err(|e| anyhow::anyhow!("snapshot {} does not fit in {cap} bytes: {e}", self.event_id))
    }

    /// Encode into a new Vec (tests, tools).
    pub fn encode(&self) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0u8; MAX_SNAPSHOT_BYTES];
        let n = self.encode_into(&mut buf)?.len();
        buf.truncate(n);
        Ok(buf)
    }

    /// Decode and validate. Rejects garbage, other schema versions and trailing bytes; never panics, never allocates
    /// from a length prefix (all containers are bounded). Older records decode too (their `schema_version` stays,
    /// so a reader can tell): schema 2 with an unknown `run`, schema 1 also with an unknown `model_id`.
    pub fn decode(bytes: &[u8]) -> anyhow::Result<Box<Snapshot>> {
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            anyhow::bail!("snapshot of {} bytes exceeds {MAX_SNAPSHOT_BYTES}", bytes.len());
        }
        // Check the version before decoding the rest, so a future schema fails with a clear message.
        let (version, _) =
            postcard::take_from_bytes::<u16>(bytes).map_err(|e| anyhow::anyhow!("snapshot header: {e}"))?;
        // An older record is a newer one cut before the fields appended since: decode it with their defaults.
        let mut suffix = [0u8; MODEL_ID_BYTES + RunInfo::MAX_ENCODED];
        let model_id_len = match version {
            SCHEMA_VERSION => None,
            2 => Some(0),
            1 => Some(MODEL_ID_BYTES),
            _ => anyhow::bail!("snapshot schema version {version} (this build reads 1..={SCHEMA_VERSION})"),
        };
        let upgraded: Vec<u8>;
        let bytes = match model_id_len {
            None => bytes,
            Some(m) => {
                let run = postcard::to_slice(&RunInfo::default(), &mut suffix[m..])
                    .map_err(|e| anyhow::anyhow!("snapshot upgrade: {e}"))?
                    .len();
                upgraded = [bytes, &suffix[..m + run]].concat();
                &upgraded[..]
            }
        };
        let (snap, rest) =
            postcard::take_from_bytes::<Snapshot>(bytes).map_err(|e| anyhow::anyhow!("snapshot decode: {e}"))?;
        if !rest.is_empty() {
            anyhow::bail!("snapshot has {} trailing bytes", rest.len());
        }
        for k in &snap.keyframes {
            if k.shape[0] as usize * k.shape[1] as usize * 2 != k.features.len() {
                anyhow::bail!("keyframe at tick {}: shape {:?} ≠ {} feature bytes", k.tick, k.shape, k.features.len());
            }
        }
        Ok(Box::new(snap))
    }

    /// Worst-case encoded size for windows of `pre`/`post` ticks and `keyframes` full keyframes: checked at start-up
    /// so a configuration that could outgrow the 64 KiB record fails early (copper-rs lesson).
    pub fn worst_case_size(pre: usize, post: usize, keyframes: usize, features: usize) -> usize {
        // postcard: varint u64 ≤ 10, u16 ≤ 3, f32 = 4, lengths ≤ 3 (all < 2^21).
        let tick = 10 + 10 + 4 + 4 * 2 * (2 + PATH_POINTS + SPEED_POINTS) + 3 * 4 + 4 + 4 + 4 + 3;
        let kf = 10 + 10 + 2 * 3 + 3 + features * 2 + 3 + 3 + 3 + JPEG_BUDGET_BYTES;
        // version, event id, trigger, cause (length + text), 3 times, the pre/post/keyframes lengths, model id, run
        let fixed = 3 + 10 + 1 + 1 + CAUSE_LEN + 10 + 10 + 10 + 3 + 3 + 1 + MODEL_ID_BYTES + RunInfo::MAX_ENCODED;
        fixed + pre * tick + post * tick + keyframes * kf
    }
}

/// f32 → f16 bit pattern (round to nearest even; NaN/inf preserved).
#[inline]
pub fn f32_to_f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A full-size snapshot for tests: windows, three keyframes with features and fake JPEG bytes.
    pub(crate) fn sample(pre: usize, post: usize, kfs: usize) -> Box<Snapshot> {
        let mut s = Snapshot::new_boxed();
        s.event_id = 42;
        s.trigger = TriggerKind::HardBrake;
        s.cause.push_str("brake 1.00 at 8.3 m/s").unwrap();
        s.wall_time_us = 1_764_000_000_000_000;
        s.mono_time_us = 5_000_000;
        for i in 0..pre + post {
            let t = TickTelemetry {
                time_us: i as u64 * 50_000,
                tick: i as u64,
                speed: 8.0 + i as f32 * 0.01,
                path: [[i as f32, -1.5]; PATH_POINTS],
                ..Default::default()
            };
            if i < pre {
                s.pre.push(t).unwrap();
            } else {
                s.post.push(t).unwrap();
            }
        }
        for k in 0..kfs {
            let mut kf = Keyframe {
                tick: k as u64,
                time_us: 0,
                shape: [32, 64],
                features: heapless::Vec::new(),
                thumb_w: THUMB_W as u16,
                thumb_h: THUMB_H as u16,
                jpeg: heapless::Vec::new(),
            };
            for j in 0..2048 {
                kf.features.extend_from_slice(&f32_to_f16_bits((j as f32 * 0.37).sin()).to_le_bytes()).unwrap();
            }
            for j in 0..JPEG_BUDGET_BYTES {
                kf.jpeg.push((j * 31 % 251) as u8).unwrap();
            }
            s.keyframes.push(kf).unwrap();
        }
        s
    }

    #[test]
    fn roundtrip_full_size_fits() {
        let mut s = sample(40, 20, MAX_KEYFRAMES);
        s.run = full_run_info();
        let bytes = s.encode().unwrap();
        assert!(bytes.len() <= MAX_SNAPSHOT_BYTES, "{}", bytes.len());
        assert!(Snapshot::worst_case_size(40, 20, MAX_KEYFRAMES, 2048) >= bytes.len());
        assert!(Snapshot::worst_case_size(40, 20, MAX_KEYFRAMES, 2048) <= MAX_SNAPSHOT_BYTES);
        let back = Snapshot::decode(&bytes).unwrap();
        assert_eq!(*back, *s);
        assert!((back.duration_s() - 2.95).abs() < 1e-9);
        let f: Vec<f32> = back.keyframes[0].features_f32().take(3).collect();
        assert!((f[1] - 0.37f32.sin()).abs() < 1e-3);
    }

    #[test]
    fn too_big_is_an_error_not_a_panic() {
        let s = sample(80, 40, MAX_KEYFRAMES);
        assert!(Snapshot::worst_case_size(80, 40, MAX_KEYFRAMES, 2048) > MAX_SNAPSHOT_BYTES);
        let mut buf = vec![0u8; MAX_SNAPSHOT_BYTES];
        assert!(s.encode_into(&mut buf).is_err());
    }

    #[test]
    fn rejects_other_versions_trailing_and_bad_shape() {
        let s = sample(2, 1, 1);
        let mut bytes = s.encode().unwrap();
        let mut v4 = bytes.clone();
        v4[0] = 4;
        assert!(Snapshot::decode(&v4).unwrap_err().to_string().contains("version 4"));
        bytes.push(0);
        assert!(Snapshot::decode(&bytes).unwrap_err().to_string().contains("trailing"));
        let mut bad = sample(2, 1, 1);
        bad.keyframes[0].shape = [3, 3];
        assert!(Snapshot::decode(&bad.encode().unwrap()).is_err());
        assert!(Snapshot::decode(&[]).is_err());
        assert!(Snapshot::decode(&[1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    /// Every run field at its longest.
    fn full_run_info() -> RunInfo {
        RunInfo {
            run_id: RunInfo::bounded(&"9".repeat(RUN_ID_LEN)),
            board: RunInfo::bounded(&"b".repeat(NAME_LEN)),
            policy: RunInfo::bounded(&"p".repeat(NAME_LEN)),
            model_sha256: [0xab; 32],
            scenario: Some(RunInfo::bounded(&"s".repeat(NAME_LEN))),
            seed: Some(u64::MAX),
        }
    }

    #[test]
    fn run_info_is_bounded_and_sized_honestly() {
        let run = full_run_info();
        assert_eq!(postcard::to_allocvec(&run).unwrap().len(), RunInfo::MAX_ENCODED);
        // Run ids (store::runs::new_run_id, "20261130T045012Z-1a2b") fit.
        let id = crate::store::runs::new_run_id();
        assert!(heapless::String::<RUN_ID_LEN>::try_from(id.as_str()).is_ok(), "{id}");
        let cut: heapless::String<4> = RunInfo::bounded("héllo");
        assert_eq!(cut.as_str(), "hél");
    }

    #[test]
    fn names_its_model_and_run_and_reads_schema_1_and_2_records() {
        let mut s = sample(2, 1, 1);
        assert_eq!(s.model_id_hex(), None);
        s.model_id = [0x46, 0x29, 0x76, 0xad, 0x07, 0x63, 0x7b, 0xf1];
        s.run = full_run_info();
        let back = Snapshot::decode(&s.encode().unwrap()).unwrap();
        assert_eq!(back.model_id_hex().as_deref(), Some("462976ad07637bf1"));
        assert_eq!(back.run, s.run);
        // Older records: the same bytes cut before the fields their schema did not have.
        let run_len = postcard::to_allocvec(&RunInfo::default()).unwrap().len();
        for (version, cut) in [(2u16, run_len), (1, run_len + MODEL_ID_BYTES)] {
            let mut old = sample(2, 1, 1);
            old.schema_version = version;
            if version == 2 {
                old.model_id = s.model_id;
            }
            let bytes = old.encode().unwrap();
            let old_bytes = &bytes[..bytes.len() - cut];
            let back = Snapshot::decode(old_bytes).unwrap();
            assert_eq!(back.schema_version, version);
            assert_eq!(back.model_id_hex().is_some(), version == 2);
            assert_eq!((back.run.clone(), &back.keyframes), (RunInfo::default(), &old.keyframes));
            let trailing = [old_bytes, &[0][..]].concat();
            assert!(Snapshot::decode(&trailing).is_err(), "a schema-{version} record with a trailing byte");
        }
    }

    #[test]
    fn severity_orders_the_kinds() {
        assert!(TriggerKind::Collision.outranks(TriggerKind::NearMiss));
        assert!(TriggerKind::NearMiss.outranks(TriggerKind::HardBrake));
        assert!(TriggerKind::HardBrake.outranks(TriggerKind::SteerRate));
        assert!(!TriggerKind::NearMiss.outranks(TriggerKind::NearMiss));
        let mut all = TriggerKind::ALL.to_vec();
        all.sort_by_key(|k| std::cmp::Reverse(k.severity()));
        assert_eq!(all, TriggerKind::BY_SEVERITY);
        assert!(TriggerKind::ALL.iter().all(|k| TriggerKind::ALL[k.index()] == *k));
    }
}
