//! The cluster rules of the core, driven step by step: commands, executor
//! reports and cluster inputs in; effects for the link, orders and
//! mailboxes out. No runtime, no NATS.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::cluster::{AcceptedInfo, Applied, ClaimedTask, Effect, Input, Settle, SubmitOk};
use super::core::Core;
use super::{Command, Mailbox, Outbound, Reply};
use crate::config::Config;
use crate::directory::{Directory, Source};
use crate::exec::{ExecutorKind, ExecutorSpec, Order, Outcome, Report, Tagged, TaskDecl};
use crate::task::{ClientId, EventRecord, TaskEvent, TaskId, TaskSpec};
use crate::telemetry::Metrics;

struct Node {
    core: Core,
    now: Instant,
    orders: mpsc::Receiver<Order>,
    executor: crate::exec::ExecutorId,
    _reports: mpsc::Receiver<Tagged>,
}

fn decl(name: &str, retry_safe: bool) -> TaskDecl {
    TaskDecl {
        name: Arc::from(name),
        description: String::new(),
        input_schema: None,
        retry_safe,
        timeout: None,
    }
}

fn id(n: u128) -> TaskId {
    format!("{n:032x}").parse().expect("hex")
}

fn spec(n: u128, name: &str) -> TaskSpec {
    TaskSpec {
        retry_safe: true,
        ..TaskSpec::for_test(id(n), name, "{}")
    }
}

/// A one-slot remote executor serving `job`.
fn register(
    core: &mut Core,
    now: Instant,
    name: &str,
    retry_safe: bool,
) -> (crate::exec::ExecutorId, mpsc::Receiver<Order>) {
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    core.on_command(
        Command::Register {
            spec: ExecutorSpec {
                name: Arc::from(name),
                kind: ExecutorKind::Remote {
                    peer: "test".to_owned(),
                },
                slots: 1,
                tasks: vec![decl("job", retry_safe)],
            },
            reply,
        },
        now,
    );
    let registration = answer.try_recv().expect("answered").expect("registered");
    (registration.id, registration.orders)
}

impl Node {
    fn new(name: &str, retry_safe: bool) -> Node {
        let directory = Arc::new(Directory::default());
        directory
            .declare(&decl("job", retry_safe), Source::Config)
            .expect("declared");
        let (tx, rx) = mpsc::channel(64);
        let mut core = Core::new(
            Config::with_keys(Vec::new()).limits,
            directory,
            Metrics::new(),
            tx,
        );
        core.enable_cluster(Arc::from(name), Duration::from_secs(30));
        let now = Instant::now();
        core.on_cluster(Input::Link(None), now);
        let (executor, orders) = register(&mut core, now, "w", retry_safe);
        Node {
            core,
            now,
            orders,
            executor,
            _reports: rx,
        }
    }

    /// One more one-slot executor serving `job` (as each of the built-in
    /// pool's slots is, or each connection of one worker).
    fn register(&mut self, name: &str) -> (crate::exec::ExecutorId, mpsc::Receiver<Order>) {
        register(&mut self.core, self.now, name, true)
    }

    fn effects(&mut self) -> Vec<Effect> {
        self.core.dispatch(self.now);
        self.core
            .take_effects()
            .map(|e| e.drain(..).collect())
            .unwrap_or_default()
    }

    /// The effects, less the claims of free slots (probes).
    fn effects_but_claims(&mut self) -> Vec<Effect> {
        let mut effects = self.effects();
        effects.retain(|e| !matches!(e, Effect::Claim { .. }));
        effects
    }

    fn input(&mut self, input: Input) {
        self.core.on_cluster(input, self.now);
    }

    /// The stream tells every node about an event.
    fn applied(
        &mut self,
        record: EventRecord,
        stream_seq: u64,
        writer: &str,
        info: Option<AcceptedInfo>,
    ) {
        self.input(Input::Event(Applied {
            record: Arc::new(record),
            stream_seq,
            writer: Arc::from(writer),
            info,
        }));
    }
}

/// The `seq`s of the events a mailbox got since the last look.
fn delivered(inbox: &mut mpsc::Receiver<Outbound>) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Ok(message) = inbox.try_recv() {
        match message {
            Outbound::Event { record, .. } => seqs.push(record.seq),
            Outbound::Replay(records) => seqs.extend(records.iter().map(|r| r.seq)),
            _ => {}
        }
    }
    seqs
}

/// The client `c`, as a test request's caller.
fn client_c() -> crate::auth::Principal {
    crate::auth::Principal {
        client: ClientId::new("c"),
        admin: false,
        tasks: None,
        token: None,
    }
}

/// Task `n` accepted elsewhere (stream sequence 10), claimed here, its
/// `started` committed (11): its assignment.
fn running(node: &mut Node, n: u128) -> crate::exec::Assignment {
    accepted(node, n);
    let _ = node.effects();
    node.input(Input::Claimed {
        executors: vec![(node.executor, 1)],
        tasks: vec![ClaimedTask {
            spec: spec(n, "job"),
            delivered: 1,
        }],
    });
    let _ = node.effects();
    node.input(Input::Committed {
        task_id: id(n),
        seq: 2,
        stream_seq: 11,
    });
    let Ok(Order::Assign(assignment)) = node.orders.try_recv() else {
        panic!("assigned");
    };
    assignment
}

/// The node's executor reports the attempt completed.
fn finished(node: &mut Node, assignment: &crate::exec::Assignment) {
    let report = Report::Finished {
        task_id: assignment.task_id,
        attempt: assignment.attempt,
        outcome: Outcome::Completed {
            result: RawValue::from_string("1".to_owned()).expect("json"),
            files: Vec::new(),
            duration: Duration::ZERO,
        },
        slot_free: true,
    };
    let executor = node.executor;
    node.core.on_report(Tagged { executor, report }, node.now);
}

/// Task `n` submitted on the node; the receiver gets its answer.
fn submit_direct(
    node: &mut Node,
    n: u128,
) -> oneshot::Receiver<Result<super::Submitted, super::Refusal>> {
    let (tx, answer) = oneshot::channel();
    node.core.on_command(
        Command::Submit {
            spec: spec(n, "job"),
            reply: Reply::Direct(tx),
        },
        node.now,
    );
    answer
}

/// The link's answer to the submit of task `n`: its fetch brought it.
fn claimed_at_submit(node: &mut Node, n: u128) {
    let executor = node.executor;
    node.input(Input::SubmitDone {
        task_id: id(n),
        result: Ok(SubmitOk {
            task_id: id(n),
            duplicate: false,
            records: Vec::new(),
            claimed_here: true,
        }),
        claimed: Some((
            executor,
            Some(vec![ClaimedTask {
                spec: spec(n, "job"),
                delivered: 1,
            }]),
        )),
    });
}

fn accepted(node: &mut Node, n: u128) {
    let info = AcceptedInfo::of(&spec(n, "job"));
    node.applied(
        EventRecord::new(id(n), 1, TaskEvent::Accepted { position: 0 }),
        10,
        "elsewhere",
        Some(info),
    );
}

#[test]
fn a_claimed_task_runs_only_once_its_started_is_committed() {
    let mut node = Node::new("b", true);
    accepted(&mut node, 1);
    let effects = node.effects();
    assert!(
        matches!(&effects[..], [Effect::Claim { n: 1, lanes, .. }] if &*lanes[0].0 == "job"),
        "{effects:?}"
    );
    node.input(Input::Claimed {
        executors: vec![(node.executor, 1)],
        tasks: vec![ClaimedTask {
            spec: spec(1, "job"),
            delivered: 1,
        }],
    });
    let effects = node.effects();
    let [
        Effect::Propose {
            record, expected, ..
        },
    ] = &effects[..]
    else {
        panic!("{effects:?}");
    };
    assert_eq!(*expected, 10, "fenced on the accepted's stream sequence");
    assert!(
        matches!(&record.event, TaskEvent::Started { worker, attempt: 1 } if &**worker == "b/w")
    );
    assert!(
        node.orders.try_recv().is_err(),
        "not assigned before the commit"
    );
    node.input(Input::Committed {
        task_id: id(1),
        seq: 2,
        stream_seq: 11,
    });
    assert!(matches!(node.orders.try_recv(), Ok(Order::Assign(a)) if a.attempt == 1));
}

#[test]
fn a_started_that_conflicts_frees_the_slot_and_never_runs() {
    let mut node = Node::new("b", true);
    accepted(&mut node, 1);
    let _ = node.effects();
    node.input(Input::Claimed {
        executors: vec![(node.executor, 1)],
        tasks: vec![ClaimedTask {
            spec: spec(1, "job"),
            delivered: 1,
        }],
    });
    let _ = node.effects();
    node.input(Input::Conflict {
        task_id: id(1),
        seq: 2,
    });
    assert!(node.orders.try_recv().is_err());
    // The stream says another node cancelled it: nothing runs here.
    node.applied(
        EventRecord::new(
            id(1),
            2,
            TaskEvent::Cancelled(crate::task::CancelReason::Client),
        ),
        11,
        "c",
        None,
    );
    let effects = node.effects();
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Abandon { .. }))
            || effects.iter().all(|e| !matches!(e, Effect::Propose { .. })),
        "{effects:?}"
    );
    assert!(node.orders.try_recv().is_err());
    // The slot is free again: the executor asks for work once there is some.
    accepted(&mut node, 2);
    assert!(
        node.effects()
            .iter()
            .any(|e| matches!(e, Effect::Claim { .. }))
    );
}

/// A node claims a task whose history is still empty and adopts it; the
/// submitter's `accepted` then wins. The node keeps the queue message and
/// runs the task at once from the history it reads again, whether it first
/// learns of the loss from its refused proposal or from the feed.
#[test]
fn an_adopted_task_whose_submitter_wins_runs_here_without_waiting_a_lease() {
    for feed_first in [false, true] {
        let mut node = Node::new("b", true);
        let executor = node.executor;
        // A probe claim finds a task nobody here has heard of.
        node.input(Input::Claimed {
            executors: vec![(executor, 1)],
            tasks: vec![ClaimedTask {
                spec: spec(1, "job"),
                delivered: 1,
            }],
        });
        let effects = node.effects_but_claims();
        assert!(
            matches!(&effects[..], [Effect::Lookup { task_id }] if *task_id == id(1)),
            "{effects:?}"
        );
        // Its history is empty: the node writes `accepted` itself, and
        // `started` with it, in one message.
        node.input(Input::Loaded {
            task_id: id(1),
            records: Vec::new(),
        });
        let effects = node.effects_but_claims();
        assert!(
            matches!(&effects[..], [Effect::Propose { record, then, expected: 0, .. }]
                if record.seq == 1 && matches!(record.event, TaskEvent::Accepted { .. })
                    && matches!(&then[..], [s] if s.seq == 2 && matches!(s.event, TaskEvent::Started { .. }))),
            "{effects:?}"
        );
        let submitters = || Applied {
            record: Arc::new(EventRecord::new(
                id(1),
                1,
                TaskEvent::Accepted { position: 0 },
            )),
            stream_seq: 10,
            writer: Arc::from("a"),
            info: Some(AcceptedInfo::of(&spec(1, "job"))),
        };
        if feed_first {
            node.input(Input::Event(submitters()));
        } else {
            node.input(Input::Conflict {
                task_id: id(1),
                seq: 1,
            });
        }
        let effects = node.effects_but_claims();
        assert!(
            matches!(&effects[..], [Effect::Reclaim { task_id, .. }] if *task_id == id(1)),
            "the hold is kept, not abandoned: {effects:?}"
        );
        assert!(node.orders.try_recv().is_err(), "nothing ran yet");
        // The refusal that arrives after the feed showed the winner is stale.
        if feed_first {
            node.input(Input::Conflict {
                task_id: id(1),
                seq: 1,
            });
        }
        node.input(Input::Reclaimed {
            executor,
            claimed: ClaimedTask {
                spec: spec(1, "job"),
                delivered: 1,
            },
            records: vec![submitters()],
        });
        let effects = node.effects_but_claims();
        let [
            Effect::Propose {
                record, expected, ..
            },
        ] = &effects[..]
        else {
            panic!("{effects:?}");
        };
        assert_eq!(*expected, 10, "fenced on the submitter's accepted");
        assert_eq!(record.seq, 2);
        assert!(matches!(
            record.event,
            TaskEvent::Started { attempt: 1, .. }
        ));
        // The refusal of the first message (`accepted` with `started`, the
        // same last seq as this one) may come only now: it is stale too.
        node.input(Input::Conflict {
            task_id: id(1),
            seq: 1,
        });
        assert!(
            node.effects_but_claims().is_empty(),
            "the hold is kept and the new proposal stands"
        );
        node.input(Input::Committed {
            task_id: id(1),
            seq: 2,
            stream_seq: 11,
        });
        assert!(matches!(node.orders.try_recv(), Ok(Order::Assign(a)) if a.attempt == 1));
    }
}

#[test]
fn a_redelivered_running_task_is_requeued_or_fails_worker_lost() {
    for (retry_safe, expected) in [(true, "requeued"), (false, "failed")] {
        let mut node = Node::new("c", retry_safe);
        let mut info = AcceptedInfo::of(&spec(1, "job"));
        info.retry_safe = retry_safe;
        node.applied(
            EventRecord::new(id(1), 1, TaskEvent::Accepted { position: 0 }),
            10,
            "a",
            Some(info),
        );
        node.applied(
            EventRecord::new(
                id(1),
                2,
                TaskEvent::Started {
                    worker: Arc::from("b/w"),
                    attempt: 1,
                },
            ),
            11,
            "b",
            None,
        );
        let _ = node.effects();
        // B died: its message comes to C after the lease.
        let mut claimed = spec(1, "job");
        claimed.retry_safe = retry_safe;
        node.input(Input::Claimed {
            executors: vec![(node.executor, 1)],
            tasks: vec![ClaimedTask {
                spec: claimed,
                delivered: 2,
            }],
        });
        let effects = node.effects();
        let proposed: Vec<&str> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Propose {
                    record, expected, ..
                } => {
                    assert_eq!(*expected, 11);
                    Some(record.event.kind())
                }
                _ => None,
            })
            .collect();
        assert_eq!(proposed, vec![expected], "{effects:?}");
        assert!(node.orders.try_recv().is_err());
    }
}

#[test]
fn a_finished_task_claimed_again_is_dropped_from_the_queue() {
    let mut node = Node::new("b", true);
    accepted(&mut node, 1);
    node.applied(
        EventRecord::new(
            id(1),
            2,
            TaskEvent::Cancelled(crate::task::CancelReason::Client),
        ),
        11,
        "a",
        None,
    );
    let _ = node.effects();
    node.input(Input::Claimed {
        executors: vec![(node.executor, 1)],
        tasks: vec![ClaimedTask {
            spec: spec(1, "job"),
            delivered: 3,
        }],
    });
    let effects = node.effects();
    assert!(
        effects.iter().any(|e| matches!(
            e,
            Effect::Settle {
                settle: Settle::Drop,
                ..
            }
        )),
        "{effects:?}"
    );
}

#[test]
fn events_are_delivered_once_in_seq_order_and_a_gap_is_read_again() {
    let mut node = Node::new("c", true);
    let (mailbox, mut inbox, _) = Mailbox::new(64);
    accepted(&mut node, 1);
    node.core.on_command(
        Command::Subscribe {
            task_id: id(1),
            principal: client_c(),
            after_seq: 0,
            mailbox,
            reference: None,
        },
        node.now,
    );
    let started = || TaskEvent::Started {
        worker: Arc::from("b/w"),
        attempt: 1,
    };
    node.applied(EventRecord::new(id(1), 2, started()), 11, "b", None);
    node.applied(EventRecord::new(id(1), 2, started()), 11, "b", None);
    // seq 4 before 3: a gap, so the node reads the history instead.
    node.applied(
        EventRecord::new(
            id(1),
            4,
            TaskEvent::Cancelled(crate::task::CancelReason::Client),
        ),
        13,
        "b",
        None,
    );
    let effects = node.effects();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Lookup { task_id } if *task_id == id(1))),
        "{effects:?}"
    );
    assert_eq!(delivered(&mut inbox), vec![1, 2]);
}

#[test]
fn finishing_reports_go_to_the_stream_not_to_subscribers() {
    let mut node = Node::new("b", true);
    let assignment = running(&mut node, 1);
    finished(&mut node, &assignment);
    let effects = node.effects();
    let proposed: Vec<(u64, u64)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Propose {
                record, expected, ..
            } => Some((record.seq, *expected)),
            _ => None,
        })
        .collect();
    assert_eq!(proposed, vec![(3, 11)], "{effects:?}");
}

#[test]
fn a_subscriber_between_the_end_proposed_and_committed_gets_the_end() {
    // The owning node marks its task finished when it proposes the
    // terminal event; a subscriber (or the submitter, whose `accepted`
    // came back late) attached before that event is committed must still
    // receive it.
    let mut node = Node::new("b", true);
    accepted(&mut node, 1);
    let _ = node.effects();
    node.input(Input::Claimed {
        executors: vec![(node.executor, 1)],
        tasks: vec![ClaimedTask {
            spec: spec(1, "job"),
            delivered: 1,
        }],
    });
    let _ = node.effects();
    node.input(Input::Committed {
        task_id: id(1),
        seq: 2,
        stream_seq: 11,
    });
    node.applied(
        EventRecord::new(
            id(1),
            2,
            TaskEvent::Started {
                worker: Arc::from("b/w"),
                attempt: 1,
            },
        ),
        11,
        "b",
        None,
    );
    let Ok(Order::Assign(assignment)) = node.orders.try_recv() else {
        panic!("assigned");
    };
    let executor = node.executor;
    node.core.on_report(
        Tagged {
            executor,
            report: Report::Finished {
                task_id: assignment.task_id,
                attempt: 1,
                outcome: Outcome::Completed {
                    result: RawValue::from_string("1".to_owned()).expect("json"),
                    files: Vec::new(),
                    duration: Duration::ZERO,
                },
                slot_free: true,
            },
        },
        node.now,
    );
    let _ = node.effects();
    let (mailbox, mut inbox, _) = Mailbox::new(64);
    node.core.on_command(
        Command::Subscribe {
            task_id: id(1),
            principal: client_c(),
            after_seq: 0,
            mailbox,
            reference: None,
        },
        node.now,
    );
    node.input(Input::Committed {
        task_id: id(1),
        seq: 3,
        stream_seq: 12,
    });
    // The owner delivers its events when they are committed, not when the
    // feed brings them back; the feed's copy is not delivered again.
    assert_eq!(delivered(&mut inbox), vec![1, 2, 3]);
    node.applied(
        EventRecord::new(
            id(1),
            3,
            TaskEvent::Completed {
                result: RawValue::from_string("1".to_owned()).expect("json"),
                files: Vec::new(),
                duration: Duration::ZERO,
            },
        ),
        12,
        "b",
        None,
    );
    assert_eq!(delivered(&mut inbox), Vec::<u64>::new());
}

#[test]
fn executors_serving_the_same_names_claim_together_one_claim_at_a_time() {
    let mut node = Node::new("b", true);
    let (_, mut second) = node.register("local-2");
    let (_, mut third) = node.register("local-3");
    for n in 1..=3 {
        accepted(&mut node, n);
    }
    let effects = node.effects();
    let [
        Effect::Claim {
            executors, n: 3, ..
        },
    ] = &effects[..]
    else {
        panic!("one claim for the three free slots: {effects:?}");
    };
    assert_eq!(executors.len(), 3, "{executors:?}");
    assert!(executors.iter().all(|(_, n)| *n == 1));
    let executors = executors.clone();
    // While it is out, a new task asks for nothing more: it goes in the
    // next claim, with whatever slots are free by then.
    accepted(&mut node, 4);
    let effects = node.effects();
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Claim { .. })),
        "{effects:?}"
    );
    node.input(Input::Claimed {
        executors,
        tasks: (1..=3)
            .map(|n| ClaimedTask {
                spec: spec(n, "job"),
                delivered: 1,
            })
            .collect(),
    });
    let effects = node.effects();
    let started = effects
        .iter()
        .filter(|e| matches!(e, Effect::Propose { record, .. } if matches!(record.event, TaskEvent::Started { .. })))
        .count();
    assert_eq!(started, 3, "{effects:?}");
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Claim { .. })),
        "no slot is free for the fourth: {effects:?}"
    );
    for n in 1..=3 {
        node.input(Input::Committed {
            task_id: id(n),
            seq: 2,
            stream_seq: 10 + n as u64,
        });
    }
    for orders in [&mut node.orders, &mut second, &mut third] {
        assert!(
            matches!(orders.try_recv(), Ok(Order::Assign(_))),
            "every executor runs one of the three"
        );
    }
}

#[test]
fn a_claim_that_came_back_empty_never_leaves_a_wake_in_the_past() {
    let mut node = Node::new("b", true);
    accepted(&mut node, 1);
    let effects = node.effects();
    let [Effect::Claim { executors, .. }] = &effects[..] else {
        panic!("{effects:?}");
    };
    // Another node took it first: the claim finds nothing.
    node.input(Input::Claimed {
        executors: executors.clone(),
        tasks: Vec::new(),
    });
    assert!(node.effects().is_empty(), "it waits before asking again");
    let wake = node.core.next_wake().expect("a retry is due");
    assert!(wake > node.now, "the retry is ahead");
    node.now = wake;
    let effects = node.effects();
    assert!(
        matches!(&effects[..], [Effect::Claim { .. }]),
        "it asks again once the retry is due: {effects:?}"
    );
    // With that claim out, nothing is due now: a wake in the past would
    // have the core spin until the claim comes back.
    assert!(
        node.core.next_wake().is_none_or(|at| at > node.now),
        "{:?} is not after {:?}",
        node.core.next_wake(),
        node.now
    );
}

#[test]
fn a_cancel_its_node_was_too_busy_for_is_sent_again_without_news() {
    let mut node = Node::new("c", true);
    started_on_b(&mut node, 1);
    let mut answer = cancel_by_c(&mut node, 1);
    let sent = forwards_to_b(node.effects_but_claims());
    assert_eq!(sent.len(), 1, "the cancel goes to b");
    // B is busy: nothing is sent again at once…
    node.input(Input::ForwardDone {
        id: sent[0],
        result: Err(super::Refusal::Unavailable {
            retry_after: Duration::from_millis(500),
        }),
    });
    assert!(forwards_to_b(node.effects_but_claims()).is_empty());
    assert!(answer.try_recv().is_err(), "the cancel still waits");
    // …but once its retry_after has passed, with no event meanwhile.
    let due = node.core.next_wake().expect("a wake for the retry");
    assert!(due <= node.now + Duration::from_millis(500));
    node.now = due;
    node.core.on_time(due);
    let again = forwards_to_b(node.effects_but_claims());
    assert_eq!(again.len(), 1, "sent again");
    node.input(Input::ForwardDone {
        id: again[0],
        result: Ok(()),
    });
    cancelled_by_b(&mut node, 1);
    assert!(matches!(answer.try_recv(), Ok(Ok(()))));
}

/// A task accepted elsewhere and started on node b.
fn started_on_b(node: &mut Node, n: u128) {
    accepted(node, n);
    let started = TaskEvent::Started {
        worker: Arc::from("b/w"),
        attempt: 1,
    };
    node.applied(EventRecord::new(id(n), 2, started), 11, "b", None);
}

/// Node b, running task `n`, wrote its `cancelled`.
fn cancelled_by_b(node: &mut Node, n: u128) {
    let cancelled = TaskEvent::Cancelled(crate::task::CancelReason::Client);
    node.applied(EventRecord::new(id(n), 3, cancelled), 12, "b", None);
}

/// The requests among these effects that go to node b.
fn forwards_to_b(effects: Vec<Effect>) -> Vec<u64> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Forward { id: f, node, .. } if &*node == "b" => Some(f),
            _ => None,
        })
        .collect()
}

/// Client c cancels task `n`; the answer comes on the receiver.
fn cancel_by_c(
    node: &mut Node,
    n: u128,
) -> tokio::sync::oneshot::Receiver<Result<(), super::Refusal>> {
    let (tx, answer) = tokio::sync::oneshot::channel();
    node.core.on_command(
        Command::Cancel {
            task_id: id(n),
            principal: client_c(),
            reply: super::Reply::Direct(tx),
        },
        node.now,
    );
    answer
}

#[test]
fn cancels_of_a_task_on_another_node_are_bounded() {
    let mut node = Node::new("c", true);
    started_on_b(&mut node, 1);
    let mut waiting: Vec<_> = (0..super::MAX_CANCELS_WAITING)
        .map(|_| cancel_by_c(&mut node, 1))
        .collect();
    let forwarded = forwards_to_b(node.effects_but_claims());
    assert_eq!(
        forwarded.len(),
        super::MAX_CANCELS_WAITING,
        "each goes to b"
    );
    let mut one_more = cancel_by_c(&mut node, 1);
    assert!(matches!(
        one_more.try_recv(),
        Ok(Err(super::Refusal::TooManyCancels { .. }))
    ));
    assert!(node.effects_but_claims().is_empty(), "nothing more is sent");
    cancelled_by_b(&mut node, 1);
    for f in forwarded {
        node.input(Input::ForwardDone {
            id: f,
            result: Ok(()),
        });
    }
    for answer in &mut waiting {
        assert!(matches!(answer.try_recv(), Ok(Ok(()))), "each is answered");
    }
}

#[test]
fn requests_on_their_way_to_other_nodes_are_bounded() {
    let mut node = Node::new("c", true);
    let per_task = super::MAX_CANCELS_WAITING;
    let tasks = (super::cluster::MAX_FORWARDS / per_task) as u128;
    let mut waiting = Vec::new();
    for n in 1..=tasks + 1 {
        started_on_b(&mut node, n);
    }
    for n in 1..=tasks {
        waiting.extend((0..per_task).map(|_| cancel_by_c(&mut node, n)));
    }
    let mut one_more = cancel_by_c(&mut node, tasks + 1);
    assert!(matches!(
        one_more.try_recv(),
        Ok(Err(super::Refusal::Unavailable { .. }))
    ));
    let sent = forwards_to_b(node.effects_but_claims());
    assert_eq!(sent.len(), super::cluster::MAX_FORWARDS);
    assert!(
        waiting.iter_mut().all(|a| a.try_recv().is_err()),
        "the others wait"
    );
}

/// A submit whose own fetch brings the task back before its `accepted` is
/// written: `accepted` and `started` go in one message, the attempt runs
/// once it is committed, and the submitter is answered when the `accepted`
/// is applied (at the commit).
#[test]
fn a_task_its_submitter_claims_writes_accepted_and_started_together() {
    let mut node = Node::new("b", true);
    let executor = node.executor;
    let mut answer = submit_direct(&mut node, 1);
    let effects = node.effects_but_claims();
    assert!(
        matches!(&effects[..], [Effect::Submit { claim: Some(e), .. }] if *e == executor),
        "the idle executor's claim goes with the submit: {effects:?}"
    );
    claimed_at_submit(&mut node, 1);
    let effects = node.effects_but_claims();
    let [
        Effect::Propose {
            record,
            then,
            expected: 0,
            info: Some(_),
        },
    ] = &effects[..]
    else {
        panic!("{effects:?}");
    };
    assert!(matches!(record.event, TaskEvent::Accepted { .. }) && record.seq == 1);
    assert!(
        matches!(&then[..], [s] if s.seq == 2 && matches!(&s.event, TaskEvent::Started { worker, attempt: 1 } if &**worker == "b/w"))
    );
    let (accepted, started) = (Arc::clone(record), Arc::clone(&then[0]));
    assert!(node.orders.try_recv().is_err(), "not before the commit");
    assert!(answer.try_recv().is_err(), "not answered before the commit");
    node.input(Input::Committed {
        task_id: id(1),
        seq: 2,
        stream_seq: 7,
    });
    assert!(matches!(node.orders.try_recv(), Ok(Order::Assign(a)) if a.attempt == 1));
    let submitted = answer.try_recv().expect("answered").expect("accepted");
    assert_eq!(submitted.task_id, id(1));
    assert!(!submitted.duplicate);
    // The feed brings both events back, with the one stream sequence: the
    // history has them already.
    for record in [accepted, started] {
        node.input(Input::Event(Applied {
            record,
            stream_seq: 7,
            writer: Arc::from("b"),
            info: None,
        }));
    }
    let log = &node.core.tasks[&id(1)].log;
    assert_eq!(log.last_seq(), 2);
    assert_eq!(log.replay(0).len(), 2);
}

/// The same, when the node began draining while the submit was out: the
/// task is accepted and given back to the queue, not started here.
#[test]
fn a_draining_node_gives_back_the_task_its_submit_claimed() {
    let mut node = Node::new("b", true);
    let mut answer = submit_direct(&mut node, 1);
    let _ = node.effects_but_claims();
    let (drained, _drained) = oneshot::channel();
    node.core
        .on_command(Command::Drain { reply: drained }, node.now);
    claimed_at_submit(&mut node, 1);
    let effects = node.effects_but_claims();
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Settle { task_id, settle: Settle::Retry(d) } if *task_id == id(1) && d.is_zero())),
        "{effects:?}"
    );
    let proposed: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Propose { record, then, .. } => Some((record.seq, then.len())),
            _ => None,
        })
        .collect();
    assert_eq!(proposed, [(1, 0)], "accepted alone: {effects:?}");
    let Some(Effect::Propose { record, .. }) =
        effects.iter().find(|e| matches!(e, Effect::Propose { .. }))
    else {
        panic!("{effects:?}");
    };
    node.input(Input::Committed {
        task_id: id(1),
        seq: 1,
        stream_seq: 3,
    });
    node.input(Input::Event(Applied {
        record: Arc::clone(record),
        stream_seq: 3,
        writer: Arc::from("b"),
        info: Some(AcceptedInfo::of(&spec(1, "job"))),
    }));
    while let Ok(order) = node.orders.try_recv() {
        assert!(!matches!(order, Order::Assign(_)), "nothing runs here");
    }
    assert!(answer.try_recv().expect("answered").is_ok(), "accepted");
}

/// Events made while one is being written go together in the next message.
#[test]
fn events_waiting_behind_a_proposal_go_in_one_message() {
    let mut node = Node::new("b", true);
    let assignment = running(&mut node, 1);
    let executor = node.executor;
    let report = |report| Tagged { executor, report };
    let progress = |fraction| Report::Progress {
        task_id: assignment.task_id,
        attempt: 1,
        progress: crate::task::Progress {
            fraction: Some(fraction),
            message: None,
            data: None,
        },
    };
    node.core.on_report(report(progress(0.1)), node.now);
    // While the first progress is written, two more and the end come: the
    // later progress replaces the earlier, and it and the end go together.
    node.core.on_report(report(progress(0.5)), node.now);
    node.core.on_report(report(progress(0.9)), node.now);
    finished(&mut node, &assignment);
    let seqs = |effects: &[Effect]| -> Vec<(u64, Vec<u64>, u64)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Propose {
                    record,
                    then,
                    expected,
                    ..
                } => Some((record.seq, then.iter().map(|r| r.seq).collect(), *expected)),
                _ => None,
            })
            .collect()
    };
    let effects = node.effects();
    assert_eq!(seqs(&effects), vec![(3, vec![], 11)], "{effects:?}");
    node.input(Input::Committed {
        task_id: id(1),
        seq: 3,
        stream_seq: 12,
    });
    let effects = node.effects();
    assert_eq!(seqs(&effects), vec![(4, vec![5], 12)], "{effects:?}");
    let Some(Effect::Propose { record, then, .. }) = effects.first() else {
        panic!("{effects:?}");
    };
    assert!(
        matches!(&record.event, TaskEvent::Progress(p) if p.fraction == Some(0.9)),
        "{record:?}"
    );
    assert!(matches!(then[0].event, TaskEvent::Completed { .. }));
}
