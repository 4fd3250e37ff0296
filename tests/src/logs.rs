//! Reading `tandemd` logs in tests and benches: when did a node log an event.

use std::time::{SystemTime, UNIX_EPOCH};

/// Whether `line` is a `cluster change event=<event> ...` log line.
pub fn is_event(line: &str, event: &str) -> bool {
    line.contains("cluster change")
        && line
            .split_whitespace()
            .any(|f| f.strip_prefix("event=") == Some(event))
}

/// Timestamps (unix µs) of the `cluster change event=member_dead ...` log lines, in order.
pub fn dead_lines(log: &str) -> Vec<i128> {
    log.lines()
        .filter(|l| is_event(l, "member_dead"))
        .filter_map(|l| parse_rfc3339_us(l.split_whitespace().next()?))
        .collect()
}

pub fn unix_us(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i128)
}

/// `2026-11-26T04:10:27.000788Z` -> unix microseconds (UTC only, as tracing prints it).
pub fn parse_rfc3339_us(s: &str) -> Option<i128> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let frac_us: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(i128::from(secs) * 1_000_000 + i128::from(frac_us))
}

/// For benches: a peer falsely declared dead under CPU starvation makes writes complete
/// unreplicated (faster). Prints a warning per node (`(name, log)`) that logged a death, so
/// such figures are never quoted silently; returns whether any did.
pub fn warn_false_deaths(nodes: &[(usize, String)]) -> bool {
    let mut any = false;
    for (n, log) in nodes {
        let dead = dead_lines(log).len();
        if dead > 0 {
            any = true;
            println!(
                "WARNING: node {n} declared its peer dead {dead} time(s) during the run (machine overloaded?): some writes were not replicated, figures are not valid"
            );
            for l in log.lines().filter(|l| l.contains("event=")) {
                println!("  node {n}: {l}");
            }
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps_parse_to_unix_micros() {
        assert_eq!(
            parse_rfc3339_us("2026-11-26T04:10:27.000788Z"),
            Some(1_795_666_227_000_788)
        );
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_us("not a time"), None);
        let log =
            "2026-11-26T04:10:27.5Z  INFO cluster change event=member_dead node=2 state=dead\n\
                   2026-11-26T04:10:28.000001Z  INFO cluster change event=member_alive node=2\n\
                   2026-11-26T04:10:29Z  INFO hook started event=member_dead node=2\n\
                   2026-11-26T04:10:30Z  INFO cluster change event=member_dead_x node=2\n";
        assert_eq!(dead_lines(log), vec![1_795_666_227_500_000]);
    }
}
