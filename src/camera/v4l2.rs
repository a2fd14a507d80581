//! A real V4L2 camera (`v4l` crate, mmap streaming) on its own capture thread.
//!
//! The thread dequeues driver buffers, converts them to RGB8 into the triple buffer's back buffer (no allocation per
//! frame, MJPEG decode aside) and publishes: the loop only ever swaps a pointer. Frames carry the driver's monotonic
//! timestamp, so the loop's staleness check measures real sensor age. Gaps in the driver's sequence numbers are
//! counted as dropped frames. When the device fails (unplugged, driver unbound, no frame within the timeout) the
//! thread drops it and reopens with exponential backoff; meanwhile the loop sees the last frame age into a
//! stale-frame fault and the supervisor stops the car, then recovers once fresh frames flow again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::pixel::{to_rgb, PixelFormat};
use super::{Frame, FrameSource, SourceStats};
use crate::error::bad_input;

/// What to open and how to behave when it goes away.
#[derive(Clone, Debug)]
pub struct V4l2Config {
    pub device: PathBuf,
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    /// Driver buffers in the mmap ring.
    pub buffers: u32,
    /// No frame for this long = the device is considered lost.
    pub frame_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Controls set at every open (name as the driver or `v4l2-ctl -l` gives it, value); see [`control_key`].
    pub controls: Vec<(String, i64)>,
}

impl V4l2Config {
    pub fn new(device: impl Into<PathBuf>, format: PixelFormat, width: usize, height: usize, fps: u32) -> Self {
        V4l2Config {
            device: device.into(),
            format,
            width,
            height,
            fps,
            buffers: 4,
            frame_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            controls: Vec::new(),
        }
    }
}

/// What the driver agreed to.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureInfo {
    pub device: String,
    pub driver: String,
    pub card: String,
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    /// Frame interval the driver reports, as frames per second.
    pub fps: Option<f64>,
}

impl std::fmt::Display for CaptureInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}): {} {}x{}", self.device, self.driver, self.card, self.format, self.width, self.height)?;
        if let Some(fps) = self.fps {
            write!(f, " @ {fps:.1} fps")?;
        }
        Ok(())
    }
}

/// Counters the capture thread publishes.
#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    /// Buffers that did not convert (short, bad JPEG).
    bad: AtomicU64,
    stop: AtomicBool,
}

/// The loop-side handle.
pub struct V4l2Camera {
    frames: triple_buffer::Output<Frame>,
    counters: Arc<Counters>,
    info: Arc<Mutex<CaptureInfo>>,
    thread: Option<JoinHandle<()>>,
}

/// One open device with its stream.
struct Session {
    stream: Stream<'static>,
    info: CaptureInfo,
    _dev: Device,
}

fn open_session(cfg: &V4l2Config) -> anyhow::Result<Session> {
    let path = cfg.device.display().to_string();
    let dev = Device::with_path(&cfg.device).map_err(|e| anyhow::anyhow!("camera {path}: cannot open: {e}"))?;
    let caps = dev.query_caps().map_err(|e| anyhow::anyhow!("camera {path}: not a V4L2 device: {e}"))?;
    if !caps.capabilities.contains(v4l::capability::Flags::VIDEO_CAPTURE) {
        return Err(bad_input(format!("camera {path} ({}): not a video capture device", caps.card)));
    }
    let want = FourCC::new(&cfg.format.fourcc());
    let mut fmt = dev.format().map_err(|e| anyhow::anyhow!("camera {path}: reading format: {e}"))?;
    fmt.width = cfg.width as u32;
    fmt.height = cfg.height as u32;
    fmt.fourcc = want;
    let got = dev.set_format(&fmt).map_err(|e| anyhow::anyhow!("camera {path}: setting format: {e}"))?;
    if got.fourcc != want || got.width as usize != cfg.width || got.height as usize != cfg.height {
        let mut offered: Vec<String> = dev
            .enum_formats()
            .map(|fs| fs.iter().map(|f| f.fourcc.str().unwrap_or("????").trim().to_string()).collect())
            .unwrap_or_default();
        if offered.len() > 8 {
            let more = offered.len() - 8;
            offered.truncate(8);
            offered.push(format!("and {more} more"));
        }
        return Err(bad_input(format!(
            "camera {path} ({}): asked for {} {}x{}, the driver chose {} {}x{} (formats offered: {})",
            caps.card,
            cfg.format,
            cfg.width,
            cfg.height,
            got.fourcc.str().unwrap_or("????"),
            got.width,
            got.height,
            offered.join(", ")
        )));
    }
    if cfg.fps > 0 {
        // Best effort: not every driver lets the rate be chosen.
        let _ = dev.set_params(&v4l::video::capture::Parameters::with_fps(cfg.fps));
    }
    let fps = dev.params().ok().and_then(|p| {
        let i = p.interval;
        (i.numerator > 0).then(|| i.denominator as f64 / i.numerator as f64)
    });
    set_controls(&dev, &path, &caps.card, &cfg.controls)?;
    let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, cfg.buffers)
        .map_err(|e| anyhow::anyhow!("camera {path}: mmap streaming: {e}"))?;
    stream.set_timeout(cfg.frame_timeout);
    let info = CaptureInfo {
        device: path,
        driver: caps.driver.clone(),
        card: caps.card.clone(),
        format: cfg.format,
        width: cfg.width,
        height: cfg.height,
        fps,
    };
    Ok(Session { stream, info, _dev: dev })
}

/// A control name compared without case and punctuation: the driver's "Percentage of Dropped Buffers" and
/// `v4l2-ctl -l`'s `percentage_of_dropped_buffers` are the same key.
pub fn control_key(name: &str) -> String {
    let mut key = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            key.push(c.to_ascii_lowercase());
        } else if !key.is_empty() && !key.ends_with('_') {
            key.push('_');
        }
    }
    key.trim_end_matches('_').to_string()
}

/// The device's integer-valued controls (integer, boolean, menu, integer menu): (id, name, min, max). Enumerated
/// with VIDIOC_QUERY_EXT_CTRL directly, skipping types this runtime cannot set (the `v4l` crate's
/// `query_controls` panics on a control type it does not know, and vivid has several).
fn integer_controls(dev: &Device) -> std::io::Result<Vec<(u32, String, i64, i64)>> {
    use v4l::sys::*;
    let fd = dev.handle().fd();
    let mut out = Vec::new();
    // SAFETY: a zeroed query struct is valid input; the kernel fills it.
    let mut q: v4l2_query_ext_ctrl = unsafe { std::mem::zeroed() };
    loop {
        q.id |= V4L2_CTRL_FLAG_NEXT_CTRL | V4L2_CTRL_FLAG_NEXT_COMPOUND;
        // SAFETY: VIDIOC_QUERY_EXT_CTRL reads and writes the v4l2_query_ext_ctrl we pass, on our open device.
        match unsafe {
            v4l::v4l2::ioctl(fd, v4l::v4l2::vidioc::VIDIOC_QUERY_EXT_CTRL, &mut q as *mut _ as *mut std::ffi::c_void)
        } {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(out), // past the last control
            Err(e) => return Err(e),
        }
        let integer = [
            v4l2_ctrl_type_V4L2_CTRL_TYPE_INTEGER,
            v4l2_ctrl_type_V4L2_CTRL_TYPE_BOOLEAN,
            v4l2_ctrl_type_V4L2_CTRL_TYPE_MENU,
            v4l2_ctrl_type_V4L2_CTRL_TYPE_INTEGER_MENU,
        ];
        let settable = integer.contains(&q.type_) && q.flags & V4L2_CTRL_FLAG_DISABLED == 0 && q.nr_of_dims == 0;
        if settable {
            // SAFETY: the kernel NUL-terminates the 32-byte name.
            let name = unsafe { std::ffi::CStr::from_ptr(q.name.as_ptr()) }.to_string_lossy().into_owned();
            out.push((q.id, name, q.minimum, q.maximum));
        }
    }
}

/// Set the board's controls by name (VIDIOC_S_CTRL); a name the device lacks is bad input naming those it has.
fn set_controls(dev: &Device, path: &str, card: &str, controls: &[(String, i64)]) -> anyhow::Result<()> {
    if controls.is_empty() {
        return Ok(());
    }
    let have = integer_controls(dev).map_err(|e| anyhow::anyhow!("camera {path}: listing controls: {e}"))?;
    for (name, value) in controls {
        let Some((id, dname, min, max)) = have.iter().find(|c| control_key(&c.1) == control_key(name)) else {
            let names: Vec<String> = have.iter().map(|c| control_key(&c.1)).collect();
            return Err(bad_input(format!(
                "camera {path} ({card}): no control {name:?} (controls: {})",
                names.join(", ")
            )));
        };
        if value < min || value > max {
            return Err(bad_input(format!(
                "camera {path} ({card}): control {name} = {value} is outside {min}..={max}"
            )));
        }
        let mut c = v4l::sys::v4l2_control { id: *id, value: *value as i32 };
        // SAFETY: VIDIOC_S_CTRL reads and writes the v4l2_control we pass, on our open device.
        unsafe {
            v4l::v4l2::ioctl(
                dev.handle().fd(),
                v4l::v4l2::vidioc::VIDIOC_S_CTRL,
                &mut c as *mut _ as *mut std::ffi::c_void,
            )
        }
        .map_err(|e| anyhow::anyhow!("camera {path}: setting control {name} = {value}: {e}"))?;
        tracing::info!("camera {path}: control {dname:?} = {value}");
    }
    Ok(())
}

/// Map a driver CLOCK_MONOTONIC timestamp onto `Instant` (also CLOCK_MONOTONIC on Linux); implausible ones → now.
fn instant_of(ts: &v4l::timestamp::Timestamp) -> Instant {
    let now = Instant::now();
    let mut mono = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut mono) } != 0 {
        return now;
    }
    let now_us = mono.tv_sec as i128 * 1_000_000 + mono.tv_nsec as i128 / 1000;
    let ts_us = ts.sec as i128 * 1_000_000 + ts.usec as i128;
    let age_us = now_us - ts_us;
    if (0..10_000_000).contains(&age_us) {
        now.checked_sub(Duration::from_micros(age_us as u64)).unwrap_or(now)
    } else {
        now
    }
}

impl V4l2Camera {
    /// Open and negotiate now (so a missing device or unsupported format fails before the first tick with one clear
    /// line), then hand the device to the capture thread.
    pub fn open(cfg: V4l2Config) -> anyhow::Result<V4l2Camera> {
        let session = open_session(&cfg)?;
        let info = Arc::new(Mutex::new(session.info.clone()));
        let blank = Frame::blank(cfg.width, cfg.height);
        let (input, output) = triple_buffer::triple_buffer(&blank);
        let counters = Arc::new(Counters::default());
        let (c, i) = (counters.clone(), info.clone());
        let thread = std::thread::Builder::new()
            .name("rtvla-v4l2".into())
            .spawn(move || {
                crate::runtime::os::helper_thread_below_loop();
                capture_thread(cfg, Some(session), input, c, i)
            })
            .map_err(|e| anyhow::anyhow!("starting the capture thread: {e}"))?;
        Ok(V4l2Camera { frames: output, counters, info, thread: Some(thread) })
    }

    /// The negotiated device, format and size.
    pub fn info(&self) -> CaptureInfo {
        self.info.lock().map(|i| i.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl FrameSource for V4l2Camera {
    fn latest(&mut self) -> Option<&Frame> {
        self.frames.update();
        let f = self.frames.output_buffer();
        (f.seq > 0).then_some(f)
    }

    fn stats(&self) -> SourceStats {
        SourceStats {
            frames: self.counters.frames.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            reconnects: self.counters.reconnects.load(Ordering::Relaxed),
            bad: self.counters.bad.load(Ordering::Relaxed),
        }
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        self.counters.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Acquire) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())));
    }
}

fn capture_thread(
    cfg: V4l2Config,
    mut session: Option<Session>,
    mut out: triple_buffer::Input<Frame>,
    counters: Arc<Counters>,
    info: Arc<Mutex<CaptureInfo>>,
) {
    let mut seq = 0u64;
    let mut last_driver_seq: Option<u32> = None;
    let mut backoff = cfg.backoff_min;
    let mut last_error = String::new();
    while !counters.stop.load(Ordering::Acquire) {
        let Some(s) = session.as_mut() else {
            match open_session(&cfg) {
                Ok(s) => {
                    tracing::info!("camera back: {} (after {})", s.info, last_error);
                    if let Ok(mut i) = info.lock() {
                        *i = s.info.clone();
                    }
                    session = Some(s);
                    last_driver_seq = None;
                    backoff = cfg.backoff_min;
                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    if msg != last_error {
                        tracing::warn!("{msg}; retrying every <= {:?}", cfg.backoff_max);
                        last_error = msg;
                    }
                    sleep_unless_stopped(backoff, &counters.stop);
                    backoff = (backoff * 2).min(cfg.backoff_max);
                }
            }
            continue;
        };
        match s.stream.next() {
            Ok((buf, meta)) => {
                if let Some(prev) = last_driver_seq {
                    let gap = meta.sequence.wrapping_sub(prev);
                    if gap > 1 && gap < 1 << 16 {
                        counters.dropped.fetch_add((gap - 1) as u64, Ordering::Relaxed);
                    }
                }
                last_driver_seq = Some(meta.sequence);
                let used = (meta.bytesused as usize).min(buf.len());
                let frame = out.input_buffer_mut();
                match to_rgb(cfg.format, &buf[..used], cfg.width, cfg.height, &mut frame.rgb) {
                    Ok(()) => {
                        seq += 1;
                        frame.seq = seq;
                        frame.captured_at = instant_of(&meta.timestamp);
                        frame.privileged = None;
                        out.publish();
                        counters.frames.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if counters.bad.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!("camera {}: {e}", cfg.device.display());
                        }
                    }
                }
            }
            Err(e) => {
                last_error = format!("camera {} lost: {e}", cfg.device.display());
                tracing::warn!("{last_error}; reconnecting");
                // The v4l crate panics in Drop when STREAMOFF/munmap fail with anything but ENODEV: keep such a
                // failure to this one lost session instead of ending the capture thread.
                let lost = session.take();
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(lost))).is_err() {
                    tracing::warn!("camera {}: releasing the lost device failed", cfg.device.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_one_clear_line() {
        let cfg = V4l2Config::new("/dev/rtvla-no-such-camera", PixelFormat::Yuyv, 640, 480, 30);
        let err = V4l2Camera::open(cfg).err().expect("no such device");
        let msg = format!("{err:#}");
        assert!(msg.contains("/dev/rtvla-no-such-camera") && msg.contains("cannot open"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn a_non_v4l2_file_is_refused() {
        let err = V4l2Camera::open(V4l2Config::new("/dev/null", PixelFormat::Yuyv, 64, 48, 30)).err().unwrap();
        assert!(format!("{err:#}").contains("not a V4L2 device"), "{err:#}");
    }

    #[test]
    fn control_names_match_without_case_or_punctuation() {
        assert_eq!(control_key("Percentage of Dropped Buffers"), "percentage_of_dropped_buffers");
        assert_eq!(control_key("percentage_of_dropped_buffers"), "percentage_of_dropped_buffers");
        assert_eq!(control_key("Exposure Time, Absolute"), "exposure_time_absolute");
        assert_eq!(control_key("  White Balance (auto) "), "white_balance_auto");
    }

    #[test]
    fn driver_timestamps_map_to_instants() {
        let mut mono = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut mono) };
        let ts = v4l::timestamp::Timestamp::new(mono.tv_sec - 1, mono.tv_nsec / 1000);
        let age = instant_of(&ts).elapsed();
        // Upper bounds with room for a preempted test thread: a wrong unit would be off by 1 000x, not by seconds.
        assert!(age >= Duration::from_millis(990) && age < Duration::from_millis(3000), "{age:?}");
        // A zero / bogus timestamp is taken as "now" rather than an absurd age.
        assert!(instant_of(&v4l::timestamp::Timestamp::new(0, 0)).elapsed() < Duration::from_millis(900));
    }
}
