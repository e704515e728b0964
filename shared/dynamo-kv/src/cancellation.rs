//! What a cancelled commit transaction means: pure logic over DynamoDB's
//! cancellation reasons, no I/O, so every branch is unit-tested here.
//!
//! A commit's TransactWriteItems lays out its actions as: 0, the head put (on
//! condition that no commit came in between); `1..=parts`, the parts of the
//! change record; then the item puts (carrying the checks on their items) and the
//! condition checks on items not written. When it is cancelled, DynamoDB gives one
//! reason code per action (`"None"` for those that were fine) and, for every
//! action whose condition failed (all ask for `ALL_OLD`), the item as the
//! condition saw it: the head tells who moved it, and an item tells which of the
//! checks on it failed (several checks on one item share one condition).

use crate::items::{cond_holds, LOG_REQUEST, PENDING, VER};
use subkv_core::dynamo::{get_n, get_s, Item};
use subkv_kv::plan::Cond;

/// DynamoDB's reason for one action of a cancelled transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Reason {
    /// `"None"` for an action that was fine.
    pub(crate) code: String,
    pub(crate) message: Option<String>,
    /// For a failed condition that asked for it (`ALL_OLD`), the item as the
    /// condition saw it (none: there was no item).
    pub(crate) item: Option<Item>,
}

#[cfg(test)]
impl Reason {
    pub(crate) fn code(code: &str) -> Self {
        Self {
            code: code.to_string(),
            ..Self::default()
        }
    }
}

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
    /// Per action, in request order, the checks its condition carries (none for
    /// the head and the change record).
    pub(crate) checks: Vec<Vec<Cond>>,
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
    /// DynamoDB refused an action for what it is (e.g. `ValidationError`: an item
    /// too large): the same transaction would be refused again. Code and message.
    Refused(String),
    /// None of the above.
    Unknown,
}

const CONDITION_FAILED: &str = "ConditionalCheckFailed";
const CONTENTION: [&str; 3] = [
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

/// Whether a cancellation reason code is DynamoDB refusing the action itself
/// (not a condition, a conflict or throttling): sending it again cannot succeed.
pub(crate) fn is_refusal(code: &str) -> bool {
    code != "None" && code != CONDITION_FAILED && !CONTENTION.contains(&code)
}

/// The checks of `conds` that fail on `item` (the item a failed condition
/// returned). All of them if the item shows none failing: the condition did fail,
/// and reporting a check too many beats reporting a failed commit with none.
fn failing_checks(conds: &[Cond], item: Option<&Item>, now_ms: i64) -> Vec<u32> {
    let failing: Vec<u32> = conds
        .iter()
        .filter(|c| !cond_holds(c, item, now_ms))
        .map(|c| c.check_index)
        .collect();
    if failing.is_empty() {
        conds.iter().map(|c| c.check_index).collect()
    } else {
        failing
    }
}

/// What the cancellation of the commit `version`, sent with the request token
/// `request` and evaluated at `now_ms`, means. `reasons`: one per action, in
/// request order (the first with the head item if its condition failed). In
/// order of precedence: a failed head condition (ours already, or the head
/// moved), failed checks (only those that fail on the returned item, not every
/// check sharing it), contention, a change record that exists, a refusal,
/// anything else.
pub(crate) fn classify_cancellation(
    reasons: &[Reason],
    request: &str,
    version: u64,
    layout: &ActionLayout,
    now_ms: i64,
) -> Cancellation {
    let failed = |i: usize| reasons.get(i).is_some_and(|r| r.code == CONDITION_FAILED);
    if failed(0) {
        let head = HeadSeen::of(reasons[0].item.as_ref());
        if head.request.as_deref() == Some(request) && head.version == Some(version) {
            return Cancellation::AlreadyCommitted;
        }
        return Cancellation::HeadMoved(head.version.filter(|_| !head.pending));
    }
    let mut checks: Vec<u32> = (0..layout.checks.len())
        .filter(|&i| failed(i) && !layout.checks[i].is_empty())
        .flat_map(|i| failing_checks(&layout.checks[i], reasons[i].item.as_ref(), now_ms))
        .collect();
    if !checks.is_empty() {
        checks.sort_unstable();
        return Cancellation::ChecksFailed(checks);
    }
    if reasons
        .iter()
        .any(|r| CONTENTION.contains(&r.code.as_str()))
    {
        return Cancellation::Contention;
    }
    if (1..=layout.change_record_parts).any(failed) {
        return Cancellation::ChangeRecordExists;
    }
    if let Some(refusal) = reasons.iter().find(|r| is_refusal(&r.code)) {
        return Cancellation::Refused(match &refusal.message {
            Some(message) => format!("{}: {message}", refusal.code),
            None => refusal.code.clone(),
        });
    }
    Cancellation::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;
    use subkv_core::dynamo::n;

    const REQUEST: &str = "request-1";

    const NOW: i64 = 1_000;

    fn cond(check_index: u32, expect: Option<u64>) -> Cond {
        Cond {
            check_index,
            expect: expect.map(subkv_kv::model::versionstamp),
        }
    }

    /// Head, two change-record parts, a put carrying checks 2 (version 3) and 0
    /// (absent), a put with no check, a condition check carrying check 1.
    fn layout() -> ActionLayout {
        ActionLayout {
            change_record_parts: 2,
            checks: vec![
                vec![],
                vec![],
                vec![],
                vec![cond(2, Some(3)), cond(0, None)],
                vec![],
                vec![cond(1, Some(3))],
            ],
        }
    }

    /// The head item a failed head condition returns.
    fn head_item(seen: &HeadSeen) -> Option<Item> {
        if seen == &HeadSeen::default() {
            return None;
        }
        let mut item = Item::new();
        if let Some(v) = seen.version {
            item.insert(VER.into(), n(v));
        }
        if let Some(r) = &seen.request {
            item.insert(LOG_REQUEST.into(), AttributeValue::S(r.clone()));
        }
        if seen.pending {
            item.insert(PENDING.into(), AttributeValue::Bool(true));
        }
        Some(item)
    }

    fn head(version: u64, request: &str, pending: bool) -> HeadSeen {
        HeadSeen {
            version: Some(version),
            request: Some(request.into()),
            pending,
        }
    }

    fn classify(codes: &[&str], seen: &HeadSeen) -> Cancellation {
        let mut reasons: Vec<Reason> = codes.iter().map(|c| Reason::code(c)).collect();
        if let Some(first) = reasons.first_mut() {
            first.item = head_item(seen);
        }
        classify_cancellation(&reasons, REQUEST, 8, &layout(), NOW)
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
        // No item came back (there is none): check 2 wants version 3 and fails,
        // check 0 wants no entry and holds.
        let reasons = ["None", "None", "None", C, "None", "None"];
        assert_eq!(
            classify(&reasons, &HeadSeen::default()),
            Cancellation::ChecksFailed(vec![2])
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
            Cancellation::ChecksFailed(vec![1, 2])
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
    fn only_the_checks_that_fail_on_the_returned_item_are_reported() {
        // The put's item exists at version 3: check 2 (version 3) holds, check 0
        // (absent) fails.
        let live = Item::from([(VER.to_string(), n(3))]);
        let mut reasons: Vec<Reason> = ["None", "None", "None", C, "None", "None"]
            .iter()
            .map(|c| Reason::code(c))
            .collect();
        reasons[3].item = Some(live.clone());
        let classify =
            |reasons: &[Reason]| classify_cancellation(reasons, REQUEST, 8, &layout(), NOW);
        assert_eq!(classify(&reasons), Cancellation::ChecksFailed(vec![0]));
        // At version 4, both fail; expired, check 2 fails and check 0 holds.
        reasons[3].item = Some(Item::from([(VER.to_string(), n(4))]));
        assert_eq!(classify(&reasons), Cancellation::ChecksFailed(vec![0, 2]));
        let expired = Item::from([(VER.to_string(), n(3)), ("kv_exp".to_string(), n(NOW))]);
        reasons[3].item = Some(expired);
        assert_eq!(classify(&reasons), Cancellation::ChecksFailed(vec![2]));
        // No item came back: it does not exist, so only check 2 fails.
        reasons[3].item = None;
        assert_eq!(classify(&reasons), Cancellation::ChecksFailed(vec![2]));
    }

    #[test]
    fn a_returned_item_on_which_every_check_holds_reports_them_all() {
        let layout = ActionLayout {
            change_record_parts: 1,
            checks: vec![vec![], vec![], vec![cond(0, Some(3)), cond(1, Some(3))]],
        };
        let mut reasons: Vec<Reason> = ["None", "None", C]
            .iter()
            .map(|c| Reason::code(c))
            .collect();
        reasons[2].item = Some(Item::from([(VER.to_string(), n(3))]));
        assert_eq!(
            classify_cancellation(&reasons, REQUEST, 8, &layout, NOW),
            Cancellation::ChecksFailed(vec![0, 1])
        );
    }

    #[test]
    fn an_action_dynamodb_refuses_is_a_refusal() {
        let seen = HeadSeen::default();
        assert_eq!(
            classify(&["None", "None", "None", "ValidationError"], &seen),
            Cancellation::Refused("ValidationError".into())
        );
        let mut reasons: Vec<Reason> = ["None", "ItemSizeTooLarge"]
            .iter()
            .map(|c| Reason::code(c))
            .collect();
        reasons[1].message = Some("Item size has exceeded the maximum allowed size".into());
        assert_eq!(
            classify_cancellation(&reasons, REQUEST, 8, &layout(), NOW),
            Cancellation::Refused(
                "ItemSizeTooLarge: Item size has exceeded the maximum allowed size".into()
            )
        );
        // Conflicts and throttling are not refusals: the same transaction may pass.
        assert!(!is_refusal("TransactionConflict") && !is_refusal("None") && !is_refusal(C));
    }

    #[test]
    fn anything_else_is_unknown() {
        let seen = HeadSeen::default();
        assert_eq!(classify(&[], &seen), Cancellation::Unknown);
        assert_eq!(classify(&["None"; 6], &seen), Cancellation::Unknown);
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
