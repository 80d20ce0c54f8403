//! The rules of SEMANTICS.md that both the online and the offline path apply, in one place.
//! `docs/SEMANTICS.md` is their prose; each function names the rule it implements.

use crate::types::Micros;

/// "Valid time range": the first instant an event or created time may be,
/// 0001-01-01T00:00:00Z.
pub const MIN_TIME: Micros = -62_135_596_800_000_000;
/// "Valid time range": the last instant an event or created time may be,
/// 9999-12-31T23:59:59.999999Z.
pub const MAX_TIME: Micros = 253_402_300_799_999_999;

/// "Valid time range": whether `micros` is an instant Quiver accepts as an event time, a
/// created time or a label time (years 1 to 9999, UTC). Every path checks it on input.
pub fn is_valid_time(micros: Micros) -> bool {
    (MIN_TIME..=MAX_TIME).contains(&micros)
}

/// Why `micros` is refused: the rule in words, for error messages.
pub fn invalid_time_message(micros: Micros) -> String {
    format!(
        "{micros} (microseconds since the epoch) is outside the valid time range [{MIN_TIME}, {MAX_TIME}] (0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z)"
    )
}

/// Row order for one key: `(event_ts, created_ts)`, a missing created_ts is the lowest.
pub type RowOrder = (Micros, Option<Micros>);

/// "Row order for one key": `Option`'s order already puts `None` lowest.
pub fn row_order(event_ts: Micros, created_ts: Option<Micros>) -> RowOrder {
    (event_ts, created_ts)
}

/// A row's order with its tie token ([`LogPosition::tie_token`]; empty for a row that was
/// not pushed through the push log, which is lowest).
pub type TiedOrder<'a> = (RowOrder, &'a [u8]);

/// "Writes to the online store": a write replaces the stored row only if it is not older.
/// Between two pushed rows equal on [`RowOrder`], the tie tokens decide (bytewise), so the
/// row the offline path takes last ("Ties between pushes") is kept online whatever order
/// the writes arrive in. A row without a token (a materialization's: the offline path's
/// pick at the time of its scan) wins every tie, and a pushed row wins a tie against one.
pub fn write_wins(incoming: TiedOrder<'_>, stored: Option<TiedOrder<'_>>) -> bool {
    stored.is_none_or(|(order, tie)| match incoming.0.cmp(&order) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => incoming.1.is_empty() || tie.is_empty() || incoming.1 >= tie,
    })
}

/// "Ties between pushes": where a pushed row stands in its view's push log. Push-log files
/// sort by replica (empty for a server's own push log), then by append name
/// `(micros, seq)`; rows keep their order within a file. The offline path takes the last
/// of tied rows in that order, and the online path compares [`LogPosition::tie_token`]s,
/// which sort the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    /// The replica that appended the file (no NUL byte); empty when the log is not shared.
    pub replica: String,
    /// The append's name: microseconds (never negative) and sequence number.
    pub micros: Micros,
    pub seq: u64,
    /// The row's index in its file.
    pub row: u64,
}

impl LogPosition {
    /// The position `n` rows further in the same file.
    pub fn nth(&self, n: u64) -> LogPosition {
        LogPosition {
            row: self.row + n,
            ..self.clone()
        }
    }

    /// Bytes that compare (bytewise) as the positions do: the replica, a NUL byte, then the
    /// micros, seq and row as big-endian unsigned integers.
    pub fn tie_token(&self) -> Vec<u8> {
        self.tie_tokens().token(0)
    }

    /// The tie tokens of this row and the rows after it in its file, sharing their prefix.
    pub fn tie_tokens(&self) -> TieTokens {
        let mut prefix = Vec::with_capacity(self.replica.len() + 17);
        prefix.extend_from_slice(self.replica.as_bytes());
        prefix.push(0);
        prefix.extend_from_slice(&(self.micros.max(0) as u64).to_be_bytes());
        prefix.extend_from_slice(&self.seq.to_be_bytes());
        TieTokens {
            prefix,
            row: self.row,
        }
    }
}

/// [`LogPosition::tie_tokens`]: the tokens of consecutive rows of one file.
#[derive(Debug, Clone)]
pub struct TieTokens {
    prefix: Vec<u8>,
    row: u64,
}

impl TieTokens {
    /// The token of the row `n` rows after the first.
    pub fn token(&self, n: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + 8);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&(self.row + n).to_be_bytes());
        out
    }
}

/// "Writes (materialize, push)": a run over `[start, end)` moves the watermark to `end` only
/// when it starts at or before the stored watermark (none: the beginning of time) and ends
/// after it. Applied atomically by each online store, it is the fence of materialization: a
/// stalled run can neither move a watermark backwards nor past data nobody wrote.
pub fn watermark_advances(stored: Option<Micros>, start: Micros, end: Micros) -> bool {
    let watermark = stored.unwrap_or(Micros::MIN);
    start <= watermark && end > watermark
}

/// "Point-in-time join": whether a row with `event_ts` (and `created_ts`) is a candidate for a
/// label at `t`, for a view with `ttl` (0 = unbounded), optionally "as known at t".
pub fn is_candidate(
    event_ts: Micros,
    created_ts: Option<Micros>,
    t: Micros,
    ttl: Micros,
    as_known_at: bool,
) -> bool {
    event_ts <= t
        && within_ttl(event_ts, t, ttl)
        && (!as_known_at || created_ts.is_none_or(|c| c <= t))
}

/// The TTL bound of both paths: `event_ts >= t - ttl` (inclusive), always true for `ttl` 0.
pub fn within_ttl(event_ts: Micros, t: Micros, ttl: Micros) -> bool {
    ttl <= 0 || event_ts >= t.saturating_sub(ttl)
}

/// Status of one value of an online read (SEMANTICS.md "Online read").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureStatus {
    Present,
    NullValue,
    NotFound,
    OutsideMaxAge,
}

impl FeatureStatus {
    pub fn name(self) -> &'static str {
        match self {
            FeatureStatus::Present => "PRESENT",
            FeatureStatus::NullValue => "NULL_VALUE",
            FeatureStatus::NotFound => "NOT_FOUND",
            FeatureStatus::OutsideMaxAge => "OUTSIDE_MAX_AGE",
        }
    }

    /// The status named `name` ([`FeatureStatus::name`]).
    pub fn parse(name: &str) -> Option<FeatureStatus> {
        [
            FeatureStatus::Present,
            FeatureStatus::NullValue,
            FeatureStatus::NotFound,
            FeatureStatus::OutsideMaxAge,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// Whether a stored row with `event_ts` is still fresh at `now` for a view with `ttl`.
/// The same bound as the offline join at `t = now`: fresh iff `event_ts >= now - ttl`.
pub fn is_fresh(event_ts: Micros, now: Micros, ttl: Micros) -> bool {
    within_ttl(event_ts, now, ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_valid_time_range_is_years_1_to_9999() {
        let first = chrono::DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z")
            .map(|t| t.timestamp_micros());
        let last = chrono::DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999999Z")
            .map(|t| t.timestamp_micros());
        assert_eq!(first, Ok(MIN_TIME));
        assert_eq!(last, Ok(MAX_TIME));
        assert!(is_valid_time(MIN_TIME) && is_valid_time(MAX_TIME) && is_valid_time(0));
        assert!(!is_valid_time(MIN_TIME - 1) && !is_valid_time(MAX_TIME + 1));
        assert!(!is_valid_time(i64::MAX) && !is_valid_time(i64::MIN));
    }

    #[test]
    fn a_watermark_moves_forward_only_over_a_run_that_covers_it() {
        // (stored, start, end) -> moves
        let table = [
            (None, Micros::MIN, 10, true),
            (None, 0, 10, false),
            (Some(10), 10, 20, true),
            (Some(10), 5, 20, true),
            (Some(10), 11, 20, false),
            (Some(20), 10, 20, false),
            (Some(20), 10, 15, false),
            (Some(Micros::MAX - 1), Micros::MIN, Micros::MAX, true),
            (Some(Micros::MAX), Micros::MIN, Micros::MAX, false),
        ];
        for (stored, start, end, moves) in table {
            assert_eq!(
                watermark_advances(stored, start, end),
                moves,
                "{stored:?} {start} {end}"
            );
        }
    }

    fn untied(order: RowOrder) -> TiedOrder<'static> {
        (order, &[])
    }

    #[test]
    fn created_time_breaks_ties_and_missing_is_lowest() {
        let wins = |a: RowOrder, b: RowOrder| write_wins(untied(a), Some(untied(b)));
        assert!(wins(row_order(10, Some(2)), row_order(10, Some(1))));
        assert!(!wins(row_order(10, Some(1)), row_order(10, Some(2))));
        assert!(!wins(row_order(10, None), row_order(10, Some(0))));
        assert!(wins(row_order(11, None), row_order(10, Some(99))));
        assert!(!wins(row_order(9, Some(99)), row_order(10, None)));
        // Equal rows: the later write wins, deterministically for the same input order.
        assert!(wins(row_order(10, Some(1)), row_order(10, Some(1))));
        assert!(write_wins(untied(row_order(0, None)), None));
    }

    /// The tokens sort as the positions do (the derived order, field by field), checked on
    /// neighbours that differ in one field at its edges, and on replica prefixes.
    #[test]
    fn tie_tokens_sort_as_log_positions() {
        let at = |replica: &str, micros, seq, row| LogPosition {
            replica: replica.into(),
            micros,
            seq,
            row,
        };
        let mut positions = vec![
            at("", 0, 0, 0),
            at("", 0, 0, u64::MAX),
            at("", 0, 1, 0),
            at("", 255, 0, 0),
            at("", 256, 0, 0),
            at("", i64::MAX, u64::MAX, u64::MAX),
            at("a", 0, 0, 0),
            at("a", 1, 0, 0),
            at("a-1", 0, 0, 0),
            at("ab", 0, 0, 0),
            at("b", 0, 0, 0),
        ];
        let sorted = positions.clone();
        // A file's tokens are its first row's token with the row advanced.
        let first = at("a", 7, 3, 2);
        assert_eq!(first.tie_tokens().token(5), first.nth(5).tie_token());
        positions.reverse();
        positions.sort_by_key(LogPosition::tie_token);
        assert_eq!(positions, sorted);
        assert!(sorted.windows(2).all(|w| w[0] < w[1]));
        // Between pushed rows the later position wins a tie; a row without a token wins every
        // tie (a materialization's pick), and a pushed row wins a tie against one.
        let (first, second) = (at("a", 5, 0, 0).tie_token(), at("a", 5, 0, 1).tie_token());
        let order = row_order(10, Some(1));
        assert!(write_wins((order, &second), Some((order, &first))));
        assert!(!write_wins((order, &first), Some((order, &second))));
        assert!(write_wins((order, &first), Some(untied(order))));
        assert!(write_wins(untied(order), Some((order, &second))));
        assert!(!write_wins(
            untied(row_order(10, None)),
            Some((order, &first))
        ));
        // The row order comes first: a newer row without a token beats an older pushed one.
        assert!(write_wins(
            untied(row_order(11, None)),
            Some((order, &second))
        ));
    }

    #[test]
    fn ttl_bounds_are_inclusive_on_both_paths() {
        let (t, ttl) = (100, 10);
        let table = [(100, true), (90, true), (89, false), (101, false)];
        for (event_ts, want) in table {
            assert_eq!(
                is_candidate(event_ts, None, t, ttl, false),
                want,
                "{event_ts}"
            );
            if event_ts <= t {
                assert_eq!(is_fresh(event_ts, t, ttl), want, "{event_ts}");
            }
        }
        assert!(is_candidate(-1_000_000, None, t, 0, false));
        assert!(is_fresh(-1_000_000, t, 0));
    }

    #[test]
    fn as_known_at_filters_late_arrivals() {
        assert!(is_candidate(90, Some(100), 100, 0, true));
        assert!(!is_candidate(90, Some(101), 100, 0, true));
        assert!(is_candidate(90, Some(101), 100, 0, false));
        assert!(is_candidate(90, None, 100, 0, true));
    }
}
