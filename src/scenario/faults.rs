//! Faults: per-action checks, `repeat` expansion, and the seeded resolution of
//! `{ role, pick }` targets.
//!
//! Picks are resolved by walking the timeline in (estimated) time order and tracking which
//! nodes the plan has up, down or paused, so that a pick chooses among nodes the action can
//! apply to: `kill`/`stop`/`restart`/`pause` pick running nodes, `start` picks nodes an
//! earlier fault took down, `unpause` paused ones, `netem` running or paused ones. Named
//! targets are taken as written (and update the tracked states).

use super::plan::{Action, ClusterPlan, Expectations, NetemParams, PlannedFault, Target, Trigger};
use super::pos::Seg;
use super::raw::{ActionName, PickRole, RawFault, RawTarget, RawTrigger};
use super::locate::{fmt_d, keypath, unknown_node, Ctx};
use super::values::Pick;
use super::ScenarioError;
use crate::nodes::canonical as canonical_name;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use streamd_contract::spec::JobSpec;

/// Default grace of `stop` and `restart` (SIGTERM, then SIGKILL after it).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// Upper bound of `repeat.count`: a typo like 1000000 should not build a huge plan.
const MAX_REPEAT: u32 = 1000;

/// A target before picks are resolved.
#[derive(Debug, Clone)]
enum TargetSpec {
    Fixed(Target),
    Pick { role: PickRole, pick: Pick },
}

/// One occurrence of a fault, before its picks are resolved.
struct Pending {
    index: usize,
    repetition: u32,
    line: usize,
    trigger: Trigger,
    action: Action,
    target: Option<TargetSpec>,
    undo_after: Option<Duration>,
}

/// Checks every fault, expands repeats and resolves picks. Returns the faults in file
/// order (repeats in place) and the plan's warnings.
pub(super) fn plan(
    raw: Vec<RawFault>,
    cluster: &ClusterPlan,
    job: &JobSpec,
    expect: &Expectations,
    seed: u64,
    cx: &Ctx<'_>,
) -> Result<(Vec<PlannedFault>, Vec<String>), ScenarioError> {
    let mut pending = Vec::new();
    for (i, f) in raw.into_iter().enumerate() {
        pending.extend(check(i, f, cluster, job, expect, cx)?);
    }
    resolve(pending, cluster, job, seed, cx)
}

fn fields(f: &RawFault) -> [(&'static str, bool); 21] {
    [
        ("target", f.target.is_some()),
        ("signal", f.signal.is_some()),
        ("grace", f.grace.is_some()),
        ("for", f.for_.is_some()),
        ("delay", f.delay.is_some()),
        ("jitter", f.jitter.is_some()),
        ("distribution", f.distribution.is_some()),
        ("loss", f.loss.is_some()),
        ("duplicate", f.duplicate.is_some()),
        ("corrupt", f.corrupt.is_some()),
        ("rate", f.rate.is_some()),
        ("groups", f.groups.is_some()),
        ("one_way", f.one_way.is_some()),
        ("what", f.what.is_some()),
        ("how", f.how.is_some()),
        ("error", f.error.is_some()),
        ("probability", f.probability.is_some()),
        ("ops", f.ops.is_some()),
        ("path", f.path.is_some()),
        ("full_after", f.full_after.is_some()),
        ("lose_unsynced", f.lose_unsynced.is_some()),
    ]
}

fn allowed(a: ActionName) -> &'static [&'static str] {
    match a {
        ActionName::Kill => &["target", "signal", "lose_unsynced"],
        ActionName::Stop | ActionName::Restart => &["target", "grace", "lose_unsynced"],
        ActionName::Start | ActionName::Unpause => &["target"],
        ActionName::Pause => &["target", "for"],
        ActionName::Netem => &["target", "delay", "jitter", "distribution", "loss", "duplicate", "corrupt", "rate", "for"],
        ActionName::Partition => &["groups", "one_way", "for"],
        ActionName::Corrupt => &["target", "what", "how"],
        ActionName::Disk => &["target", "delay", "jitter", "error", "probability", "ops", "path", "full_after", "for"],
    }
}

/// Validates one `faults[i]` entry and expands its `repeat`.
fn check(
    i: usize,
    f: RawFault,
    cluster: &ClusterPlan,
    job: &JobSpec,
    expect: &Expectations,
    cx: &Ctx<'_>,
) -> Result<Vec<Pending>, ScenarioError> {
    let base = keypath!["faults", i].to_vec();
    let p = |k: &str| {
        let mut v = base.clone();
        v.push(Seg::from(k));
        v
    };
    let name = f.action.as_str();
    let ok = allowed(f.action);
    for (field, set) in fields(&f) {
        if set && !ok.contains(&field) {
            let hint = match (field, f.action) {
                ("for", ActionName::Kill | ActionName::Stop | ActionName::Restart) => {
                    " (a killed or stopped node stays down: add a `start` fault to bring it back)".to_string()
                }
                ("target", ActionName::Partition) => " (a partition names its nodes in `groups`)".to_string(),
                _ => String::new(),
            };
            return Err(cx.at_key(&p(field), format!("`{field}` does not apply to `{name}`: `{name}` takes {}{hint}", ok.join(", "))));
        }
    }

    let trigger = match f.at {
        RawTrigger::At(d) => Trigger::At(d),
        RawTrigger::Checkpoint(0) => {
            return Err(cx.at_value(&keypath!["faults", i, "at", "checkpoint"], "0 is out of range: expected a checkpoint number of at least 1"))
        }
        RawTrigger::Checkpoint(n) => {
            if job.checkpoint_interval.is_disabled() {
                return Err(cx.at_value(&p("at"), "a checkpoint trigger needs periodic checkpoints: expected job.checkpoint_interval above 0"));
            }
            Trigger::Checkpoint(n)
        }
    };

    let undo_after = match &f.for_ {
        Some(d) if d.0.is_zero() => return Err(cx.at_value(&p("for"), "expected a positive duration (omit `for` to keep the fault until the run ends)")),
        Some(d) => Some(d.0),
        None => None,
    };

    // Checked before `target` is taken out of `f`.
    let disk_action = match f.action {
        ActionName::Disk => Some(disk(&f, &p, &base, cx)?),
        _ => None,
    };
    let target = match (f.action, f.target) {
        (ActionName::Partition, _) => None,
        (_, None) => {
            return Err(cx.at_value(&base, format!("missing field `target` for `{name}`: expected a node name, an alias, `leader`, or {{ role, pick }}")))
        }
        (action, Some(t)) => Some(target(t, action, &p("target"), cluster, cx)?),
    };

    let grace = f.grace.as_ref().map_or(DEFAULT_GRACE, |g| g.0);
    let lose_unsynced = f.lose_unsynced.unwrap_or(false);
    if lose_unsynced && cluster.engine != crate::engine::Engine::Streamd {
        return Err(cx.at_key(
            &p("lose_unsynced"),
            "`lose_unsynced` rolls back what a streamd node did not fsync, through the passthrough of its /data: expected `cluster.engine: streamd`",
        ));
    }
    if let (true, Some(TargetSpec::Fixed(Target::Node(n)))) = (lose_unsynced, &target) {
        if !n.starts_with("jobmanager-") && !n.starts_with("taskmanager-") {
            return Err(cx.at_value(
                &p("target"),
                format!("`{n}` has no passthrough of /data to lose power on: expected a jobmanager or a taskmanager with `lose_unsynced`"),
            ));
        }
    }
    let action = match f.action {
        ActionName::Kill => Action::Kill { signal: f.signal.map_or(crate::signal::Signal::KILL, |s| s.0), lose_unsynced },
        ActionName::Stop => Action::Stop { grace, lose_unsynced },
        ActionName::Start => Action::Start,
        ActionName::Restart => Action::Restart { grace, lose_unsynced },
        ActionName::Pause => Action::Pause,
        ActionName::Unpause => Action::Unpause,
        ActionName::Netem => {
            let params = NetemParams {
                delay: f.delay.map(|d| d.0),
                jitter: f.jitter.map(|d| d.0),
                distribution: f.distribution.unwrap_or_default(),
                loss: f.loss.map(|x| x.0),
                duplicate: f.duplicate.map(|x| x.0),
                corrupt: f.corrupt.map(|x| x.0),
                rate: f.rate.map(|x| x.0),
            };
            if params == NetemParams::default() {
                return Err(cx.at_value(&base, "netem without parameters: expected at least one of delay, loss, duplicate, corrupt, rate"));
            }
            if params.jitter.is_some() && params.delay.is_none() {
                return Err(cx.at_key(&p("jitter"), "jitter without delay: expected `delay` as well (jitter varies the delay)"));
            }
            if f.distribution.is_some() && params.jitter.is_none() {
                return Err(cx.at_key(&p("distribution"), "distribution without jitter: expected `jitter` as well (it spreads the jitter)"));
            }
            Action::Netem(params)
        }
        ActionName::Partition => partition(f.groups, f.one_way.unwrap_or(false), &p("groups"), &base, cluster, cx)?,
        ActionName::Corrupt => corrupt(f.what, f.how, target.as_ref(), &base, cluster, cx)?,
        ActionName::Disk => disk_action.expect("checked above"),
    };

    let (count, every) = match &f.repeat {
        None => (1, Duration::ZERO),
        Some(r) => {
            if !matches!(trigger, Trigger::At(_)) {
                return Err(cx.at_key(&p("repeat"), "`repeat` needs a time trigger: expected `at: <duration>`, not a checkpoint"));
            }
            if r.every.0.is_zero() {
                return Err(cx.at_value(&keypath!["faults", i, "repeat", "every"], "expected a positive duration"));
            }
            if !(1..=MAX_REPEAT).contains(&r.count) {
                return Err(cx.at_value(&keypath!["faults", i, "repeat", "count"], format!("{} is out of range: expected 1 to {MAX_REPEAT}", r.count)));
            }
            (r.count, r.every.0)
        }
    };

    let line = cx.idx.value(&base).line;
    let mut out = Vec::new();
    for rep in 0..count {
        let trigger = match trigger {
            Trigger::At(d) => Trigger::At(d + every * rep),
            t => t,
        };
        if let Trigger::At(d) = trigger {
            if d >= expect.timeout {
                let (where_, what) = if rep == 0 { (p("at"), format!("fault at {}", fmt_d(d))) } else { (p("repeat"), format!("occurrence {} at {}", rep + 1, fmt_d(d))) };
                return Err(cx.at_value(&where_, format!("{what} is not before expect.timeout ({}): expected an earlier time or a longer timeout", fmt_d(expect.timeout))));
            }
        }
        out.push(Pending { index: i, repetition: rep, line, trigger, action: action.clone(), target: target.clone(), undo_after });
    }
    Ok(out)
}

/// Resolves a written target (name, alias, `leader`, or `{ role, pick }`) against the cluster.
fn target(t: RawTarget, action: ActionName, p: &[Seg], cluster: &ClusterPlan, cx: &Ctx<'_>) -> Result<TargetSpec, ScenarioError> {
    match t {
        RawTarget::Name(n) => {
            if crate::nodes::is_leader(&n) {
                if action == ActionName::Start {
                    return Err(cx.at_value(p, "`leader` cannot be started (a node that is down leads nothing): expected a jobmanager's name"));
                }
                return Ok(TargetSpec::Fixed(Target::Leader));
            }
            match canonical_name(&n).filter(|c| cluster.has_node(c)) {
                Some(c) => Ok(TargetSpec::Fixed(Target::Node(c))),
                None => Err(cx.at_value(p, unknown_node(&n, cluster, ", `leader`, or { role, pick }"))),
            }
        }
        RawTarget::Pick(rp) => {
            let (role, have) = match rp.role {
                PickRole::Taskmanager => ("taskmanager", cluster.taskmanagers),
                PickRole::Jobmanager => ("jobmanager", cluster.jobmanagers),
            };
            if let Pick::Count(n) = rp.pick.0 {
                if n > have {
                    let mut pp = p.to_vec();
                    pp.push(Seg::from("pick"));
                    return Err(cx.at_value(&pp, format!("pick {n}: the cluster has only {have} {role}{}: expected at most {have}", if have == 1 { "" } else { "s" })));
                }
            }
            Ok(TargetSpec::Pick { role: rp.role, pick: rp.pick.0 })
        }
    }
}

/// `corrupt`: streamd's files; `what` is required; `local` copies live on taskmanagers.
fn corrupt(
    what: Option<crate::fault::corrupt::CorruptWhat>,
    how: Option<crate::fault::corrupt::CorruptHow>,
    target: Option<&TargetSpec>,
    base: &[Seg],
    cluster: &ClusterPlan,
    cx: &Ctx<'_>,
) -> Result<Action, ScenarioError> {
    use crate::fault::corrupt::CorruptWhat;
    let at = |k: &str| {
        let mut v = base.to_vec();
        v.push(Seg::from(k));
        v
    };
    if cluster.engine != crate::engine::Engine::Streamd {
        return Err(cx.at_value(&at("action"), "`corrupt` damages streamd's checkpoint and output files: expected `cluster.engine: streamd`"));
    }
    let Some(what) = what else {
        return Err(cx.at_value(base, "missing field `what` for `corrupt`: expected snapshot, metadata, staged or local"));
    };
    if what == CorruptWhat::Local {
        let on_taskmanager = match target {
            Some(TargetSpec::Fixed(Target::Node(n))) => n.starts_with("taskmanager-"),
            Some(TargetSpec::Pick { role, .. }) => *role == PickRole::Taskmanager,
            _ => false,
        };
        if !on_taskmanager {
            return Err(cx.at_value(&at("target"), "`what: local` damages a taskmanager's node-local snapshot copies: expected a taskmanager"));
        }
    }
    Ok(Action::Corrupt { what, how: how.unwrap_or_default() })
}

/// A `disk` fault: exactly one of `delay`, `error` (with `probability`), `full_after`.
fn disk(f: &RawFault, p: &dyn Fn(&str) -> Vec<Seg>, base: &[Seg], cx: &Ctx<'_>) -> Result<Action, ScenarioError> {
    use crate::diskfault::{DiskFault, DiskKind, Errno, Op};
    let kinds = [("delay", f.delay.is_some()), ("error", f.error.is_some()), ("full_after", f.full_after.is_some())];
    let set: Vec<&str> = kinds.iter().filter(|(_, s)| *s).map(|(k, _)| *k).collect();
    if set.len() != 1 {
        let msg = match set.len() {
            0 => "disk without a kind: expected one of `delay`, `error` or `full_after`".to_string(),
            _ => format!("disk with {}: expected exactly one of `delay`, `error` or `full_after` (use two faults for both)", set.join(" and ")),
        };
        let at = if set.len() > 1 { p(set[1]) } else { base.to_vec() };
        return Err(cx.at_key(&at, msg));
    }
    if f.jitter.is_some() && f.delay.is_none() {
        return Err(cx.at_key(&p("jitter"), "jitter without delay: expected `delay` as well (jitter varies the delay)"));
    }
    if f.probability.is_some() && f.error.is_none() {
        return Err(cx.at_key(&p("probability"), "probability without error: expected `error` as well"));
    }
    let mut ops = Vec::new();
    for (k, o) in f.ops.iter().flatten().enumerate() {
        match Op::parse(o) {
            Some(op) => ops.push(op),
            None => {
                let mut at = p("ops");
                at.push(Seg::Index(k));
                let names: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
                return Err(cx.at_value(&at, format!("unknown operation `{o}`: expected one of {}", names.join(", "))));
            }
        }
    }
    if f.ops.as_ref().is_some_and(|o| o.is_empty()) {
        return Err(cx.at_value(&p("ops"), "empty list: expected at least one operation (omit `ops` for all of them)"));
    }
    let kind = if let Some(d) = &f.delay {
        DiskKind::Delay { delay: d.0, jitter: f.jitter.as_ref().map_or(Duration::ZERO, |j| j.0) }
    } else if let Some(e) = &f.error {
        let Some(errno) = Errno::parse(e) else {
            let names: Vec<&str> = Errno::ALL.iter().map(|e| e.name()).collect();
            return Err(cx.at_value(&p("error"), format!("unknown error `{e}`: expected one of {}", names.join(", "))));
        };
        DiskKind::Error { errno, probability: f.probability.as_ref().map_or(1.0, |x| x.0 / 100.0) }
    } else {
        let bytes = f.full_after.as_ref().map_or(0, |b| b.0);
        if ops.iter().any(|o| *o != Op::Write) {
            return Err(cx.at_value(&p("ops"), "full_after acts on writes only: expected `ops: [write]` or no `ops`"));
        }
        DiskKind::FullAfter { bytes }
    };
    let path = crate::diskfault::rules::fault_path(f.path.as_deref().unwrap_or_default()).map_err(|why| cx.at_value(&p("path"), why))?;
    Ok(Action::Disk(DiskFault { id: String::new(), kind, ops, path }))
}

fn partition(
    groups: Option<Vec<Vec<String>>>,
    one_way: bool,
    p: &[Seg],
    base: &[Seg],
    cluster: &ClusterPlan,
    cx: &Ctx<'_>,
) -> Result<Action, ScenarioError> {
    let Some(groups) = groups else {
        return Err(cx.at_value(base, "missing field `groups` for `partition`: expected e.g. `groups: [[taskmanager-1], [jobmanager-1, taskmanager-2]]`"));
    };
    if groups.len() < 2 {
        return Err(cx.at_value(p, format!("{} group(s): expected at least 2 groups of nodes to separate", groups.len())));
    }
    let mut seen: HashMap<Target, (usize, usize)> = HashMap::new();
    let mut out = Vec::new();
    for (g, names) in groups.iter().enumerate() {
        let gp = {
            let mut v = p.to_vec();
            v.push(Seg::Index(g));
            v
        };
        if names.is_empty() {
            return Err(cx.at_value(&gp, "empty group: expected at least one node"));
        }
        let mut group = Vec::new();
        for (k, n) in names.iter().enumerate() {
            let np = {
                let mut v = gp.clone();
                v.push(Seg::Index(k));
                v
            };
            let t = if crate::nodes::is_leader(n) {
                Target::Leader
            } else {
                match canonical_name(n).filter(|c| cluster.has_node(c)) {
                    Some(c) => Target::Node(c),
                    None => return Err(cx.at_value(&np, unknown_node(n, cluster, ", or `leader`"))),
                }
            };
            if let Some((g0, k0)) = seen.get(&t) {
                return Err(cx.at_value(&np, format!("`{t}` is already in groups[{g0}][{k0}]: expected each node in one group")));
            }
            seen.insert(t.clone(), (g, k));
            group.push(t);
        }
        out.push(group);
    }
    Ok(Action::Partition { groups: out, one_way })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    Down,
    Paused,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Up => "running",
            State::Down => "down",
            State::Paused => "paused",
        }
    }
}

/// Walks the occurrences in estimated time order, resolving picks with the seeded RNG
/// among the nodes in the state the action needs.
fn resolve(
    pending: Vec<Pending>,
    cluster: &ClusterPlan,
    job: &JobSpec,
    seed: u64,
    cx: &Ctx<'_>,
) -> Result<(Vec<PlannedFault>, Vec<String>), ScenarioError> {
    let interval = job.checkpoint_interval.nominal();
    let mut order: Vec<usize> = (0..pending.len()).collect();
    // Stable: equal estimates keep file order.
    order.sort_by_key(|&k| pending[k].trigger.estimate(interval));

    let mut state: BTreeMap<String, State> = cluster.node_names().into_iter().map(|n| (n, State::Up)).collect();
    // (time, node): a `pause ... for` that ends.
    let mut undos: Vec<(Duration, String)> = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut resolved: Vec<Option<Vec<Target>>> = vec![None; pending.len()];
    let mut warnings = Vec::new();
    let mut short_of_slots = false;

    for k in order {
        let f = &pending[k];
        let now = f.trigger.estimate(interval);
        undos.sort();
        while let Some((t, _)) = undos.first() {
            if *t > now {
                break;
            }
            let (_, node) = undos.remove(0);
            if state.get(&node) == Some(&State::Paused) {
                state.insert(node, State::Up);
            }
        }

        let targets: Vec<Target> = match (&f.action, &f.target) {
            (Action::Partition { groups, .. }, _) => groups.iter().flatten().cloned().collect(),
            (_, Some(TargetSpec::Fixed(t))) => vec![t.clone()],
            (action, Some(TargetSpec::Pick { role, pick })) => {
                let prefix = match role {
                    PickRole::Taskmanager => "taskmanager-",
                    PickRole::Jobmanager => "jobmanager-",
                };
                let need: &[State] = match action {
                    Action::Start => &[State::Down],
                    Action::Unpause => &[State::Paused],
                    Action::Netem(_) | Action::Disk(_) => &[State::Up, State::Paused],
                    // Files are there whether the node runs or not.
                    Action::Corrupt { .. } => &[State::Up, State::Paused, State::Down],
                    _ => &[State::Up],
                };
                let mut candidates: Vec<&String> =
                    state.iter().filter(|(n, s)| n.starts_with(prefix) && need.contains(s)).map(|(n, _)| n).collect();
                // Numeric order (taskmanager-10 after -9), so picks do not depend on string sorting.
                candidates.sort_by_key(|n| n[prefix.len()..].parse::<u32>().unwrap_or(u32::MAX));
                let amount = pick.amount(candidates.len());
                if candidates.is_empty() || amount > candidates.len() {
                    let role = prefix.trim_end_matches('-');
                    let when = match f.trigger {
                        Trigger::At(d) => format!("at {}", fmt_d(d)),
                        Trigger::Checkpoint(n) => format!("at checkpoint {n} (taken as ~{})", fmt_d(now)),
                    };
                    let states: Vec<&str> = need.iter().map(|s| s.word()).collect();
                    return Err(cx.at_value(
                        &keypath!["faults", f.index, "target"],
                        format!(
                            "pick {pick}: {} {role}(s) {} {when} in this plan: expected a pick the cluster can satisfy then{}",
                            candidates.len(),
                            states.join(" or "),
                            if matches!(action, Action::Start) { " (start picks among nodes an earlier fault took down)" } else { "" }
                        ),
                    ));
                }
                let mut chosen: Vec<usize> = rand::seq::index::sample(&mut rng, candidates.len(), amount).into_vec();
                chosen.sort_unstable();
                chosen.into_iter().map(|c| Target::Node(candidates[c].clone())).collect()
            }
            (_, None) => Vec::new(),
        };

        for t in &targets {
            let Target::Node(n) = t else { continue };
            let new = match &f.action {
                Action::Kill { .. } | Action::Stop { .. } => Some(State::Down),
                Action::Start | Action::Restart { .. } | Action::Unpause => Some(State::Up),
                Action::Pause => {
                    if let Some(d) = f.undo_after {
                        undos.push((now + d, n.clone()));
                    }
                    Some(State::Paused)
                }
                Action::Netem(_) | Action::Partition { .. } | Action::Corrupt { .. } | Action::Disk(_) => None,
            };
            if let Some(s) = new {
                state.insert(n.clone(), s);
            }
        }

        let up_slots = state.iter().filter(|(n, s)| n.starts_with("taskmanager-") && **s == State::Up).count() as u32 * cluster.slots;
        if up_slots < job.parallelism && !short_of_slots {
            let who: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
            warnings.push(format!(
                "line {}: after faults[{}] ({} {} at ~{}) only {up_slots} slots are up for parallelism {}: the job waits until a taskmanager comes back",
                f.line,
                f.index,
                f.action.name(),
                who.join(", "),
                fmt_d(now),
                job.parallelism
            ));
        }
        short_of_slots = up_slots < job.parallelism;
        resolved[k] = Some(targets);
    }

    let faults = pending
        .into_iter()
        .zip(resolved)
        .map(|(f, targets)| PlannedFault {
            index: f.index,
            repetition: f.repetition,
            line: f.line,
            trigger: f.trigger,
            action: f.action,
            targets: targets.unwrap_or_default(),
            undo_after: f.undo_after,
        })
        .collect();
    Ok((faults, warnings))
}
