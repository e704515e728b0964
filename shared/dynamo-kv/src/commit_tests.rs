//! Tests of [`super`]: commit transactions.

use super::*;
use crate::items::dynamodb_size;
use subkv_kv::budget::{log_parts, Budget, HEAD_ITEM_BYTES, LOG_ITEM_OVERHEAD};
use subkv_kv::limits::MAX_ITEMS_PER_COMMIT;
use subkv_kv::model::Entry;
use subkv_kv::plan::{PlannedCheck, PlannedPut};

/// A store whose client is never called (building requests needs no network).
fn store() -> DynamoKv {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .build();
    DynamoKv::new(
        aws_sdk_dynamodb::Client::from_conf(config),
        "data".into(),
        "log".into(),
        60,
    )
}

fn put(i: u32, conds: Vec<Cond>) -> PlannedPut {
    let key = vec![2, b'k', i as u8, 0];
    let mut slot = Slot::empty(key.clone());
    slot.version = 8;
    slot.put(Entry {
        key,
        value: vec![1],
        encoding: 1,
        version: 8,
        seq: 0,
        expire_at_ms: None,
    });
    PlannedPut { slot, conds }
}

fn cond(check_index: u32) -> Cond {
    Cond {
        check_index,
        expect: Some(versionstamp(3)),
    }
}

fn plan(puts: Vec<PlannedPut>, checks: Vec<PlannedCheck>) -> CommitPlan {
    let log_parts = log_parts(&[], 1_000);
    let large = Budget::DYNAMODB
        .is_large(&puts, &checks, &log_parts)
        .unwrap();
    CommitPlan {
        version: 8,
        puts,
        checks,
        log: Vec::new(),
        log_parts,
        large,
    }
}

/// Whether a condition action asks for the item its failed condition saw.
fn returns_old(action: &TransactWriteItem) -> bool {
    let all_old = Some(&ReturnValuesOnConditionCheckFailure::AllOld);
    action
        .put()
        .is_some_and(|p| p.return_values_on_condition_check_failure() == all_old)
        || action
            .condition_check()
            .is_some_and(|c| c.return_values_on_condition_check_failure() == all_old)
}

/// Per action: the table and what it is (head, log, put or check).
fn kinds(actions: &[TransactWriteItem]) -> Vec<(String, &'static str)> {
    actions
        .iter()
        .map(|a| match (a.put(), a.condition_check()) {
            (Some(p), _) if p.item().contains_key(LOG_MUTATIONS) => {
                (p.table_name().to_string(), "log")
            }
            (Some(p), _)
                if p.item()
                    .get(PK)
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|pk| pk.ends_with("#head")) =>
            {
                (p.table_name().to_string(), "head")
            }
            (Some(p), _) => (p.table_name().to_string(), "put"),
            (None, Some(c)) => (c.table_name().to_string(), "check"),
            (None, None) => (String::new(), "?"),
        })
        .collect()
}

#[test]
fn a_commit_transaction_matches_its_layout() {
    let db = Uuid::new_v4();
    let plan = plan(
        vec![put(0, vec![cond(2), cond(0)]), put(1, vec![])],
        vec![PlannedCheck {
            sk: vec![2, b'c', 0],
            conds: vec![cond(1)],
        }],
    );
    let tx = store().transaction(db, 7, &plan, 1_000, "req-1").unwrap();
    assert!(!tx.large);
    let kinds: Vec<_> = kinds(&tx.actions).into_iter().map(|(_, k)| k).collect();
    assert_eq!(kinds, ["head", "log", "put", "put", "check"]);
    assert_eq!(
        tx.layout,
        ActionLayout {
            change_record_parts: 1,
            checks: vec![
                vec![],
                vec![],
                vec![cond(2), cond(0)],
                vec![],
                vec![cond(1)]
            ],
        }
    );
    // Every action with a condition returns what it saw: the head, the put
    // with checks, the condition check; not the put without checks.
    let old: Vec<bool> = tx.actions.iter().map(returns_old).collect();
    assert_eq!(old, [true, false, true, false, true]);
    // The head and the change record fit the sizes planning counts them at.
    let head_item = tx.actions[0].put().unwrap().item();
    assert!(dynamodb_size(head_item) <= HEAD_ITEM_BYTES);
    let log = tx.actions[1].put().unwrap().item();
    let part = log
        .get(LOG_MUTATIONS)
        .unwrap()
        .as_b()
        .unwrap()
        .as_ref()
        .len();
    assert!(dynamodb_size(log) <= part + LOG_ITEM_OVERHEAD);
    let head = tx.actions[0].put().unwrap();
    assert_eq!(head.table_name(), "data");
    assert_eq!(head.item().get(VER), Some(&n(8)));
    assert_eq!(
        head.item().get(LOG_REQUEST),
        Some(&AttributeValue::S("req-1".into()))
    );
    assert!(!head.item().contains_key(PENDING));
    assert_eq!(
        head.expression_attribute_values()
            .and_then(|v| v.get(":head")),
        Some(&n(7))
    );
    assert_eq!(tx.actions[1].put().unwrap().table_name(), "log");
}

#[test]
fn a_large_commit_transaction_holds_head_log_and_checks_only() {
    let db = Uuid::new_v4();
    let mut puts: Vec<PlannedPut> = (0..MAX_ITEMS_PER_COMMIT as u32)
        .map(|i| put(i, vec![]))
        .collect();
    puts[5].conds = vec![cond(0)];
    let plan = plan(
        puts,
        vec![PlannedCheck {
            sk: vec![2, b'c', 0],
            conds: vec![cond(1)],
        }],
    );
    let tx = store().transaction(db, 0, &plan, 1_000, "req-2").unwrap();
    assert!(tx.large);
    let kinds: Vec<_> = kinds(&tx.actions).into_iter().map(|(_, k)| k).collect();
    assert_eq!(kinds, ["head", "log", "check", "check"]);
    assert_eq!(
        tx.layout,
        ActionLayout {
            change_record_parts: 1,
            checks: vec![vec![], vec![], vec![cond(0)], vec![cond(1)]],
        }
    );
    assert!(tx.actions[2..].iter().all(returns_old));
    let head = tx.actions[0].put().unwrap();
    assert_eq!(head.item().get(PENDING), Some(&AttributeValue::Bool(true)));
    // A first commit: no head yet, and never onto a deleted database's mark.
    assert_eq!(
        head.condition_expression(),
        Some("attribute_not_exists(kv_ver) AND attribute_not_exists(kv_gone)")
    );
}
