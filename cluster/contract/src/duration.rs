//! Human durations (`250ms`, `1s`, `1.5s`, `2m`, `1h`) as used in job specs and scenarios.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Parses `<number><unit>` with unit one of `ms`, `s`, `m`, `h`. A bare `0` is allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("invalid duration `{s}`: expected a number with a unit (ms, s, m, h), e.g. `500ms` or `2s`"))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{s}`: expected a number with a unit (ms, s, m, h), e.g. `500ms` or `2s`"))?;
    let mult = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "invalid duration `{s}`: unknown unit `{unit}`, expected one of ms, s, m, h"
            ))
        }
    };
    if !n.is_finite() || n < 0.0 {
        return Err(format!("invalid duration `{s}`: must be a non-negative number"));
    }
    Ok(Duration::from_secs_f64(n * mult))
}

/// Formats a duration the way [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) && ms > 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Serde adapter: `#[serde(with = "streamd::duration::serde_str")]`.
pub mod serde_str {
    use super::*;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = StrOrNum::deserialize(d)?;
        match v {
            StrOrNum::S(s) => parse_duration(&s).map_err(serde::de::Error::custom),
            StrOrNum::N(0) => Ok(Duration::ZERO),
            StrOrNum::N(n) => Err(serde::de::Error::custom(format!(
                "invalid duration `{n}`: expected a number with a unit (ms, s, m, h), e.g. `{n}s`"
            ))),
        }
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StrOrNum {
        S(String),
        N(u64),
    }
}

/// Serde adapter for `Option<Duration>`.
pub mod serde_opt {
    use super::*;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::serde_str")] Duration);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("abc").is_err());
    }
}
