//! Worker selection: ClusterPlex's strategies (`WORKER_SELECTION_STRATEGY`), as pure functions.
//!
//! Only workers that accept work (not draining), have a free slot and whose capabilities cover
//! the job's needs are considered. Ties go to the smallest worker id, so placement is
//! deterministic (ClusterPlex's `reduce` gave ties to whichever worker registered last).

use std::{
    cmp::Ordering,
    collections::{BTreeSet, HashMap, HashSet},
    fmt,
    ops::Bound,
    str::FromStr,
    sync::Arc,
};

use crate::{
    capability::{Capabilities, CapabilityNeeds},
    error::JobError,
    job::{CodecChoice, Job},
    load::Load,
};

/// How the orchestrator picks a worker among the eligible ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// `RR`: round-robin in worker-id order, starting after the last worker chosen.
    RoundRobin,
    /// `LOAD_CPU`: lowest CPU use.
    LoadCpu,
    /// `LOAD_TASKS`: fewest running jobs.
    LoadTasks,
    /// `LOAD_RANK`: highest benchmark score x free CPU fraction.
    #[default]
    LoadRank,
}

impl Strategy {
    /// ClusterPlex's name for the strategy.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "RR",
            Strategy::LoadCpu => "LOAD_CPU",
            Strategy::LoadTasks => "LOAD_TASKS",
            Strategy::LoadRank => "LOAD_RANK",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = JobError;
    fn from_str(s: &str) -> Result<Self, JobError> {
        // Unknown names are an error, not a silent fallback (ClusterPlex broke on `ROUND_ROBIN`).
        Ok(match s.trim().to_ascii_uppercase().as_str() {
            "RR" => Strategy::RoundRobin,
            "LOAD_CPU" => Strategy::LoadCpu,
            "LOAD_TASKS" => Strategy::LoadTasks,
            "LOAD_RANK" => Strategy::LoadRank,
            _ => {
                return Err(JobError::InvalidValue {
                    option: "WORKER_SELECTION_STRATEGY (RR, LOAD_CPU, LOAD_TASKS, LOAD_RANK)"
                        .into(),
                    value: s.into(),
                });
            }
        })
    }
}

/// What placement needs to know about a worker.
pub trait Candidate {
    fn id(&self) -> &str;
    fn capabilities(&self) -> &Capabilities;
    /// Benchmark score (higher = faster).
    fn score(&self) -> f64;
    /// Concurrent job slots (at least 1).
    fn max_jobs(&self) -> u32;
    fn load(&self) -> &Load;
    /// False while draining or lost.
    fn accepting(&self) -> bool;
}

/// A plain candidate, for tests, benches and callers without their own worker type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerView {
    pub id: String,
    pub capabilities: Capabilities,
    pub score: f64,
    pub max_jobs: u32,
    pub load: Load,
    pub accepting: bool,
}

impl Candidate for WorkerView {
    fn id(&self) -> &str {
        &self.id
    }
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }
    fn score(&self) -> f64 {
        self.score
    }
    fn max_jobs(&self) -> u32 {
        self.max_jobs
    }
    fn load(&self) -> &Load {
        &self.load
    }
    fn accepting(&self) -> bool {
        self.accepting
    }
}

/// True when `c` has a free slot and is accepting work.
pub fn has_free_slot<C: Candidate + ?Sized>(c: &C) -> bool {
    c.accepting() && c.load().running_jobs < c.max_jobs().max(1)
}

/// `LOAD_RANK`'s figure: score x free CPU fraction.
pub fn rank(score: f64, cpu_percent: f64) -> f64 {
    score * (1.0 - cpu_percent.clamp(0.0, 100.0) / 100.0)
}

/// Picks a worker for a job with `needs`. `rr_last` is the id chosen last time (for `RR`).
/// Returns `None` when no worker is eligible.
pub fn select<'a, C: Candidate + 'a>(
    strategy: Strategy,
    candidates: impl IntoIterator<Item = &'a C>,
    needs: &CapabilityNeeds,
    rr_last: Option<&str>,
) -> Option<&'a C> {
    // The best so far and its sort key (smaller is better); the capability check, the costly
    // part, is done only for candidates that would beat the current best.
    let mut best: Option<(&'a C, f64)> = None;
    // RR: the first eligible id after `rr_last`, and the smallest eligible id for wrap-around.
    let mut wrap: Option<&'a C> = None;
    for c in candidates {
        if !has_free_slot(c) {
            continue;
        }
        if strategy == Strategy::RoundRobin && rr_last.is_some_and(|last| c.id() <= last) {
            if wrap.is_none_or(|w| c.id() < w.id()) && c.capabilities().covers(needs) {
                wrap = Some(c);
            }
            continue;
        }
        let key = strategy_key(strategy, c);
        let better = match &best {
            None => true,
            Some((b, bk)) => key < *bk || (key == *bk && c.id() < b.id()),
        };
        if better && c.capabilities().covers(needs) {
            best = Some((c, key));
        }
    }
    best.map(|(c, _)| c).or(wrap)
}

/// The strategy's sort key of a worker (smaller is better; ties go to the smaller id).
fn strategy_key<C: Candidate + ?Sized>(strategy: Strategy, c: &C) -> f64 {
    let key = match strategy {
        Strategy::RoundRobin => 0.0,
        Strategy::LoadCpu => c.load().cpu_percent,
        Strategy::LoadTasks => f64::from(c.load().running_jobs),
        Strategy::LoadRank => -rank(c.score(), c.load().cpu_percent),
    };
    // One zero: `-0.0 + 0.0` is `0.0`, so a total order agrees with `==` on ties.
    key + 0.0
}

/// [`strategy_key`] with a total order, for ordered sets.
#[derive(Debug, Clone, Copy)]
struct Key(f64);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Worker ids, shared between the index and the capable-worker sets.
pub type WorkerId = Arc<str>;

/// The workers that can take a job now (accepting work, a free slot), kept in the strategy's
/// order as their loads change. Choosing a worker is then a walk from the best one to the first
/// capable one, instead of a pass over every worker with a capability check each (which cost
/// ~25 us per placement with 1000 workers). Chooses exactly what [`select`] would.
///
/// The owner calls [`update`](Self::update) after anything placement looks at changes (load,
/// slots, draining) and [`remove`](Self::remove) when a worker leaves.
#[derive(Debug, Clone, Default)]
pub struct PlacementIndex {
    strategy: Strategy,
    ready: BTreeSet<(Key, WorkerId)>,
    keys: HashMap<WorkerId, Key>,
}

impl PlacementIndex {
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            ..Default::default()
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Workers that can take a job now.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// True when `id` is indexed as able to take a job now.
    pub fn is_ready(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// (Re)indexes `c` from its current state.
    pub fn update<C: Candidate + ?Sized>(&mut self, c: &C) {
        let new = has_free_slot(c).then(|| Key(strategy_key(self.strategy, c)));
        let old = self
            .keys
            .get_key_value(c.id())
            .map(|(id, k)| (id.clone(), *k));
        if old.as_ref().map(|(_, k)| *k) == new {
            return;
        }
        let id = match old {
            Some((id, k)) => {
                self.ready.remove(&(k, id.clone()));
                self.keys.remove(&id);
                id
            }
            None => WorkerId::from(c.id()),
        };
        if let Some(k) = new {
            self.ready.insert((k, id.clone()));
            self.keys.insert(id, k);
        }
    }

    /// Forgets a worker (lost, disconnected, replaced).
    pub fn remove(&mut self, id: &str) {
        if let Some((id, k)) = self.keys.remove_entry(id) {
            self.ready.remove(&(k, id));
        }
    }

    /// The worker to place a job on among the ready ones in `capable` (the workers that cover
    /// the job's needs, from [`CapableCache`]). `rr_last`: the id chosen last time (for `RR`).
    pub fn select(&self, capable: &HashSet<WorkerId>, rr_last: Option<&str>) -> Option<WorkerId> {
        if capable.is_empty() || self.ready.is_empty() {
            return None;
        }
        // Few capable workers (a job only GPU nodes can run): look at those alone.
        let few = capable.len() < self.ready.len() / 8;
        let rr = self.strategy == Strategy::RoundRobin;
        if few {
            let mut after: Option<(Key, &WorkerId)> = None;
            let mut wrap: Option<&WorkerId> = None;
            for id in capable {
                let Some(&k) = self.keys.get(id) else {
                    continue;
                };
                if rr && rr_last.is_some_and(|last| &**id <= last) {
                    if wrap.is_none_or(|w| id < w) {
                        wrap = Some(id);
                    }
                } else if after.is_none_or(|best| (k, id) < best) {
                    after = Some((k, id));
                }
            }
            return after.map(|(_, id)| id).or(wrap).cloned();
        }
        if rr && let Some(last) = rr_last {
            // All RR keys are equal, so the set is in id order: the first capable id after
            // `last`, else the first one from the start (wrap around).
            let bound = (Key(0.0), WorkerId::from(last));
            return self
                .ready
                .range((Bound::Excluded(&bound), Bound::Unbounded))
                .chain(self.ready.range(..=&bound))
                .find(|(_, id)| capable.contains(id))
                .map(|(_, id)| id.clone());
        }
        self.ready
            .iter()
            .find(|(_, id)| capable.contains(id))
            .map(|(_, id)| id.clone())
    }
}

/// For each distinct [`CapabilityNeeds`] seen, the workers that cover it and accept work.
/// Workers' capabilities change only when they (re)register, so the sets are updated then,
/// when a worker drains and when it leaves, not rebuilt per placement.
#[derive(Debug, Clone, Default)]
pub struct CapableCache {
    sets: HashMap<CapabilityNeeds, HashSet<WorkerId>>,
}

/// Distinct needs remembered at most (a client sending endless variations cannot grow the
/// cache without bound; it is rebuilt on demand).
const CAPABLE_CACHE_MAX: usize = 256;

impl CapableCache {
    /// The capable, accepting workers for `needs`, computed from `all` on first use.
    pub fn get<'a, C: Candidate + 'a>(
        &mut self,
        needs: &CapabilityNeeds,
        all: impl IntoIterator<Item = &'a C>,
    ) -> &HashSet<WorkerId> {
        if !self.sets.contains_key(needs) {
            if self.sets.len() >= CAPABLE_CACHE_MAX {
                self.sets.clear();
            }
            let set = all
                .into_iter()
                .filter(|c| c.accepting() && c.capabilities().covers(needs))
                .map(|c| WorkerId::from(c.id()))
                .collect();
            self.sets.insert(needs.clone(), set);
        }
        &self.sets[needs]
    }

    /// A worker registered, re-registered (maybe with other capabilities), or started or
    /// stopped accepting work (drain).
    pub fn worker_changed<C: Candidate + ?Sized>(&mut self, c: &C) {
        let mut id: Option<WorkerId> = None;
        for (needs, set) in &mut self.sets {
            if c.accepting() && c.capabilities().covers(needs) {
                if !set.contains(c.id()) {
                    set.insert(id.get_or_insert_with(|| WorkerId::from(c.id())).clone());
                }
            } else {
                set.remove(c.id());
            }
        }
    }

    /// A worker left.
    pub fn worker_removed(&mut self, id: &str) {
        for set in self.sets.values_mut() {
            set.remove(id);
        }
    }

    /// Forgets everything (all workers left).
    pub fn clear(&mut self) {
        self.sets.clear();
    }

    /// Distinct needs cached.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }
}

/// Updates the load the orchestrator keeps for a worker when it is given a job, so that jobs
/// submitted before its next report see it busier: one more running job and that job's share
/// of the CPU (100% / slots).
pub fn account_assignment(load: &mut Load, max_jobs: u32) {
    load.running_jobs = load.running_jobs.saturating_add(1);
    load.cpu_percent = (load.cpu_percent + 100.0 / f64::from(max_jobs.max(1))).min(100.0);
}

/// The reverse of [`account_assignment`] when a job ends before the next report.
pub fn account_release(load: &mut Load, max_jobs: u32) {
    load.running_jobs = load.running_jobs.saturating_sub(1);
    load.cpu_percent = (load.cpu_percent - 100.0 / f64::from(max_jobs.max(1))).max(0.0);
}

/// Why nothing could be placed, for the `failed{NO_WORKER}` reason.
pub fn explain_unplaceable<'a, C: Candidate + 'a>(
    candidates: impl IntoIterator<Item = &'a C>,
    needs: &CapabilityNeeds,
) -> String {
    let mut total = 0usize;
    let mut capable = 0usize;
    let mut sample_missing: Option<(String, Vec<String>)> = None;
    for c in candidates {
        total += 1;
        let missing = c.capabilities().missing(needs);
        if missing.is_empty() {
            capable += 1;
        } else if sample_missing.is_none() {
            sample_missing = Some((c.id().to_string(), missing));
        }
    }
    if total == 0 {
        "no capable worker: no workers are registered".into()
    } else if capable == 0 {
        let (id, missing) = sample_missing.unwrap_or_default();
        format!(
            "no capable worker: none of the {total} workers covers the job's needs (worker {id} lacks {})",
            missing.join(", ")
        )
    } else {
        format!("no capable worker free: all {capable} capable workers are busy or draining")
    }
}

/// What a job needs from the worker that runs it, as far as the job model tells: the encoders it
/// names, forced decoders, hardware acceleration, tonemapping.
pub fn needs_of(job: &Job) -> CapabilityNeeds {
    let mut needs = CapabilityNeeds::default();
    for input in &job.inputs {
        for d in &input.decoders {
            needs.decoders.insert(d.value.clone());
        }
        if let Some(hw) = &input.hwaccel
            && !matches!(hw.name.as_str(), "" | "auto" | "none")
        {
            needs.hwaccels.insert(hw.name.clone());
        }
    }
    let mut filter_text: Vec<&str> = job.complex_filters.iter().map(String::as_str).collect();
    for output in &job.outputs {
        for s in &output.streams {
            if let Some(CodecChoice::Encoder(e)) = &s.value.codec {
                needs.encoders.insert(e.clone());
            }
            if let Some(f) = &s.value.filter {
                filter_text.push(f);
            }
        }
    }
    for f in filter_text {
        if f.contains("tonemap") {
            needs.tonemap = true;
        }
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{ByStream, Input, Output, StreamSettings, StreamSpecifier};

    fn w(id: &str, score: f64, cpu: f64, running: u32, max: u32) -> WorkerView {
        WorkerView {
            id: id.into(),
            capabilities: Capabilities {
                encoders: ["libx264".to_string()].into(),
                ..Default::default()
            },
            score,
            max_jobs: max,
            load: Load {
                cpu_percent: cpu,
                running_jobs: running,
                ..Default::default()
            },
            accepting: true,
        }
    }

    fn pick<'a>(s: Strategy, ws: &'a [WorkerView], rr: Option<&str>) -> Option<&'a str> {
        select(s, ws, &CapabilityNeeds::default(), rr).map(|c| c.id.as_str())
    }

    #[test]
    fn parses_clusterplex_names() {
        assert_eq!("RR".parse::<Strategy>().unwrap(), Strategy::RoundRobin);
        assert_eq!("load_cpu".parse::<Strategy>().unwrap(), Strategy::LoadCpu);
        assert_eq!(
            "LOAD_TASKS".parse::<Strategy>().unwrap(),
            Strategy::LoadTasks
        );
        assert_eq!("LOAD_RANK".parse::<Strategy>().unwrap(), Strategy::LoadRank);
        assert_eq!(Strategy::default(), Strategy::LoadRank);
        assert!("ROUND_ROBIN".parse::<Strategy>().is_err());
        for s in [
            Strategy::RoundRobin,
            Strategy::LoadCpu,
            Strategy::LoadTasks,
            Strategy::LoadRank,
        ] {
            assert_eq!(s.name().parse::<Strategy>().unwrap(), s);
        }
    }

    #[test]
    fn round_robin_cycles_in_id_order_and_wraps() {
        let ws = vec![
            w("c", 1.0, 0.0, 0, 1),
            w("a", 1.0, 0.0, 0, 1),
            w("b", 1.0, 0.0, 0, 1),
        ];
        assert_eq!(pick(Strategy::RoundRobin, &ws, None), Some("a"));
        assert_eq!(pick(Strategy::RoundRobin, &ws, Some("a")), Some("b"));
        assert_eq!(pick(Strategy::RoundRobin, &ws, Some("b")), Some("c"));
        assert_eq!(pick(Strategy::RoundRobin, &ws, Some("c")), Some("a"));
        // The last worker left the cluster: continue after its id.
        assert_eq!(pick(Strategy::RoundRobin, &ws, Some("bb")), Some("c"));
    }

    #[test]
    fn round_robin_skips_full_workers() {
        let ws = vec![
            w("a", 1.0, 0.0, 0, 1),
            w("b", 1.0, 0.0, 1, 1),
            w("c", 1.0, 0.0, 0, 1),
        ];
        assert_eq!(pick(Strategy::RoundRobin, &ws, Some("a")), Some("c"));
        assert_eq!(pick(Strategy::RoundRobin, &ws, Some("c")), Some("a"));
    }

    #[test]
    fn load_cpu_picks_lowest_cpu_and_breaks_ties_by_id() {
        let ws = vec![
            w("b", 1.0, 10.0, 0, 2),
            w("a", 1.0, 30.0, 0, 2),
            w("c", 1.0, 10.0, 0, 2),
        ];
        assert_eq!(pick(Strategy::LoadCpu, &ws, None), Some("b"));
    }

    #[test]
    fn load_tasks_picks_fewest_jobs_and_breaks_ties_by_id() {
        let ws = vec![
            w("z", 1.0, 0.0, 1, 4),
            w("y", 1.0, 90.0, 0, 4),
            w("x", 1.0, 0.0, 0, 4),
        ];
        assert_eq!(pick(Strategy::LoadTasks, &ws, None), Some("x"));
    }

    #[test]
    fn load_rank_is_score_times_free_cpu() {
        // a: 100 * 0.5 = 50; b: 80 * 0.9 = 72; c: 200 * 0.2 = 40.
        let ws = vec![
            w("a", 100.0, 50.0, 0, 2),
            w("b", 80.0, 10.0, 0, 2),
            w("c", 200.0, 80.0, 0, 2),
        ];
        assert_eq!(pick(Strategy::LoadRank, &ws, None), Some("b"));
        // Ties (same rank) go to the smaller id, whatever the order.
        let ws = vec![w("q", 100.0, 50.0, 0, 2), w("p", 50.0, 0.0, 0, 2)];
        assert_eq!(pick(Strategy::LoadRank, &ws, None), Some("p"));
        assert!((rank(100.0, 150.0)).abs() < 1e-9);
    }

    #[test]
    fn capability_filter_applies_to_every_strategy() {
        let mut ws = vec![w("a", 1000.0, 0.0, 0, 2), w("b", 1.0, 99.0, 1, 2)];
        ws[1].capabilities.encoders.insert("h264_nvenc".into());
        let needs = CapabilityNeeds {
            encoders: ["h264_nvenc".to_string()].into(),
            ..Default::default()
        };
        for s in [
            Strategy::RoundRobin,
            Strategy::LoadCpu,
            Strategy::LoadTasks,
            Strategy::LoadRank,
        ] {
            assert_eq!(
                select(s, &ws, &needs, None).map(|c| c.id.as_str()),
                Some("b"),
                "{s}"
            );
        }
        ws[1].load.running_jobs = 2;
        for s in [
            Strategy::RoundRobin,
            Strategy::LoadCpu,
            Strategy::LoadTasks,
            Strategy::LoadRank,
        ] {
            assert!(select(s, &ws, &needs, None).is_none(), "{s}");
        }
        assert!(explain_unplaceable(&ws, &needs).contains("busy"));
        ws.truncate(1);
        let why = explain_unplaceable(&ws, &needs);
        assert!(
            why.contains("no capable worker") && why.contains("encoder:h264_nvenc"),
            "{why}"
        );
        assert!(explain_unplaceable::<WorkerView>(&[], &needs).contains("no workers"));
    }

    #[test]
    fn draining_workers_are_skipped() {
        let mut ws = vec![w("a", 1.0, 0.0, 0, 1), w("b", 1.0, 0.0, 0, 1)];
        ws[0].accepting = false;
        for s in [
            Strategy::RoundRobin,
            Strategy::LoadCpu,
            Strategy::LoadTasks,
            Strategy::LoadRank,
        ] {
            assert_eq!(pick(s, &ws, None), Some("b"));
        }
    }

    #[test]
    fn assignment_updates_load_before_the_next_report() {
        // Two equal workers: consecutive placements must alternate, not pile onto one.
        for s in [Strategy::LoadCpu, Strategy::LoadTasks, Strategy::LoadRank] {
            let mut ws = vec![w("a", 100.0, 0.0, 0, 4), w("b", 100.0, 0.0, 0, 4)];
            let mut chosen = Vec::new();
            for _ in 0..4 {
                let id = pick(s, &ws, None).unwrap().to_string();
                let wk = ws.iter_mut().find(|x| x.id == id).unwrap();
                account_assignment(&mut wk.load, wk.max_jobs);
                chosen.push(id);
            }
            assert_eq!(chosen, ["a", "b", "a", "b"], "{s}");
            assert_eq!(ws[0].load.running_jobs, 2);
            assert!((ws[0].load.cpu_percent - 50.0).abs() < 1e-9);
            account_release(&mut ws[0].load, 4);
            assert_eq!(ws[0].load.running_jobs, 1);
        }
        // Slots fill up: a single-slot worker takes one job only.
        let mut ws = vec![w("a", 100.0, 0.0, 0, 1)];
        let load = &mut ws[0].load;
        account_assignment(load, 1);
        assert!(pick(Strategy::LoadRank, &ws, None).is_none());
    }

    /// A small deterministic generator (no extra dependency for tests).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn nvenc() -> CapabilityNeeds {
        CapabilityNeeds {
            encoders: ["h264_nvenc".to_string()].into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_index_chooses_what_select_chooses() {
        for strategy in [
            Strategy::RoundRobin,
            Strategy::LoadCpu,
            Strategy::LoadTasks,
            Strategy::LoadRank,
        ] {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            // 64 workers; one in 16 has NVENC (so that need takes the few-capable path).
            let mut ws: Vec<WorkerView> = (0..64)
                .map(|i| {
                    // Few distinct scores and CPU figures: plenty of ties.
                    let mut v = w(&format!("w{:02}", (i * 37) % 64), 0.0, 0.0, 0, 1);
                    v.score = 50.0 * (1 + rng.below(3)) as f64;
                    v.max_jobs = 1 + rng.below(3) as u32;
                    v.load.cpu_percent = 25.0 * rng.below(5) as f64;
                    if i % 16 == 0 {
                        v.capabilities.encoders.insert("h264_nvenc".into());
                    }
                    v
                })
                .collect();
            let mut index = PlacementIndex::new(strategy);
            let mut cache = CapableCache::default();
            for v in &ws {
                index.update(v);
            }
            let mut rr_last: Option<String> = None;
            for step in 0..3000 {
                let needs = if step % 3 == 0 {
                    nvenc()
                } else {
                    CapabilityNeeds::default()
                };
                let expected =
                    select(strategy, &ws, &needs, rr_last.as_deref()).map(|c| c.id.clone());
                let capable = cache.get(&needs, &ws);
                let got = index.select(capable, rr_last.as_deref());
                assert_eq!(
                    got.as_deref(),
                    expected.as_deref(),
                    "{strategy} step {step}"
                );
                if let Some(id) = expected {
                    let v = ws.iter_mut().find(|v| v.id == id).unwrap();
                    account_assignment(&mut v.load, v.max_jobs);
                    index.update(v);
                    rr_last = Some(id);
                }
                // Something else happens to a random worker.
                let i = rng.below(ws.len() as u64) as usize;
                let v = &mut ws[i];
                match rng.below(5) {
                    0 | 1 => account_release(&mut v.load, v.max_jobs),
                    2 => v.load.cpu_percent = 25.0 * rng.below(5) as f64,
                    3 => {
                        v.accepting = !v.accepting;
                        cache.worker_changed(v);
                    }
                    _ => {}
                }
                index.update(v);
            }
        }
    }

    #[test]
    fn capable_cache_follows_register_loss_reconnect_and_drain() {
        let mut cache = CapableCache::default();
        let ids = |cache: &mut CapableCache, ws: &[WorkerView], needs: &CapabilityNeeds| {
            let mut v: Vec<String> = cache.get(needs, ws).iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        };
        let mut ws = vec![w("a", 1.0, 0.0, 0, 1), w("b", 1.0, 0.0, 0, 1)];
        let any = CapabilityNeeds::default();
        assert_eq!(ids(&mut cache, &ws, &nvenc()), Vec::<String>::new());
        assert_eq!(ids(&mut cache, &ws, &any), ["a", "b"]);
        assert_eq!(cache.len(), 2);
        // Registers: a worker with NVENC joins; both cached sets learn of it, without a rebuild
        // (`get` is given no workers here, so anything it knows came from the update).
        let mut c = w("c", 1.0, 0.0, 0, 1);
        c.capabilities.encoders.insert("h264_nvenc".into());
        cache.worker_changed(&c);
        ws.push(c.clone());
        assert_eq!(ids(&mut cache, &[], &nvenc()), ["c"]);
        assert_eq!(ids(&mut cache, &[], &any), ["a", "b", "c"]);
        // Reconnects with other capabilities (its GPU is gone).
        c.capabilities.encoders.remove("h264_nvenc");
        cache.worker_changed(&c);
        assert_eq!(ids(&mut cache, &[], &nvenc()), Vec::<String>::new());
        assert_eq!(ids(&mut cache, &[], &any), ["a", "b", "c"]);
        // Drained: no longer a candidate for anything; back when it accepts again.
        ws[0].accepting = false;
        cache.worker_changed(&ws[0]);
        assert_eq!(ids(&mut cache, &[], &any), ["b", "c"]);
        ws[0].accepting = true;
        cache.worker_changed(&ws[0]);
        assert_eq!(ids(&mut cache, &[], &any), ["a", "b", "c"]);
        // Lost.
        cache.worker_removed("b");
        assert_eq!(ids(&mut cache, &[], &any), ["a", "c"]);
        // A new distinct need is computed from the workers passed in.
        let libx264 = CapabilityNeeds {
            encoders: ["libx264".to_string()].into(),
            ..Default::default()
        };
        assert_eq!(ids(&mut cache, &ws[..1], &libx264), ["a"]);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn the_index_follows_slots_and_draining() {
        let mut index = PlacementIndex::new(Strategy::LoadRank);
        let mut a = w("a", 100.0, 0.0, 0, 1);
        let b = w("b", 50.0, 0.0, 0, 1);
        index.update(&a);
        index.update(&b);
        let all: HashSet<WorkerId> = ["a", "b"].into_iter().map(WorkerId::from).collect();
        assert_eq!(index.select(&all, None).as_deref(), Some("a"));
        account_assignment(&mut a.load, 1);
        index.update(&a);
        assert!(!index.is_ready("a"));
        assert_eq!(index.select(&all, None).as_deref(), Some("b"));
        account_release(&mut a.load, 1);
        a.accepting = false;
        index.update(&a);
        assert_eq!(index.select(&all, None).as_deref(), Some("b"));
        index.remove("b");
        assert_eq!(index.ready_len(), 0);
        assert_eq!(index.select(&all, None), None);
    }

    #[test]
    fn needs_come_from_the_job() {
        let mut job = Job::default();
        let mut input = Input::new("in.mkv");
        input.hwaccel = Some(crate::job::HwAccel {
            name: "cuda".into(),
            ..Default::default()
        });
        input.decoders.push(ByStream::new(
            StreamSpecifier::all(),
            "hevc_cuvid".to_string(),
        ));
        job.inputs.push(input);
        let mut out = Output::new("out.mp4", None);
        out.streams.push(ByStream::new(
            StreamSpecifier::all(),
            StreamSettings {
                codec: Some(CodecChoice::Encoder("libx264".into())),
                filter: Some("tonemap=hable".into()),
                ..Default::default()
            },
        ));
        out.streams.push(ByStream::new(
            StreamSpecifier::all(),
            StreamSettings {
                codec: Some(CodecChoice::Copy),
                ..Default::default()
            },
        ));
        job.outputs.push(out);
        let needs = needs_of(&job);
        assert_eq!(needs.encoders, ["libx264".to_string()].into());
        assert_eq!(needs.decoders, ["hevc_cuvid".to_string()].into());
        assert_eq!(needs.hwaccels, ["cuda".to_string()].into());
        assert!(needs.tonemap);
    }
}
