//! Durations as people write them in flags and query strings: `500ms`, `30s`, `2m`,
//! `1h`, a bare number being seconds. Boundary: a leaf; `cli` parses flags with it and
//! the API its `wait=` parameter.

use std::time::Duration;

/// Parses `500ms`, `30s`, `2m`, `1h` (a bare number is seconds; fractions are allowed),
/// at most [`MAX`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write a number and a unit, e.g. 500ms, 30s, 2m, 1h"))?;
    let secs = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}: use ms, s, m or h")),
    };
    let d = Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is out of range for a duration"))?;
    Ok(d.min(MAX))
}

/// The longest duration: anything longer is taken as this, which is as good as forever.
/// Deadlines are `now + duration`, and a far larger one would overflow the clock (a
/// panic, which aborts a daemon holding a workload).
pub const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A period for something done repeatedly: a duration of at least 1ms (a zero period
/// would mean a busy loop).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_millis(1) {
        return Err(format!("{text:?} is too short for an interval: give at least 1ms, e.g. 30s"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5d").unwrap_err().contains("unknown duration unit \"d\""));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("876000h"), Ok(super::MAX));
        assert_eq!(parse_duration("3000000000000000h"), Ok(super::MAX));
        assert_eq!(super::parse_interval("1ms"), Ok(Duration::from_millis(1)));
        assert!(super::parse_interval("0s").unwrap_err().contains("too short for an interval"));
        assert!(super::parse_interval("0.5ms").unwrap_err().contains("at least 1ms"));
    }
}
