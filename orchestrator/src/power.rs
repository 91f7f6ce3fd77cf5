//! Power saving: idle workers are told to sleep, and sleeping ones are woken with Wake-on-LAN
//! when a job waits for a capable worker. Off unless `CLUSTERPLEX_SLEEP_AFTER_S` is set.
//!
//! This module holds the policy (which worker sleeps, which sleeper wakes, when a wake has
//! failed) as plain functions over plain data, and the magic packet itself; `cluster.rs` calls
//! it at its events (a worker idle for long enough, a job queued, a wake timer).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use clusterplex_core::{Capabilities, CapabilityNeeds};

/// Power-saving settings.
#[derive(Debug, Clone)]
pub struct PowerConfig {
    /// A worker idle this long is told to sleep; None: never (the feature is off).
    pub sleep_after: Option<Duration>,
    /// Never put the last N awake workers to sleep.
    pub min_awake: usize,
    /// How long a job waits for a woken worker before the wake counts as failed.
    pub wake_timeout: Duration,
    /// Where magic packets go (usually the LAN broadcast address, UDP port 9).
    pub wol_addr: SocketAddr,
}

impl Default for PowerConfig {
    fn default() -> Self {
        Self {
            sleep_after: None,
            min_awake: 1,
            wake_timeout: Duration::from_secs(120),
            wol_addr: SocketAddr::from(([255, 255, 255, 255], 9)),
        }
    }
}

impl PowerConfig {
    pub fn enabled(&self) -> bool {
        self.sleep_after.is_some()
    }
}

/// The Wake-on-LAN magic packet: six 0xFF bytes, then the MAC sixteen times.
pub fn magic_packet(mac: &[u8; 6]) -> [u8; 102] {
    let mut p = [0xff; 102];
    for chunk in p[6..].chunks_exact_mut(6) {
        chunk.copy_from_slice(mac);
    }
    p
}

/// Sends one magic packet for `mac` to `to` (broadcast allowed).
pub async fn send_magic_packet(to: SocketAddr, mac: &[u8; 6]) -> std::io::Result<()> {
    let any = if to.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = tokio::net::UdpSocket::bind(any).await?;
    socket.set_broadcast(true)?;
    socket.send_to(&magic_packet(mac), to).await?;
    Ok(())
}

/// An awake worker as the sleep decision sees it.
#[derive(Debug, Clone)]
pub struct AwakeWorker<'a> {
    pub id: &'a str,
    /// Since when it has had no job; None while it runs one.
    pub idle_since: Option<Instant>,
    pub draining: bool,
    /// It has a sleep command and a known wake MAC.
    pub can_sleep: bool,
}

/// The workers to put to sleep now, longest idle first: idle for `sleep_after` or more, not
/// draining, able to sleep and be woken, and never so many that fewer than `min_awake`
/// workers stay awake. Empty when the feature is off.
pub fn to_sleep(cfg: &PowerConfig, now: Instant, awake: &[AwakeWorker<'_>]) -> Vec<String> {
    let Some(after) = cfg.sleep_after else {
        return Vec::new();
    };
    let mut idle: Vec<(Instant, &str)> = awake
        .iter()
        .filter(|w| w.can_sleep && !w.draining)
        .filter_map(|w| {
            let since = w.idle_since?;
            (now.saturating_duration_since(since) >= after).then_some((since, w.id))
        })
        .collect();
    idle.sort();
    let allowed = awake.len().saturating_sub(cfg.min_awake);
    idle.into_iter()
        .take(allowed)
        .map(|(_, id)| id.to_string())
        .collect()
}

/// Where a remembered sleeper stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SleepState {
    /// Told to sleep; can be woken.
    Asleep,
    /// A magic packet went out; it should register again by `deadline`.
    Waking { deadline: Instant },
    /// Did not come back after a wake: not woken again until it registers by itself.
    Unwakeable,
}

/// A worker told to sleep, remembered after its connection drops (a suspended box drops it).
#[derive(Debug, Clone)]
pub struct Sleeper {
    pub name: String,
    pub caps: Capabilities,
    pub score: f64,
    pub max_jobs: u32,
    pub mac: [u8; 6],
    pub state: SleepState,
}

/// The sleeping workers, by id.
#[derive(Debug, Default)]
pub struct Sleepers {
    map: BTreeMap<String, Sleeper>,
}

impl Sleepers {
    pub fn insert(&mut self, id: String, s: Sleeper) {
        self.map.insert(id, s);
    }

    pub fn remove(&mut self, id: &str) -> Option<Sleeper> {
        self.map.remove(id)
    }

    pub fn get(&self, id: &str) -> Option<&Sleeper> {
        self.map.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Sleeper)> {
        self.map.iter()
    }

    /// Which sleepers to wake for the jobs that wait for a worker (their needs, oldest first),
    /// marking them waking until `now + timeout`. Each waiting job first takes a slot of a
    /// worker already waking that covers it; only a job no waking worker covers wakes another
    /// one: the capable sleeper with the highest score (then the lowest id). So no more
    /// workers wake than the waiting jobs need.
    pub fn plan_wakes(
        &mut self,
        waiting: &[&CapabilityNeeds],
        now: Instant,
        timeout: Duration,
    ) -> Vec<String> {
        // Slots still free on the workers already waking (or chosen now).
        let mut free: BTreeMap<String, u32> = self
            .map
            .iter()
            .filter(|(_, s)| matches!(s.state, SleepState::Waking { .. }))
            .map(|(id, s)| (id.clone(), s.max_jobs.max(1)))
            .collect();
        let mut woken = Vec::new();
        for needs in waiting {
            let taken = free
                .iter_mut()
                .find(|(id, n)| **n > 0 && self.map[*id].caps.covers(needs));
            if let Some((_, n)) = taken {
                *n -= 1;
                continue;
            }
            let best = self
                .map
                .iter()
                .filter(|(_, s)| s.state == SleepState::Asleep && s.caps.covers(needs))
                // Highest score first; ties to the lowest id (the map's order).
                .fold(None::<(&String, &Sleeper)>, |best, (id, s)| match best {
                    Some((_, b)) if b.score >= s.score => best,
                    _ => Some((id, s)),
                })
                .map(|(id, _)| id.clone());
            let Some(id) = best else { continue };
            if let Some(s) = self.map.get_mut(&id) {
                s.state = SleepState::Waking {
                    deadline: now + timeout,
                };
                free.insert(id.clone(), s.max_jobs.max(1) - 1);
            }
            woken.push(id);
        }
        woken
    }

    /// The wake of `id` that was due by `deadline` timed out: it is no longer woken. True when
    /// that wake was still pending (it did not register meanwhile, nor was woken again).
    pub fn wake_timed_out(&mut self, id: &str, deadline: Instant) -> bool {
        match self.map.get_mut(id) {
            Some(s) if s.state == (SleepState::Waking { deadline }) => {
                s.state = SleepState::Unwakeable;
                true
            }
            _ => false,
        }
    }

    /// The latest deadline of the workers being woken that cover `needs`, if any is still due
    /// after `now`: a waiting job keeps waiting until then instead of its queue timeout.
    pub fn waking_for(&self, needs: &CapabilityNeeds, now: Instant) -> Option<Instant> {
        self.map
            .values()
            .filter(|s| s.caps.covers(needs))
            .filter_map(|s| match s.state {
                SleepState::Waking { deadline } if deadline > now => Some(deadline),
                _ => None,
            })
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_packet_is_six_ff_then_sixteen_macs() {
        let mac = [0x00, 0x1b, 0x21, 0xaa, 0xbc, 0x0f];
        let p = magic_packet(&mac);
        assert_eq!(p.len(), 102);
        assert_eq!(p[..6], [0xff; 6]);
        for i in 0..16 {
            assert_eq!(p[6 + i * 6..12 + i * 6], mac, "copy {i}");
        }
    }

    #[tokio::test]
    async fn magic_packet_reaches_a_udp_socket() {
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mac = [2, 0, 0, 0, 0, 7];
        send_magic_packet(rx.local_addr().unwrap(), &mac)
            .await
            .unwrap();
        let mut buf = [0u8; 200];
        let n = tokio::time::timeout(Duration::from_secs(10), rx.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf[..n], magic_packet(&mac));
    }

    fn cfg(after_s: Option<u64>, min_awake: usize) -> PowerConfig {
        PowerConfig {
            sleep_after: after_s.map(Duration::from_secs),
            min_awake,
            ..Default::default()
        }
    }

    fn awake(id: &str, idle_s: Option<u64>, now: Instant) -> AwakeWorker<'_> {
        AwakeWorker {
            id,
            idle_since: idle_s.map(|s| now - Duration::from_secs(s)),
            draining: false,
            can_sleep: true,
        }
    }

    #[test]
    fn sleep_needs_idle_time_ability_and_leaves_min_awake() {
        let now = Instant::now() + Duration::from_secs(1000);
        let ws = [
            awake("a", Some(30), now),
            awake("b", Some(100), now),
            awake("c", Some(5), now),
            awake("d", None, now),
        ];
        // Off (the default): nobody, however idle.
        assert!(to_sleep(&PowerConfig::default(), now, &ws).is_empty());
        assert!(to_sleep(&cfg(None, 0), now, &ws).is_empty());
        // Idle long enough: a and b (longest idle first); c is too recent, d is busy.
        assert_eq!(to_sleep(&cfg(Some(10), 0), now, &ws), ["b", "a"]);
        // Four awake, at least three stay awake: only the longest idle one sleeps.
        assert_eq!(to_sleep(&cfg(Some(10), 3), now, &ws), ["b"]);
        assert!(to_sleep(&cfg(Some(10), 4), now, &ws).is_empty());
        assert!(to_sleep(&cfg(Some(10), 9), now, &ws).is_empty());
        // Draining workers and workers without a sleep command or MAC never sleep.
        let mut ws2 = ws.clone();
        ws2[1].draining = true;
        ws2[0].can_sleep = false;
        assert!(to_sleep(&cfg(Some(10), 0), now, &ws2).is_empty());
        // Exactly at the limit counts.
        assert_eq!(to_sleep(&cfg(Some(30), 0), now, &ws), ["b", "a"]);
    }

    fn caps(encoders: &[&str]) -> Capabilities {
        Capabilities {
            encoders: encoders.iter().map(|e| e.to_string()).collect(),
            ..Default::default()
        }
    }

    fn needs(encoder: &str) -> CapabilityNeeds {
        CapabilityNeeds {
            encoders: [encoder.to_string()].into(),
            ..Default::default()
        }
    }

    fn sleeper(encoders: &[&str], score: f64, max_jobs: u32) -> Sleeper {
        Sleeper {
            name: String::new(),
            caps: caps(encoders),
            score,
            max_jobs,
            mac: [2, 0, 0, 0, 0, 1],
            state: SleepState::Asleep,
        }
    }

    #[test]
    fn wakes_the_best_capable_sleeper_once_per_needed_slot() {
        let now = Instant::now();
        let t = Duration::from_secs(60);
        let mut s = Sleepers::default();
        s.insert("slow".into(), sleeper(&["libx264"], 10.0, 1));
        s.insert("fast".into(), sleeper(&["libx264"], 50.0, 2));
        s.insert("nv".into(), sleeper(&["h264_nvenc"], 99.0, 1));
        let x264 = needs("libx264");
        // Nothing waits: nothing wakes.
        assert!(s.plan_wakes(&[], now, t).is_empty());
        // One job: the fastest capable one (not the faster incapable one).
        assert_eq!(s.plan_wakes(&[&x264], now, t), ["fast"]);
        assert_eq!(
            s.get("fast").unwrap().state,
            SleepState::Waking { deadline: now + t }
        );
        // Planned again with the same job, and a second one: `fast` has two slots, so
        // nobody else wakes.
        assert!(s.plan_wakes(&[&x264, &x264], now, t).is_empty());
        // A third job needs a third slot: the next capable one.
        assert_eq!(s.plan_wakes(&[&x264, &x264, &x264], now, t), ["slow"]);
        // Nobody covers it: nobody wakes.
        assert!(s.plan_wakes(&[&needs("libsvtav1")], now, t).is_empty());
        // A job for the other kind wakes that one.
        assert_eq!(s.plan_wakes(&[&needs("h264_nvenc")], now, t), ["nv"]);
    }

    #[test]
    fn a_timed_out_wake_is_not_retried_and_ends_the_wait() {
        let now = Instant::now();
        let t = Duration::from_secs(60);
        let mut s = Sleepers::default();
        s.insert("a".into(), sleeper(&["libx264"], 10.0, 1));
        s.insert("b".into(), sleeper(&["libx264"], 5.0, 1));
        let x264 = needs("libx264");
        assert_eq!(s.waking_for(&x264, now), None);
        assert_eq!(s.plan_wakes(&[&x264], now, t), ["a"]);
        // The job waits for the wake, not for its queue timeout.
        assert_eq!(s.waking_for(&x264, now), Some(now + t));
        assert_eq!(s.waking_for(&needs("h264_nvenc"), now), None);
        assert_eq!(s.waking_for(&x264, now + t), None, "deadline passed");
        // A stale timer (another deadline) changes nothing.
        assert!(!s.wake_timed_out("a", now + Duration::from_secs(1)));
        assert!(s.wake_timed_out("a", now + t));
        assert_eq!(s.get("a").unwrap().state, SleepState::Unwakeable);
        assert!(!s.wake_timed_out("a", now + t));
        assert_eq!(s.waking_for(&x264, now), None);
        // The job still waits: the next capable sleeper wakes, never `a` again.
        assert_eq!(s.plan_wakes(&[&x264], now, t), ["b"]);
        assert!(s.wake_timed_out("b", now + t));
        assert!(s.plan_wakes(&[&x264], now, t).is_empty());
        // `a` registers by itself and sleeps again later: wakeable again.
        s.remove("a");
        s.insert("a".into(), sleeper(&["libx264"], 10.0, 1));
        assert_eq!(s.plan_wakes(&[&x264], now, t), ["a"]);
    }
}
