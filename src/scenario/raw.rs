//! The scenario file as written: serde structs that mirror DESIGN.md section 5, with
//! `deny_unknown_fields` everywhere. The small value syntaxes (durations, percentages,
//! sizes, signals, picks, triggers, targets) are checked here, inside deserialization, so
//! that serde_yaml attaches the exact line and column to their errors. Everything that
//! needs the whole scenario (does `tm5` exist?) is checked later, in `validate`.

use super::values::{self, Pick};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;
use streamd_contract::spec::Delivery;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a scenario: a mapping with name, description, seed, cluster, job, input, faults, expect, flink")]
pub struct RawScenario {
    pub name: Option<String>,
    pub description: Option<String>,
    pub seed: Option<u64>,
    pub cluster: Option<RawCluster>,
    pub job: RawJob,
    pub input: RawInput,
    pub faults: Option<Vec<RawFault>>,
    pub expect: Option<RawExpect>,
    /// Flink only: options passed through to Flink's configuration.
    pub flink: Option<RawFlink>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like `{ config: { taskmanager.network.memory.buffer-debloat.enabled: true } }`")]
pub struct RawFlink {
    pub config: Option<OrderedMap<ConfigValue>>,
}

/// A Flink option's value: any YAML scalar, kept as the text Flink will parse.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigValue(pub String);

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ConfigValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Flink option value: a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ConfigValue, E> {
                Ok(ConfigValue(s.to_string()))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<ConfigValue, E> {
                Ok(ConfigValue(b.to_string()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(n.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(n.to_string()))
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(x.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with engine, jobmanagers, taskmanagers, slots, resources, checkpoint_storage")]
pub struct RawCluster {
    pub engine: Option<crate::engine::Engine>,
    pub jobmanagers: Option<u32>,
    pub taskmanagers: Option<u32>,
    pub slots: Option<u32>,
    pub resources: Option<OrderedMap<RawResources>>,
    /// A remote-storage model for the shared checkpoint directory (streamd only).
    pub checkpoint_storage: Option<RawStorage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like `{ latency: 20ms, bandwidth: 100mbps }`")]
pub struct RawStorage {
    /// Paid by every operation under /data/checkpoints.
    pub latency: Option<Dur>,
    /// Reads and writes move at most this much per second (tc-style: `100mbps` is 100 MB/s).
    pub bandwidth: Option<Rate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like `{ cpus: 0.5, memory: 256m }`")]
pub struct RawResources {
    pub cpus: Option<Cpus>,
    pub memory: Option<MemSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with kind, window, parallelism, checkpoint_interval, delivery, restart, heartbeat, local_recovery")]
pub struct RawJob {
    pub kind: Option<streamd_contract::spec::JobKind>,
    pub window: Option<Dur>,
    pub parallelism: u32,
    pub checkpoint_interval: Option<RawInterval>,
    pub delivery: Option<Delivery>,
    pub restart: Option<RawRestart>,
    pub heartbeat: Option<RawHeartbeat>,
    /// Task-local recovery (streamd only): `true` or `false`.
    pub local_recovery: Option<bool>,
}

/// Flink's restart strategy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    None,
    FixedDelay,
    FailureRate,
    ExponentialDelay,
}

/// Every field any strategy takes; `validate` checks which belong to the chosen one, so a
/// misplaced field is reported at its own key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like `{ strategy: exponential-delay, initial: 200ms, max: 5s }`")]
pub struct RawRestart {
    pub strategy: StrategyName,
    pub attempts: Option<u32>,
    pub delay: Option<Dur>,
    pub max_failures: Option<u32>,
    pub interval: Option<Dur>,
    pub initial: Option<Dur>,
    pub max: Option<Dur>,
    pub multiplier: Option<f64>,
    pub jitter: Option<f64>,
    pub reset_threshold: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like `{ interval: 250ms, timeout: 2s }`")]
pub struct RawHeartbeat {
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with generate or file, socket, rate, and event_time_per_line")]
pub struct RawInput {
    pub generate: Option<RawGenerate>,
    pub file: Option<String>,
    /// Deliver the input through a line server (`nc -l <port>`) instead of a replayable
    /// source; `generate` or `file` is then what chaos feeds into it.
    pub socket: Option<RawSocket>,
    pub rate: Option<u64>,
    pub event_time_per_line: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like `{ port: 9000 }`")]
pub struct RawSocket {
    pub port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like `{ lines: 200000, words_per_line: 8, vocabulary: 2000 }`")]
pub struct RawGenerate {
    pub lines: u64,
    pub words_per_line: Option<u32>,
    pub vocabulary: Option<u32>,
}

/// Fault actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionName {
    Kill,
    Stop,
    Start,
    Restart,
    Pause,
    Unpause,
    Netem,
    Partition,
    Corrupt,
    Disk,
}

impl ActionName {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionName::Kill => "kill",
            ActionName::Stop => "stop",
            ActionName::Start => "start",
            ActionName::Restart => "restart",
            ActionName::Pause => "pause",
            ActionName::Unpause => "unpause",
            ActionName::Netem => "netem",
            ActionName::Partition => "partition",
            ActionName::Corrupt => "corrupt",
            ActionName::Disk => "disk",
        }
    }
}

/// One fault with every field any action takes; `validate` checks which belong.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a fault: a mapping with at, action, target and the action's parameters")]
pub struct RawFault {
    pub at: RawTrigger,
    pub action: ActionName,
    pub target: Option<RawTarget>,
    pub signal: Option<Signal>,
    pub grace: Option<Dur>,
    #[serde(rename = "for")]
    pub for_: Option<Dur>,
    pub delay: Option<Dur>,
    pub jitter: Option<Dur>,
    pub distribution: Option<crate::netfault::Distribution>,
    pub loss: Option<Percent>,
    pub duplicate: Option<Percent>,
    pub corrupt: Option<Percent>,
    pub rate: Option<Rate>,
    pub groups: Option<Vec<Vec<String>>>,
    pub one_way: Option<bool>,
    /// `corrupt`: which files (`snapshot`, `metadata`, `staged`, `local`) and how.
    pub what: Option<crate::fault::corrupt::CorruptWhat>,
    pub how: Option<crate::fault::corrupt::CorruptHow>,
    /// `disk`: `EIO`, `ENOSPC` or `EROFS`, with `probability`.
    pub error: Option<String>,
    pub probability: Option<Percent>,
    /// `disk`: the operations it acts on (open, read, write, fsync, rename).
    pub ops: Option<Vec<String>>,
    /// `disk`: only under this directory of /data (e.g. `checkpoints`).
    pub path: Option<String>,
    /// `disk`: ENOSPC once this many bytes were written.
    pub full_after: Option<Bytes>,
    /// `kill`, `stop`, `restart`: the node also loses power, so whatever it had not
    /// fsynced is lost (streamd only; through the passthrough of /data).
    pub lose_unsynced: Option<bool>,
    pub repeat: Option<RawRepeat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like `{ every: 5s, count: 3 }`")]
pub struct RawRepeat {
    pub every: Dur,
    pub count: u32,
}

/// `expect.output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawOutput {
    ExactlyOnce,
    AtLeastOnce,
    AtMostOnce,
    Any,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with output, recovery_within, timeout")]
pub struct RawExpect {
    pub output: Option<RawOutput>,
    pub recovery_within: Option<Dur>,
    pub timeout: Option<Dur>,
}

/// A mapping with string keys, kept in document order (errors are reported in that order).
#[derive(Debug)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V_<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping from node names to `{ cpus, memory }`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, V)> = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(de::Error::custom(format!("duplicate entry `{k}`")));
                    }
                    let v = map.next_value()?;
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V_(std::marker::PhantomData))
    }
}

/// Defines a newtype read from a YAML scalar through a parse function, so its errors carry
/// serde_yaml's position of that scalar.
macro_rules! scalar_newtype {
    ($name:ident, $inner:ty, $expecting:expr, $parse:expr) => {
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$name, E> {
                        let parse: fn(Scalar<'_>) -> Result<$inner, String> = $parse;
                        parse(Scalar::Str(s)).map($name).map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, n: u64) -> Result<$name, E> {
                        let parse: fn(Scalar<'_>) -> Result<$inner, String> = $parse;
                        parse(Scalar::Int(n)).map($name).map_err(E::custom)
                    }
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<$name, E> {
                        Err(E::invalid_value(de::Unexpected::Signed(n), &self))
                    }
                    fn visit_f64<E: de::Error>(self, x: f64) -> Result<$name, E> {
                        let parse: fn(Scalar<'_>) -> Result<$inner, String> = $parse;
                        parse(Scalar::Float(x)).map($name).map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

/// A scalar as YAML typed it.
pub enum Scalar<'a> {
    Str(&'a str),
    Int(u64),
    Float(f64),
}

const DURATION_EXPECTED: &str = "a duration like `500ms`, `2s` or `1m`";

fn duration_of(s: Scalar<'_>) -> Result<Duration, String> {
    match s {
        Scalar::Str(s) => streamd_contract::duration::parse_duration(s),
        Scalar::Int(0) => Ok(Duration::ZERO),
        Scalar::Int(n) => Err(format!("invalid duration `{n}`: expected a number with a unit (ms, s, m, h), e.g. `{n}s`")),
        Scalar::Float(x) => Err(format!("invalid duration `{x}`: expected a number with a unit (ms, s, m, h), e.g. `{x}s`")),
    }
}

scalar_newtype!(Dur, Duration, DURATION_EXPECTED, duration_of);

scalar_newtype!(Percent, f64, "a percentage like `5%`", |s| match s {
    Scalar::Str(s) => values::parse_percent(s),
    Scalar::Int(n) => Err(format!("invalid percentage `{n}`: expected a percentage like `{n}%` (0% to 100%)")),
    Scalar::Float(x) => Err(format!("invalid percentage `{x}`: expected a percentage like `{x}%` (0% to 100%)")),
});

scalar_newtype!(Rate, u64, "a rate like `1mbit` or `500kbit`", |s| match s {
    Scalar::Str(s) => values::parse_rate(s),
    Scalar::Int(n) => Err(format!("invalid rate `{n}`: expected a number with a unit, e.g. `{n}kbit`")),
    Scalar::Float(x) => Err(format!("invalid rate `{x}`: expected a number with a unit, e.g. `{x}mbit`")),
});

scalar_newtype!(Bytes, u64, "a size like `64k`, `1m` or `65536` (bytes)", |s| match s {
    Scalar::Int(n) => Ok(n),
    Scalar::Str(s) => values::parse_bytes(s),
    Scalar::Float(x) => Err(format!("invalid size `{x}`: expected whole bytes or a size like `64k`, `1m`")),
});

scalar_newtype!(MemSize, u64, "a memory size like `256m` or `1g`", |s| match s {
    Scalar::Str(s) => values::parse_memory(s),
    Scalar::Int(n) => values::check_memory(n as f64, &n.to_string()),
    Scalar::Float(x) => Err(format!("invalid memory size `{x}`: expected a memory size like `256m` or `1g`")),
});

scalar_newtype!(Cpus, f64, "a number of CPUs like `0.5` or `2`", |s| {
    let v = match s {
        Scalar::Int(n) => n as f64,
        Scalar::Float(x) => x,
        Scalar::Str(s) => return Err(format!("invalid cpus `{s}`: expected a number of CPUs like `0.5` or `2`")),
    };
    if !(0.01..=1024.0).contains(&v) {
        return Err(format!("cpus `{v}` out of range: expected 0.01 to 1024"));
    }
    Ok(v)
});

scalar_newtype!(Signal, crate::signal::Signal, "a signal name like SIGKILL", |s| match s {
    Scalar::Str(s) => crate::signal::Signal::parse(s),
    Scalar::Int(n) => crate::signal::Signal::parse(&n.to_string()),
    Scalar::Float(x) => Err(format!("invalid signal `{x}`: expected a signal name like SIGKILL or SIGTERM")),
});

scalar_newtype!(PickValue, Pick, values::PICK_EXPECTED.trim_start_matches("expected "), |s| match s {
    Scalar::Str(s) => values::parse_pick(s),
    Scalar::Int(n) => values::parse_pick(&n.to_string()),
    Scalar::Float(x) => Err(format!("invalid pick `{x}`: {}", values::PICK_EXPECTED)),
});

/// `at:` as written: a duration, or `{ checkpoint: N }`.
#[derive(Debug, Clone, PartialEq)]
pub enum RawTrigger {
    At(Duration),
    Checkpoint(u64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like `{ checkpoint: 5 }`")]
struct CheckpointAt {
    checkpoint: u64,
}

const TRIGGER_EXPECTED: &str = "a duration since the job started running like `4s`, or `{ checkpoint: N }`";

impl<'de> Deserialize<'de> for RawTrigger {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTrigger;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(TRIGGER_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawTrigger, E> {
                duration_of(Scalar::Str(s)).map(RawTrigger::At).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RawTrigger, E> {
                duration_of(Scalar::Int(n)).map(RawTrigger::At).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<RawTrigger, E> {
                duration_of(Scalar::Float(x)).map(RawTrigger::At).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawTrigger, A::Error> {
                let c = CheckpointAt::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawTrigger::Checkpoint(c.checkpoint))
            }
        }
        d.deserialize_any(V)
    }
}

/// `job.checkpoint_interval` as written: a duration, or `{ adaptive: { min, max, .. } }`.
#[derive(Debug, Clone, PartialEq)]
pub enum RawInterval {
    Fixed(Duration),
    Adaptive(RawAdaptive),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like `{ min: 200ms, max: 5s, target_recovery: 3s, mtbf: 30s }`")]
pub struct RawAdaptive {
    pub min: Dur,
    pub max: Dur,
    pub target_recovery: Option<Dur>,
    pub mtbf: Option<Dur>,
}

const INTERVAL_EXPECTED: &str = "a duration like `1s`, or `{ adaptive: { min: 200ms, max: 5s } }`";

impl<'de> Deserialize<'de> for RawInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawInterval;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(INTERVAL_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawInterval, E> {
                if s.trim() == "adaptive" {
                    return Err(E::custom(format!("`adaptive` needs its bounds: expected {INTERVAL_EXPECTED}")));
                }
                duration_of(Scalar::Str(s)).map(RawInterval::Fixed).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RawInterval, E> {
                duration_of(Scalar::Int(n)).map(RawInterval::Fixed).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<RawInterval, E> {
                duration_of(Scalar::Float(x)).map(RawInterval::Fixed).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawInterval, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(format!("empty mapping: expected {INTERVAL_EXPECTED}")));
                };
                if key != "adaptive" {
                    return Err(de::Error::unknown_field(&key, &["adaptive"]));
                }
                let a: RawAdaptive = map.next_value()?;
                if let Some(k) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!("unexpected `{k}` beside `adaptive`: expected {INTERVAL_EXPECTED}")));
                }
                Ok(RawInterval::Adaptive(a))
            }
        }
        d.deserialize_any(V)
    }
}

/// Roles a `{ role, pick }` target may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PickRole {
    Taskmanager,
    Jobmanager,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like `{ role: taskmanager, pick: one }`")]
pub struct RawPick {
    pub role: PickRole,
    pub pick: PickValue,
}

/// `target:` as written: a node name / alias / `leader`, or `{ role, pick }`.
#[derive(Debug)]
pub enum RawTarget {
    Name(String),
    Pick(RawPick),
}

impl<'de> Deserialize<'de> for RawTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTarget;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a node name (taskmanager-2), an alias (tm2), `leader`, or `{ role: taskmanager, pick: one }`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawTarget, E> {
                Ok(RawTarget::Name(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawTarget, A::Error> {
                RawPick::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawTarget::Pick)
            }
        }
        d.deserialize_any(V)
    }
}
