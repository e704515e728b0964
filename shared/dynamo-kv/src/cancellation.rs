//! What a cancelled commit transaction means: pure logic over DynamoDB's
//! cancellation reasons, no I/O, so every branch is unit-tested here.
//!
//! A commit's TransactWriteItems lays out its actions as: 0, the head put (on
//! condition that no commit came in between); `1..=parts`, the parts of the
//! change record; then the item puts (carrying the checks on their items) and the
//! condition checks on items not written. When it is cancelled, DynamoDB gives one
//! reason code per action (`"None"` for those that were fine) and, for the head,
//! the item as the failed condition saw it.

use crate::items::{LOG_REQUEST, PENDING, VER};
use subkv_core::dynamo::{get_n, get_s, Item};

/// The head item a failed head condition returned, reduced to what tells what
/// happened. The default: no item came back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeadSeen {
    /// Its version (`kv_ver`).
    pub(crate) version: Option<u64>,
    /// The request token of the commit that wrote it (`req`).
    pub(crate) request: Option<String>,
    /// A large commit is still being applied (`kv_pending`).
    pub(crate) pending: bool,
}

impl HeadSeen {
    pub(crate) fn of(item: Option<&Item>) -> Self {
        match item {
            None => Self::default(),
            Some(item) => Self {
                version: get_n(item, VER),
                request: get_s(item, LOG_REQUEST).map(str::to_string),
                pending: item.contains_key(PENDING),
            },
        }
    }
}

/// How a commit transaction's actions are laid out (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ActionLayout {
    /// Actions `1..=change_record_parts` put the change record.
    pub(crate) change_record_parts: usize,
    /// Per action, in request order, the indexes of the checks its condition
    /// carries (none for the head and the change record).
    pub(crate) checks: Vec<Vec<u32>>,
}

/// What a cancelled commit transaction means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cancellation {
    /// The head already carries this commit, written with this very request
    /// token: an earlier attempt of the same request committed (the SDK retries
    /// 5xx answers).
    AlreadyCommitted,
    /// The head is no longer the one the commit was planned on. Carries the head's
    /// version as the failed condition saw it, unless a large commit is pending.
    HeadMoved(Option<u64>),
    /// These checks failed (sorted).
    ChecksFailed(Vec<u32>),
    /// Lost against concurrent transactions or throttled: try again.
    Contention,
    /// A change record with this version exists while the head did not stop the
    /// commit: the head and the log disagree.
    ChangeRecordExists,
    /// None of the above.
    Unknown,
}

const CONDITION_FAILED: &str = "ConditionalCheckFailed";
const CONTENTION: [&str; 3] = [
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

/// What the cancellation of the commit `version`, sent with the request token
/// `request`, means. `reasons`: one code per action, in request order; `head`:
/// the head item returned with the first reason. In order of precedence: a
/// failed head condition (ours already, or the head moved), failed checks,
/// contention, a change record that exists, anything else.
pub(crate) fn classify_cancellation<S: AsRef<str>>(
    reasons: &[S],
    head: &HeadSeen,
    request: &str,
    version: u64,
    layout: &ActionLayout,
) -> Cancellation {
    let failed = |i: usize| {
        reasons
            .get(i)
            .is_some_and(|c| c.as_ref() == CONDITION_FAILED)
    };
    if failed(0) {
        if head.request.as_deref() == Some(request) && head.version == Some(version) {
            return Cancellation::AlreadyCommitted;
        }
        return Cancellation::HeadMoved(head.version.filter(|_| !head.pending));
    }
    let mut checks: Vec<u32> = (0..layout.checks.len())
        .filter(|&i| failed(i))
        .flat_map(|i| layout.checks[i].iter().copied())
        .collect();
    if !checks.is_empty() {
        checks.sort_unstable();
        return Cancellation::ChecksFailed(checks);
    }
    if reasons.iter().any(|c| CONTENTION.contains(&c.as_ref())) {
        return Cancellation::Contention;
    }
    if (1..=layout.change_record_parts).any(failed) {
        return Cancellation::ChangeRecordExists;
    }
    Cancellation::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;
    use subkv_core::dynamo::n;

    const REQUEST: &str = "request-1";

    /// Head, two change-record parts, a put carrying checks 2 and 0, a put with
    /// no check, a condition check carrying check 1.
    fn layout() -> ActionLayout {
        ActionLayout {
            change_record_parts: 2,
            checks: vec![vec![], vec![], vec![], vec![2, 0], vec![], vec![1]],
        }
    }

    fn head(version: u64, request: &str, pending: bool) -> HeadSeen {
        HeadSeen {
            version: Some(version),
            request: Some(request.into()),
            pending,
        }
    }

    fn classify(reasons: &[&str], seen: &HeadSeen) -> Cancellation {
        classify_cancellation(reasons, seen, REQUEST, 8, &layout())
    }

    const C: &str = "ConditionalCheckFailed";

    #[test]
    fn our_own_earlier_attempt_is_a_commit() {
        let seen = head(8, REQUEST, false);
        assert_eq!(classify(&[C], &seen), Cancellation::AlreadyCommitted);
        // Even while our large commit is still being applied.
        let seen = head(8, REQUEST, true);
        assert_eq!(classify(&[C], &seen), Cancellation::AlreadyCommitted);
    }

    #[test]
    fn another_commit_on_the_head_moves_it() {
        let seen = head(9, "someone-else", false);
        assert_eq!(classify(&[C], &seen), Cancellation::HeadMoved(Some(9)));
        // Our token but another version: a later commit of ours is not this one.
        let seen = head(9, REQUEST, false);
        assert_eq!(classify(&[C], &seen), Cancellation::HeadMoved(Some(9)));
        // The planned version by another request.
        let seen = head(8, "someone-else", false);
        assert_eq!(classify(&[C], &seen), Cancellation::HeadMoved(Some(8)));
        // A head without a token (a finished large commit rewrites it without one).
        let seen = HeadSeen {
            version: Some(8),
            request: None,
            pending: false,
        };
        assert_eq!(classify(&[C], &seen), Cancellation::HeadMoved(Some(8)));
    }

    #[test]
    fn a_pending_large_commit_hides_the_head_version() {
        let seen = head(9, "someone-else", true);
        assert_eq!(classify(&[C], &seen), Cancellation::HeadMoved(None));
    }

    #[test]
    fn no_head_returned_is_a_moved_head_of_unknown_version() {
        assert_eq!(
            classify(&[C, "None"], &HeadSeen::default()),
            Cancellation::HeadMoved(None)
        );
    }

    #[test]
    fn the_head_takes_precedence_over_checks_and_everything_else() {
        let seen = head(9, "x", false);
        let reasons = [C, C, "None", C, "TransactionConflict", C];
        assert_eq!(classify(&reasons, &seen), Cancellation::HeadMoved(Some(9)));
    }

    #[test]
    fn checks_on_puts_map_to_their_check_indexes_sorted() {
        let reasons = ["None", "None", "None", C, "None", "None"];
        assert_eq!(
            classify(&reasons, &HeadSeen::default()),
            Cancellation::ChecksFailed(vec![0, 2])
        );
    }

    #[test]
    fn standalone_condition_checks_map_to_their_check_indexes() {
        let reasons = ["None", "None", "None", "None", "None", C];
        assert_eq!(
            classify(&reasons, &HeadSeen::default()),
            Cancellation::ChecksFailed(vec![1])
        );
    }

    #[test]
    fn checks_on_puts_and_condition_checks_combine_sorted() {
        let reasons = ["None", "None", "None", C, "None", C];
        assert_eq!(
            classify(&reasons, &HeadSeen::default()),
            Cancellation::ChecksFailed(vec![0, 1, 2])
        );
    }

    #[test]
    fn checks_take_precedence_over_contention() {
        let reasons = ["None", "None", "None", "TransactionConflict", "None", C];
        assert_eq!(
            classify(&reasons, &HeadSeen::default()),
            Cancellation::ChecksFailed(vec![1])
        );
    }

    #[test]
    fn conflicts_and_throttling_are_contention() {
        for code in [
            "TransactionConflict",
            "ThrottlingError",
            "ProvisionedThroughputExceeded",
        ] {
            let reasons = ["None", "None", "None", "None", code, "None"];
            assert_eq!(
                classify(&reasons, &HeadSeen::default()),
                Cancellation::Contention,
                "{code}"
            );
        }
    }

    #[test]
    fn contention_takes_precedence_over_a_change_record_collision() {
        let reasons = ["None", C, "ThrottlingError"];
        assert_eq!(
            classify(&reasons, &HeadSeen::default()),
            Cancellation::Contention
        );
    }

    #[test]
    fn an_existing_change_record_is_a_collision() {
        for reasons in [["None", C, "None"], ["None", "None", C]] {
            assert_eq!(
                classify(&reasons, &HeadSeen::default()),
                Cancellation::ChangeRecordExists
            );
        }
    }

    #[test]
    fn anything_else_is_unknown() {
        let seen = HeadSeen::default();
        assert_eq!(classify(&[], &seen), Cancellation::Unknown);
        assert_eq!(classify(&["None"; 6], &seen), Cancellation::Unknown);
        assert_eq!(
            classify(&["None", "None", "None", "ValidationError"], &seen),
            Cancellation::Unknown
        );
        // A failed condition on an action that carries no check (a put without
        // conditions, or past the layout): not a check, not a change record.
        assert_eq!(
            classify(&["None", "None", "None", "None", C], &seen),
            Cancellation::Unknown
        );
        assert_eq!(
            classify(&["None", "None", "None", "None", "None", "None", C], &seen),
            Cancellation::Unknown
        );
    }

    #[test]
    fn owned_strings_work_as_reasons() {
        let reasons: Vec<String> = vec!["None".into(), C.into()];
        assert_eq!(
            classify_cancellation(&reasons, &HeadSeen::default(), REQUEST, 8, &layout()),
            Cancellation::ChangeRecordExists
        );
    }

    #[test]
    fn the_returned_head_item_is_read_for_version_token_and_pending_mark() {
        let mut item = Item::from([
            (VER.to_string(), n(12)),
            (LOG_REQUEST.to_string(), AttributeValue::S(REQUEST.into())),
        ]);
        assert_eq!(HeadSeen::of(Some(&item)), head(12, REQUEST, false));
        item.insert(PENDING.into(), AttributeValue::Bool(true));
        assert_eq!(HeadSeen::of(Some(&item)), head(12, REQUEST, true));
        assert_eq!(HeadSeen::of(None), HeadSeen::default());
        let bare = Item::from([(VER.to_string(), n(3))]);
        assert_eq!(
            HeadSeen::of(Some(&bare)),
            HeadSeen {
                version: Some(3),
                request: None,
                pending: false,
            }
        );
    }
}
