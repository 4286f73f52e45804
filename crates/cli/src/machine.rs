//! What the machine was doing while the bench ran, beside the mesh's own
//! figures: on a shared virtual machine the same build is slower one minute
//! than the next, and a run is only worth comparing with runs whose machine
//! did the same. Linux only (`/proc`); elsewhere every reading is `None`.
//!
//! - [`MachineTicks`]: how the cores' time was spent (stolen by the
//!   hypervisor, idle, waiting for the disk), from `/proc/stat`.
//! - [`DiskWatch`]: the spans in which a disk held requests and completed
//!   none, from `/proc/diskstats`. Every commit on SQLite (`synchronous=FULL`)
//!   waits for the disk before its caller is answered, so a disk that stops
//!   for 400 ms holds back every PlaceOrder due in those 400 ms and the
//!   queue behind them: with at most 32 in flight at 500/s, one such stall
//!   is already over 1 % of a 60-second run.
//! - [`disk_baseline`]: the disk on its own, the same minute, before the
//!   load: small writes synced at a slow, steady pace. A disk that stalls
//!   then, with 400 KiB a second to write, does not stall because of the
//!   mesh's writes; one that is well then and stalls under the load may.

use std::{
    collections::HashMap,
    fs::OpenOptions,
    os::unix::fs::FileExt,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::load::Percentiles;

/// The machine's time so far, all cores together, in clock ticks, from the
/// first line of `/proc/stat` (Linux; `None` elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineTicks {
    /// Every kind below and the rest (user, nice, system, interrupts).
    pub total: u64,
    /// Idle.
    pub idle: u64,
    /// Idle with a disk request outstanding.
    pub iowait: u64,
    /// Wanted by this (virtual) machine but given by the hypervisor to
    /// another: on a shared host, what makes the same run slower one minute
    /// than the next.
    pub steal: u64,
}

impl MachineTicks {
    /// Now.
    pub fn now() -> Option<Self> {
        Self::parse(std::fs::read_to_string("/proc/stat").ok()?.lines().next()?)
    }

    /// Of the `cpu` line: user nice system idle iowait irq softirq steal
    /// (guest time is already counted in user and nice).
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields.take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
        (ticks.len() == 8).then(|| Self { total: ticks.iter().sum(), idle: ticks[3], iowait: ticks[4], steal: ticks[7] })
    }

    /// From `earlier` to this.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            total: self.total.saturating_sub(earlier.total),
            idle: self.idle.saturating_sub(earlier.idle),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

/// One disk's counters from a line of `/proc/diskstats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DiskCounters {
    /// Requests completed so far: reads, writes, discards and flushes.
    completed: u64,
    /// Requests issued to the device and not yet completed.
    in_flight: u64,
}

impl DiskCounters {
    /// A line's device name and counters. The fields after the name: reads
    /// completed (0), writes completed (4), requests in flight (8), and on
    /// newer kernels discards completed (11) and flushes completed (15).
    fn parse(line: &str) -> Option<(&str, Self)> {
        let mut fields = line.split_whitespace().skip(2);
        let name = fields.next()?;
        let numbers: Vec<u64> = fields.map(str::parse).collect::<Result<_, _>>().ok()?;
        let at = |i: usize| numbers.get(i).copied().unwrap_or(0);
        (numbers.len() >= 11).then(|| (name, Self { completed: at(0) + at(4) + at(11) + at(15), in_flight: at(8) }))
    }
}

/// A span in which a disk held at least one request and completed none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskStall {
    pub device: String,
    /// From the watch's origin.
    pub from_secs: f64,
    /// How long, to within one reading's period either way.
    pub ms: f64,
}

/// Turns readings of the disks' counters into [`DiskStall`]s of at least
/// `shortest`.
struct StallFinder {
    shortest: Duration,
    /// Each disk's last reading and, while it is stalled, since when.
    disks: HashMap<String, (Duration, DiskCounters, Option<Duration>)>,
    stalls: Vec<DiskStall>,
}

impl StallFinder {
    fn new(shortest: Duration) -> Self {
        Self { shortest, disks: HashMap::new(), stalls: Vec::new() }
    }

    /// One disk's counters read at `at`. A request in flight at the last
    /// reading that has not completed by this one was held the whole time
    /// between: nothing completed, so nothing left the device.
    fn read(&mut self, at: Duration, device: &str, now: DiskCounters) {
        let Some((then_at, then, since)) = self.disks.get(device).copied() else {
            self.disks.insert(device.to_owned(), (at, now, None));
            return;
        };
        let held = then.in_flight > 0 && now.completed == then.completed;
        let since = match (held, since) {
            (true, since) => Some(since.unwrap_or(then_at)),
            (false, Some(from)) => {
                self.close(device, from, then_at);
                None
            }
            (false, None) => None,
        };
        self.disks.insert(device.to_owned(), (at, now, since));
    }

    fn close(&mut self, device: &str, from: Duration, to: Duration) {
        if to - from >= self.shortest {
            let ms = (to - from).as_secs_f64() * 1000.0;
            self.stalls.push(DiskStall { device: device.to_owned(), from_secs: from.as_secs_f64(), ms });
        }
    }

    /// The stalls found, one still going counted up to its last reading.
    fn finish(mut self) -> Vec<DiskStall> {
        let open: Vec<(String, Duration, Duration)> =
            self.disks.iter().filter_map(|(d, (at, _, since))| since.map(|from| (d.clone(), from, *at))).collect();
        for (device, from, to) in open {
            self.close(&device, from, to);
        }
        self.stalls.sort_by(|a, b| a.from_secs.total_cmp(&b.from_secs));
        self.stalls
    }
}

/// Watches the machine's disks from a thread of its own (so that a busy
/// runtime cannot delay its readings) until [`DiskWatch::finish`].
pub struct DiskWatch {
    stop: Arc<AtomicBool>,
    /// Taken by [`DiskWatch::finish`]; a watch dropped without it stops too.
    thread: Option<JoinHandle<Vec<DiskStall>>>,
}

/// How often the disks are read: a stall is measured to within this.
const READ_EVERY: Duration = Duration::from_millis(20);

/// The shortest stall reported. A commit's sync takes well under a
/// millisecond on this machine's disk when it is well (0.4 ms median, 1 ms
/// at p99, measured idle), so 100 ms is the disk not working, not the disk
/// being busy.
pub const SHORTEST_STALL: Duration = Duration::from_millis(100);

impl DiskWatch {
    /// Starts watching every disk that is a device (a disk with a
    /// `device` link in `/sys/block`: not a loop, RAM or zram disk, whose
    /// stalls are not the hardware's), stalls timed from `origin`; `None`
    /// where there is none to watch.
    pub fn start(origin: Instant) -> Option<Self> {
        let disks: Vec<String> = std::fs::read_dir("/sys/block")
            .ok()?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().join("device").exists())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        std::fs::read_to_string("/proc/diskstats").ok()?;
        if disks.is_empty() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("disk-watch".to_owned())
            .spawn(move || {
                let mut finder = StallFinder::new(SHORTEST_STALL);
                while !stopped.load(Ordering::Relaxed) {
                    if let Ok(stats) = std::fs::read_to_string("/proc/diskstats") {
                        let at = origin.elapsed();
                        for (device, counters) in stats.lines().filter_map(DiskCounters::parse) {
                            if disks.iter().any(|d| d == device) {
                                finder.read(at, device, counters);
                            }
                        }
                    }
                    std::thread::sleep(READ_EVERY);
                }
                finder.finish()
            })
            .ok()?;
        Some(Self { stop, thread: Some(thread) })
    }

    /// Stops watching; the stalls seen, by their start.
    pub fn finish(mut self) -> Vec<DiskStall> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|thread| thread.join().ok()).unwrap_or_default()
    }
}

impl Drop for DiskWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How often [`disk_baseline`] writes and syncs: as often as a lightly used
/// service commits, far below what the mesh asks of the disk under the
/// load (about 1,600 syncs and 80 MB a second at 500 orders/s).
pub const BASELINE_SYNCS_PER_SEC: u32 = 100;

/// A sync slower than this, alone, already makes a PlaceOrder miss the p99
/// floor: each one waits for three commits in turn (two of order's and one
/// of payment's), each with its sync.
pub const SLOW_SYNC: Duration = Duration::from_millis(50);

/// The bytes of each write: one SQLite page.
pub const BASELINE_WRITE: usize = 4096;

/// The file's size in writes: the writes go round it, overwriting, as
/// SQLite's WAL does between checkpoints.
const BASELINE_PAGES: u64 = 256;

/// What the disk did on its own in [`disk_baseline`].
#[derive(Debug, Clone, Serialize)]
pub struct DiskBaseline {
    /// Writes made, each synced before the next.
    pub syncs: usize,
    /// How long it took, in seconds.
    pub secs: f64,
    /// Each write and its sync, together.
    pub sync_ms: Percentiles,
    /// How many took longer than [`SLOW_SYNC`].
    pub slow_syncs: usize,
    /// The disks' stalls meanwhile (see [`DiskWatch`]), timed from the
    /// first write; `None` where they could not be watched.
    pub stalls: Option<Vec<DiskStall>>,
}

/// Writes one page at a time to a file in `dir` and syncs it (`fsync`, as
/// SQLite does), [`BASELINE_SYNCS_PER_SEC`] times a second for `duration`,
/// while the disks are watched. Each write is due at its place in the pace,
/// so a slow sync delays the ones after it as a stalled disk delays commits.
/// The file is removed afterwards. Blocking: call it off the runtime.
pub fn disk_baseline(dir: &Path, duration: Duration) -> std::io::Result<DiskBaseline> {
    let path = dir.join("disk-baseline.tmp");
    let result = sync_at_pace(&path, duration);
    let _ = std::fs::remove_file(&path);
    result
}

fn sync_at_pace(path: &Path, duration: Duration) -> std::io::Result<DiskBaseline> {
    let file = OpenOptions::new().create(true).truncate(true).write(true).open(path)?;
    let page = [0x5a_u8; BASELINE_WRITE];
    // The whole file written and synced first, so that what is timed are
    // overwrites of allocated blocks, not the file growing.
    for i in 0..BASELINE_PAGES {
        file.write_all_at(&page, i * BASELINE_WRITE as u64)?;
    }
    file.sync_all()?;
    let count = (duration.as_secs_f64() * f64::from(BASELINE_SYNCS_PER_SEC)).round() as u64;
    let started = Instant::now();
    let watch = DiskWatch::start(started);
    let mut times = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for n in 0..count {
        let due = started + Duration::from_secs_f64(n as f64 / f64::from(BASELINE_SYNCS_PER_SEC));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let began = Instant::now();
        file.write_all_at(&page, (n % BASELINE_PAGES) * BASELINE_WRITE as u64)?;
        file.sync_all()?;
        times.push(began.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    let stalls = watch.map(DiskWatch::finish);
    let slow_syncs = times.iter().filter(|t| **t > SLOW_SYNC).count();
    Ok(DiskBaseline { syncs: times.len(), secs, sync_ms: Percentiles::of(&mut times), slow_syncs, stalls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machines_ticks_are_read_from_the_cpu_line() {
        let then = MachineTicks::parse("cpu  100 5 50 800 10 1 2 30 0 0").expect("a cpu line");
        assert_eq!(then, MachineTicks { total: 998, idle: 800, iowait: 10, steal: 30 });
        let now = MachineTicks::parse("cpu  300 5 90 900 10 1 2 130 0 0").expect("a cpu line");
        assert_eq!(now.since(then), MachineTicks { total: 440, idle: 100, iowait: 0, steal: 100 });
        assert_eq!(MachineTicks::parse("cpu0 1 2 3 4 5 6 7 8"), None, "one core's line, not the machine's");
        assert_eq!(MachineTicks::parse("cpu  1 2 3"), None, "a kernel without steal accounting");
        let read = MachineTicks::now().expect("Linux has /proc/stat");
        assert!(read.total >= read.idle + read.iowait + read.steal);
    }

    #[test]
    fn a_disks_counters_are_read_from_its_line() {
        // Linux 6.x: reads, writes, in flight, then discards and flushes.
        let line = "254       0 vda 7005 1 411000 2000 90000 300 800000 60000 3 55000 70000 40 0 80 5 600 20";
        assert_eq!(DiskCounters::parse(line), Some(("vda", DiskCounters { completed: 7005 + 90000 + 40 + 600, in_flight: 3 })));
        // Linux 4.18: no discards or flushes.
        let old = "8 0 sda 10 0 80 5 20 0 160 9 0 14 14";
        assert_eq!(DiskCounters::parse(old), Some(("sda", DiskCounters { completed: 30, in_flight: 0 })));
        assert_eq!(DiskCounters::parse("8 0 sda 10 0 80"), None, "too few fields");
    }

    #[test]
    fn a_stall_is_a_span_with_requests_held_and_none_completed() {
        let ms = Duration::from_millis;
        let disk = |completed, in_flight| DiskCounters { completed, in_flight };
        let mut finder = StallFinder::new(ms(100));
        // Busy and completing: no stall, however much is in flight.
        for i in 0..10u64 {
            finder.read(ms(i * 20), "vda", disk(100 + i * 40, 8));
        }
        // At 180 ms, 8 in flight; nothing completes until 600 ms.
        for i in 10..30u64 {
            finder.read(ms(i * 20), "vda", disk(460, 8 + i));
        }
        finder.read(ms(600), "vda", disk(470, 1));
        // Idle: nothing in flight and nothing completing is not a stall.
        for i in 31..50u64 {
            finder.read(ms(i * 20), "vda", disk(470, 0));
        }
        // A short one (60 ms), under the shortest reported.
        finder.read(ms(1000), "vda", disk(470, 2));
        finder.read(ms(1060), "vda", disk(470, 2));
        finder.read(ms(1080), "vda", disk(472, 0));
        // Another disk stalled at the end: counted up to its last reading.
        finder.read(ms(1000), "vdb", disk(5, 1));
        finder.read(ms(1300), "vdb", disk(5, 1));
        let stalls = finder.finish();
        assert_eq!(
            stalls,
            [
                DiskStall { device: "vda".to_owned(), from_secs: 0.18, ms: 400.0 },
                DiskStall { device: "vdb".to_owned(), from_secs: 1.0, ms: 300.0 },
            ]
        );
    }

    #[test]
    fn the_watch_reads_this_machines_disks() {
        // Where there are disks to watch, it starts, reads and stops; a
        // well disk for 100 ms has no stall to report.
        if let Some(watch) = DiskWatch::start(Instant::now()) {
            std::thread::sleep(Duration::from_millis(100));
            assert!(watch.finish().iter().all(|s| s.ms >= 100.0));
        }
    }

    #[test]
    fn the_disk_baseline_syncs_at_its_pace_and_leaves_no_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let baseline = disk_baseline(dir.path(), Duration::from_millis(300)).expect("the disk takes writes");
        // 100 a second for 0.3 s, paced: the 30th is due at 0.29 s.
        assert_eq!(baseline.syncs, 30);
        assert!(baseline.secs >= 0.29, "{baseline:?}");
        let ms = &baseline.sync_ms;
        assert!(ms.p50 > 0.0 && ms.p50 <= ms.p99 && ms.p99 <= ms.max, "{baseline:?}");
        assert_eq!(baseline.slow_syncs > 0, ms.max > SLOW_SYNC.as_secs_f64() * 1000.0, "{baseline:?}");
        if let Some(stalls) = &baseline.stalls {
            assert!(stalls.iter().all(|s| s.ms >= 100.0), "{stalls:?}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0, "the probe's file is removed");
    }
}
