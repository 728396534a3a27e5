//! Counters the hub keeps about itself, and the publish-to-write latency that `/api/v1/health`
//! grades. Counters are plain atomics updated once per event batch, not once per byte.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

/// Hub-wide counters. Every field is monotonic except where noted.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted since start.
    pub total_connections: AtomicU64,
    /// Frames written to sockets (events, replies, heartbeats).
    pub messages_sent: AtomicU64,
    /// Bytes written to sockets.
    pub bytes_sent: AtomicU64,
    /// Client text frames received.
    pub messages_received: AtomicU64,
    /// Publish requests accepted (one per channel published to).
    pub publishes: AtomicU64,
    /// Broadcasts to every connection.
    pub broadcasts: AtomicU64,
    /// Frames queued to subscribers by publishes.
    pub deliveries: AtomicU64,
    /// Frames dropped by the drop-oldest overflow policy.
    pub dropped_frames: AtomicU64,
    /// Connections closed because their queue overflowed or a write timed out.
    pub slow_consumer_disconnects: AtomicU64,
    /// Error frames sent to clients.
    pub client_errors: AtomicU64,
    /// Connections closed for a silent peer (read timeout).
    pub read_timeouts: AtomicU64,
    /// Publications compressed for permessage-deflate connections (once each, however many
    /// connections take the compressed frame).
    pub deflated_publications: AtomicU64,
    /// Payload bytes of those publications before compression.
    pub deflate_bytes_in: AtomicU64,
    /// Payload bytes of those publications after compression.
    pub deflate_bytes_out: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// Health grades from seed 001: EXCELLENT < 20 ms ≤ GOOD < 50 ms ≤ FAIR < 100 ms ≤ POOR < 200 ms ≤ CRITICAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyLevel {
    /// p99 under 20 ms.
    Excellent,
    /// p99 under 50 ms.
    Good,
    /// p99 under 100 ms.
    Fair,
    /// p99 under 200 ms.
    Poor,
    /// p99 of 200 ms or more.
    Critical,
}

impl LatencyLevel {
    /// Grades a latency.
    pub fn of(latency: Duration) -> LatencyLevel {
        match latency.as_millis() {
            0..20 => LatencyLevel::Excellent,
            20..50 => LatencyLevel::Good,
            50..100 => LatencyLevel::Fair,
            100..200 => LatencyLevel::Poor,
            _ => LatencyLevel::Critical,
        }
    }

    /// The upper-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            LatencyLevel::Excellent => "EXCELLENT",
            LatencyLevel::Good => "GOOD",
            LatencyLevel::Fair => "FAIR",
            LatencyLevel::Poor => "POOR",
            LatencyLevel::Critical => "CRITICAL",
        }
    }
}

/// Upper bounds of the latency buckets, in microseconds; the last bucket is open.
const BOUNDS_US: [u64; 14] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 5_000_000];

/// How long one latency window lasts; health looks at the current and the previous one.
const WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    buckets: [u64; BOUNDS_US.len() + 1],
    count: u64,
    sum_us: u64,
    /// Sum of squares (µs²), for the standard deviation reported as jitter.
    sum_sq_us: f64,
    min_us: u64,
    max_us: u64,
}

impl Window {
    fn record(&mut self, us: u64, n: u64) {
        let i = BOUNDS_US.iter().position(|b| us <= *b).unwrap_or(BOUNDS_US.len());
        self.buckets[i] += n;
        if self.count == 0 || us < self.min_us {
            self.min_us = us;
        }
        self.max_us = self.max_us.max(us);
        self.count += n;
        self.sum_us += us * n;
        self.sum_sq_us += (us as f64) * (us as f64) * n as f64;
    }

    fn merge(&self, other: &Window) -> Window {
        let mut w = *self;
        for (a, b) in w.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        if other.count > 0 {
            w.min_us = if w.count == 0 { other.min_us } else { w.min_us.min(other.min_us) };
        }
        w.max_us = w.max_us.max(other.max_us);
        w.count += other.count;
        w.sum_us += other.sum_us;
        w.sum_sq_us += other.sum_sq_us;
        w
    }
}

/// A summary of recent publish-to-write latency (the last 30–60 s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    /// Frames measured.
    pub samples: u64,
    /// Smallest latency seen.
    pub min: Duration,
    /// Mean latency.
    pub avg: Duration,
    /// Largest latency seen.
    pub max: Duration,
    /// 99th percentile, as the upper bound of its bucket.
    pub p99: Duration,
    /// Jitter: the standard deviation of the latencies.
    pub jitter: Duration,
    /// The grade of `p99`; `Excellent` when nothing was measured.
    pub level: LatencyLevel,
}

/// Publish-to-write latency over a sliding window of two 30-second halves.
#[derive(Debug)]
pub struct LatencyTracker {
    inner: Mutex<(Instant, Window, Window)>,
}

impl Default for LatencyTracker {
    fn default() -> Self {
        LatencyTracker { inner: Mutex::new((Instant::now(), Window::default(), Window::default())) }
    }
}

impl LatencyTracker {
    /// Records that `frames` frames were written `latency` after their publish.
    pub fn record(&self, latency: Duration, frames: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(g.0);
        if elapsed >= WINDOW {
            // Windows start on fixed 30 s steps from the first one, so "the last two windows"
            // never reaches back more than 60 s.
            let steps = (elapsed.as_nanos() / WINDOW.as_nanos()) as u32;
            g.2 = if steps >= 2 { Window::default() } else { g.1 };
            g.1 = Window::default();
            g.0 += WINDOW * steps;
        }
        g.1.record(latency.as_micros() as u64, frames);
    }

    /// The recent latency, graded.
    pub fn summary(&self) -> LatencySummary {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = Instant::now().duration_since(g.0);
        // Windows not yet rotated out by a new sample: current and previous, or only the
        // "current" one if it has already become the previous, or nothing.
        let w = if elapsed >= 2 * WINDOW {
            Window::default()
        } else if elapsed >= WINDOW {
            g.1
        } else {
            g.1.merge(&g.2)
        };
        drop(g);
        if w.count == 0 {
            return LatencySummary {
                samples: 0,
                min: Duration::ZERO,
                avg: Duration::ZERO,
                max: Duration::ZERO,
                p99: Duration::ZERO,
                jitter: Duration::ZERO,
                level: LatencyLevel::Excellent,
            };
        }
        let target = (w.count * 99).div_ceil(100);
        let mut seen = 0;
        let mut p99_us = w.max_us;
        for (i, n) in w.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                p99_us = BOUNDS_US.get(i).copied().unwrap_or(w.max_us).min(w.max_us);
                break;
            }
        }
        let p99 = Duration::from_micros(p99_us);
        // p99 is its bucket's upper bound, and the buckets end exactly at the grade thresholds:
        // grade a hair below the bound so a p99 in (10, 20] ms is EXCELLENT, not GOOD.
        let level = LatencyLevel::of(p99.saturating_sub(Duration::from_micros(1)));
        LatencySummary {
            samples: w.count,
            min: Duration::from_micros(w.min_us),
            avg: Duration::from_micros(w.sum_us / w.count),
            max: Duration::from_micros(w.max_us),
            p99,
            jitter: {
                let mean = w.sum_us as f64 / w.count as f64;
                let var = (w.sum_sq_us / w.count as f64 - mean * mean).max(0.0);
                Duration::from_micros(var.sqrt() as u64)
            },
            level,
        }
    }
}

/// Upper bounds (seconds) of the cumulative histograms exported to Prometheus.
pub const HISTOGRAM_BOUNDS: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// A cumulative histogram (since start), as Prometheus expects: counts per upper bound, sum, count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; HISTOGRAM_BOUNDS.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records `n` observations of `d`.
    pub fn record(&self, d: Duration, n: u64) {
        let secs = d.as_secs_f64();
        if let Some(i) = HISTOGRAM_BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(n, Relaxed);
        }
        self.sum_us.fetch_add(d.as_micros() as u64 * n, Relaxed);
        self.count.fetch_add(n, Relaxed);
    }

    /// `(upper bound, cumulative count)` per bucket, then the sum in seconds and the total count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut cumulative = 0;
        let buckets = HISTOGRAM_BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| {
                cumulative += c.load(Relaxed);
                (*b, cumulative)
            })
            .collect();
        (buckets, self.sum_us.load(Relaxed) as f64 / 1e6, self.count.load(Relaxed))
    }
}

/// Everything the hub measures about itself.
#[derive(Debug)]
pub struct Stats {
    /// Monotonic counters.
    pub counters: Counters,
    /// Publish-to-write latency, recent (health levels).
    pub latency: LatencyTracker,
    /// Publish-to-write latency since start, per frame written.
    pub delivery_latency: Histogram,
    /// How long a publish took the hub (offset, history, fan-out; fsync when durable).
    pub publish_duration: Histogram,
    /// When the hub started, for uptime.
    pub started: Instant,
    last_activity_ms: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            counters: Counters::default(),
            latency: LatencyTracker::default(),
            delivery_latency: Histogram::default(),
            publish_duration: Histogram::default(),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// Notes that a client or publisher did something now.
    pub fn touch(&self) {
        let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        self.last_activity_ms.store(ms, Relaxed);
    }

    /// When a client or publisher last did something, if ever.
    pub fn last_activity(&self) -> Option<SystemTime> {
        match self.last_activity_ms.load(Relaxed) {
            0 => None,
            ms => Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.record(Duration::from_micros(50), 2);
        h.record(Duration::from_millis(3), 1);
        h.record(Duration::from_secs(5), 1);
        let (b, sum, count) = h.snapshot();
        assert_eq!(b[0], (0.0001, 2));
        assert_eq!(b[5], (0.005, 3));
        assert_eq!(b.last().unwrap().1, 3, "5 s is above every bound: only in +Inf (count)");
        assert_eq!(count, 4);
        assert!((sum - 5.0031).abs() < 1e-9);
    }

    #[test]
    fn grades_follow_seed_thresholds() {
        let ms = Duration::from_millis;
        assert_eq!(LatencyLevel::of(ms(19)), LatencyLevel::Excellent);
        assert_eq!(LatencyLevel::of(ms(20)), LatencyLevel::Good);
        assert_eq!(LatencyLevel::of(ms(99)), LatencyLevel::Fair);
        assert_eq!(LatencyLevel::of(ms(150)), LatencyLevel::Poor);
        assert_eq!(LatencyLevel::of(ms(250)), LatencyLevel::Critical);
    }

    #[test]
    fn p99_tracks_the_tail() {
        let t = LatencyTracker::default();
        t.record(Duration::from_micros(80), 990);
        t.record(Duration::from_millis(150), 10);
        let s = t.summary();
        assert_eq!(s.samples, 1000);
        assert_eq!(s.p99, Duration::from_micros(100));
        t.record(Duration::from_millis(150), 20);
        assert_eq!(t.summary().level, LatencyLevel::Poor);
    }

    #[test]
    fn a_p99_just_under_a_threshold_gets_the_better_grade() {
        let t = LatencyTracker::default();
        t.record(Duration::from_millis(12), 100);
        t.record(Duration::from_millis(40), 1);
        let s = t.summary();
        assert_eq!(s.p99, Duration::from_millis(20));
        assert_eq!(s.level, LatencyLevel::Excellent);
    }
}
