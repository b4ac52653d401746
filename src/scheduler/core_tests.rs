//! The core's rules, driven step by step: commands and reports in, what
//! reached mailboxes and executors out. No runtime, no sockets; the time is
//! passed in, so deadlines and expiries are tested by moving it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::core::Core;
use super::{Command, Mailbox, Outbound, Refusal, Reply, Submitted};
use crate::auth::{Principal, TokenRef, TokenScope};
use crate::config::{Config, Limits};
use crate::directory::{Directory, Source};
use crate::exec::{
    ExecutorId, ExecutorKind, ExecutorSpec, LostCause, Order, Outcome, Report, Tagged, TaskDecl,
};
use crate::task::{
    Choice, ClientId, Priority, Progress, QuestionSpec, TaskEvent, TaskFailure, TaskId,
    TaskOptions, TaskSpec,
};
use crate::telemetry::Metrics;

const SEC: Duration = Duration::from_secs(1);

struct Harness {
    core: Core,
    now: Instant,
    executors: Vec<(ExecutorId, mpsc::Receiver<Order>)>,
    _reports: mpsc::Receiver<Tagged>,
    next_id: u128,
}

fn limits() -> Limits {
    let mut limits = Config::with_keys(Vec::new()).limits;
    limits.queue_capacity = 100;
    limits.max_queued_input_bytes = 1 << 20;
    limits.max_queued_input_bytes_per_client = 1 << 19;
    limits.cancel_grace = 10 * SEC;
    limits.shutdown_grace = 30 * SEC;
    limits.max_timeout = 3600 * SEC;
    limits.no_worker_wait = 60 * SEC;
    limits
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

fn key(client: &str) -> Principal {
    Principal {
        client: ClientId::new(client),
        admin: false,
        tasks: None,
        token: None,
    }
}

fn token(client: &str, id: u64, scope: TokenScope) -> Principal {
    Principal {
        token: Some(TokenRef {
            id,
            scope,
            expires: Instant::now() + 3600 * SEC,
            revoked: tokio_util::sync::CancellationToken::new(),
        }),
        ..key(client)
    }
}

fn options() -> TaskOptions {
    TaskOptions::for_test()
}

/// What a mailbox received, as `type` names (replays flattened).
fn kinds(rx: &mut mpsc::Receiver<Outbound>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(message) = rx.try_recv() {
        match message {
            Outbound::Event { record, .. } => out.push(record.event.kind().to_owned()),
            Outbound::Replay(records) => {
                out.extend(records.iter().map(|r| r.event.kind().to_owned()));
            }
            Outbound::Rejected { error, .. } => out.push(format!("rejected: {error}")),
            Outbound::Error { error, .. } => out.push(format!("error: {error}")),
            Outbound::Unsubscribed { .. } => out.push("unsubscribed".to_owned()),
            Outbound::Watching(_) => out.push("watching".to_owned()),
            Outbound::TaskUpdate(_) => out.push("task_update".to_owned()),
            Outbound::WorkerUpdate(_) => out.push("worker_update".to_owned()),
            Outbound::Stats(_) => out.push("stats".to_owned()),
        }
    }
    out
}

impl Harness {
    fn new(limits: Limits, tasks: &[(&str, bool)]) -> Harness {
        let directory = Arc::new(Directory::default());
        for (name, retry_safe) in tasks {
            directory
                .declare(&decl(name, *retry_safe), Source::Config)
                .expect("declared");
        }
        let (tx, rx) = mpsc::channel(64);
        Harness {
            core: Core::new(limits, directory, Metrics::new(), tx),
            now: Instant::now(),
            executors: Vec::new(),
            _reports: rx,
            next_id: 0,
        }
    }

    fn executor(&mut self, name: &str, slots: usize, tasks: &[&str]) -> ExecutorId {
        let spec = ExecutorSpec {
            name: Arc::from(name),
            kind: ExecutorKind::Remote {
                peer: "test".to_owned(),
            },
            slots,
            tasks: tasks.iter().map(|t| decl(t, false)).collect(),
        };
        let (tx, rx) = oneshot::channel();
        self.core
            .on_command(Command::Register { spec, reply: tx }, self.now);
        let registration = rx
            .blocking_recv_now()
            .expect("answered")
            .expect("registered");
        let id = registration.id;
        self.executors.push((id, registration.orders));
        self.step();
        id
    }

    fn spec(&mut self, client: &Principal, task: &str, options: TaskOptions) -> TaskSpec {
        self.next_id += 1;
        let decl = self.core.directory.get(task);
        TaskSpec {
            id: format!("{:032x}", self.next_id).parse().expect("hex"),
            name: Arc::from(task),
            input: RawValue::from_string("{\"x\":1}".to_owned()).expect("json"),
            options,
            owner: client.owner(),
            retry_safe: decl.is_some_and(|d| d.retry_safe),
            inputs: Default::default(),
            tag: None,
        }
    }

    /// Submits from a mailbox; the task id (from `accepted`) and the inbox.
    fn submit(
        &mut self,
        client: &Principal,
        task: &str,
        options: TaskOptions,
    ) -> (TaskId, mpsc::Receiver<Outbound>) {
        let spec = self.spec(client, task, options);
        let id = spec.id;
        let (mailbox, rx, _) = Mailbox::new(1024);
        let reply = Reply::Mailbox {
            mailbox,
            reference: Some("r".into()),
        };
        self.core
            .on_command(Command::Submit { spec, reply }, self.now);
        self.step();
        (id, rx)
    }

    fn submit_direct(
        &mut self,
        client: &Principal,
        task: &str,
        options: TaskOptions,
    ) -> Result<Submitted, Refusal> {
        let spec = self.spec(client, task, options);
        let (tx, rx) = oneshot::channel();
        self.core.on_command(
            Command::Submit {
                spec,
                reply: Reply::Direct(tx),
            },
            self.now,
        );
        self.step();
        rx.blocking_recv_now().expect("answered")
    }

    fn step(&mut self) {
        self.core.on_time(self.now);
        self.core.dispatch(self.now);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.step();
    }

    fn orders(&mut self, executor: ExecutorId) -> Vec<Order> {
        let (_, rx) = self
            .executors
            .iter_mut()
            .find(|(id, _)| *id == executor)
            .expect("executor");
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// The task ids assigned to `executor` since last asked, with attempts.
    fn assigned(&mut self, executor: ExecutorId) -> Vec<(TaskId, u32)> {
        self.orders(executor)
            .into_iter()
            .filter_map(|o| match o {
                Order::Assign(a) => Some((a.task_id, a.attempt)),
                _ => None,
            })
            .collect()
    }

    fn report(&mut self, executor: ExecutorId, report: Report) {
        self.core.on_report(Tagged { executor, report }, self.now);
        self.step();
    }

    fn finish(&mut self, executor: ExecutorId, task_id: TaskId, attempt: u32, outcome: Outcome) {
        self.report(
            executor,
            Report::Finished {
                task_id,
                attempt,
                outcome,
                slot_free: true,
            },
        );
    }

    fn complete(&mut self, executor: ExecutorId, task_id: TaskId, attempt: u32) {
        let outcome = Outcome::Completed {
            result: RawValue::from_string("null".to_owned()).expect("json"),
            files: Vec::new(),
            duration: SEC,
        };
        self.finish(executor, task_id, attempt, outcome);
    }

    fn command(&mut self, command: Command) {
        self.core.on_command(command, self.now);
        self.step();
    }

    fn cancel(&mut self, client: &Principal, task_id: TaskId) -> mpsc::Receiver<Outbound> {
        let (mailbox, rx, _) = Mailbox::new(64);
        self.command(Command::Cancel {
            task_id,
            principal: client.clone(),
            reply: Reply::Mailbox {
                mailbox,
                reference: Some("c".into()),
            },
        });
        rx
    }

    fn answer(
        &mut self,
        client: &Principal,
        task_id: TaskId,
        question: &str,
        value: serde_json::Value,
    ) -> Result<(), Refusal> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Answer {
            task_id,
            principal: client.clone(),
            question_id: question.to_owned(),
            value,
            reply: Reply::Direct(tx),
        });
        rx.blocking_recv_now().expect("answered")
    }

    fn snapshot(&mut self, client: &Principal, task_id: TaskId) -> Option<super::TaskView> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Snapshot {
            task_id,
            principal: client.clone(),
            reply: tx,
        });
        rx.blocking_recv_now().expect("answered")
    }
}

/// `oneshot::Receiver::try_recv` under a name that reads as "the answer
/// must be there already" (the core answers synchronously).
trait Now<T> {
    fn blocking_recv_now(self) -> Option<T>;
}

impl<T> Now<T> for oneshot::Receiver<T> {
    fn blocking_recv_now(mut self) -> Option<T> {
        self.try_recv().ok()
    }
}

#[test]
fn strict_priority_and_fifo_across_names_on_one_executor() {
    let mut h = Harness::new(limits(), &[("a", false), ("b", false)]);
    let alice = key("alice");
    let low = h
        .submit(
            &alice,
            "a",
            TaskOptions {
                priority: Priority::Low,
                ..options()
            },
        )
        .0;
    let first = h.submit(&alice, "b", options()).0;
    let second = h.submit(&alice, "a", options()).0;
    let high = h
        .submit(
            &alice,
            "b",
            TaskOptions {
                priority: Priority::High,
                ..options()
            },
        )
        .0;
    let w = h.executor("w", 1, &["a", "b"]);
    let mut order = Vec::new();
    for _ in 0..4 {
        let assigned = h.assigned(w);
        assert_eq!(assigned.len(), 1, "one slot, one assignment at a time");
        let (id, attempt) = assigned[0];
        order.push(id);
        h.complete(w, id, attempt);
    }
    assert_eq!(order, vec![high, first, second, low]);
    // Finished tasks leave no timer behind (deadlines of an hour would
    // otherwise pile up with the task rate).
    assert!(h.core.timers.is_empty(), "{:?}", h.core.timers);
}

#[test]
fn a_backlog_of_one_name_does_not_hold_up_another() {
    let mut h = Harness::new(limits(), &[("slow", false), ("fast", false)]);
    let alice = key("alice");
    let slow = h.executor("slow-1", 1, &["slow"]);
    let fast = h.executor("fast-1", 1, &["fast"]);
    for _ in 0..5 {
        h.submit(&alice, "slow", options());
    }
    let (quick, mut rx) = h.submit(&alice, "fast", options());
    assert_eq!(h.assigned(fast), vec![(quick, 1)]);
    assert_eq!(h.assigned(slow).len(), 1);
    // Its position counted only the tasks competing for its executors.
    assert_eq!(kinds(&mut rx), vec!["accepted", "started"]);
}

#[test]
fn positions_count_the_tasks_that_start_first() {
    let mut h = Harness::new(limits(), &[("a", false), ("b", false)]);
    let alice = key("alice");
    h.executor("w", 1, &["a", "b"]);
    let _running = h.submit(&alice, "a", options());
    let ids: Vec<_> = (0..3).map(|_| h.submit(&alice, "b", options()).0).collect();
    let high = h
        .submit(
            &alice,
            "a",
            TaskOptions {
                priority: Priority::High,
                ..options()
            },
        )
        .0;
    assert_eq!(h.snapshot(&alice, high).and_then(|v| v.position), Some(0));
    assert_eq!(h.snapshot(&alice, ids[0]).and_then(|v| v.position), Some(1));
    assert_eq!(h.snapshot(&alice, ids[2]).and_then(|v| v.position), Some(3));
}

#[test]
fn a_concurrency_key_never_runs_twice_at_once_across_executors() {
    let mut h = Harness::new(limits(), &[("sync", false)]);
    let alice = key("alice");
    let a = h.executor("a", 2, &["sync"]);
    let b = h.executor("b", 2, &["sync"]);
    let keyed = || TaskOptions {
        concurrency_key: Some("device-17".to_owned()),
        ..options()
    };
    let first = h.submit(&alice, "sync", keyed()).0;
    let second = h.submit(&alice, "sync", keyed()).0;
    let other = h.submit(&alice, "sync", options()).0;
    let mut started: Vec<(ExecutorId, TaskId)> = Vec::new();
    for w in [a, b] {
        started.extend(h.assigned(w).into_iter().map(|(id, _)| (w, id)));
    }
    let ids: Vec<TaskId> = started.iter().map(|(_, id)| *id).collect();
    assert!(ids.contains(&first) && ids.contains(&other) && !ids.contains(&second));
    let (w, _) = started
        .iter()
        .find(|(_, id)| *id == first)
        .copied()
        .expect("first");
    h.complete(w, first, 1);
    let later: Vec<TaskId> = [a, b]
        .into_iter()
        .flat_map(|w| h.assigned(w))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(later, vec![second]);
}

#[test]
fn an_idempotency_key_runs_once_and_replays() {
    let mut h = Harness::new(limits(), &[("a", false)]);
    let alice = key("alice");
    let w = h.executor("w", 1, &["a"]);
    let keyed = || TaskOptions {
        idempotency_key: Some("k1".to_owned()),
        ..options()
    };
    let (first, _) = h.submit(&alice, "a", keyed());
    h.complete(w, first, 1);
    let again = h.submit_direct(&alice, "a", keyed()).expect("accepted");
    assert!(again.duplicate);
    assert_eq!(again.task_id, first);
    // Another client's same key is its own task.
    let bob = h
        .submit_direct(&key("bob"), "a", keyed())
        .expect("accepted");
    assert!(!bob.duplicate);
    assert_eq!(h.assigned(w).len(), 2, "first, then bob's");
}

#[test]
fn bounds_on_the_queue_and_on_queued_bytes() {
    let mut l = limits();
    l.queue_capacity = 2;
    let mut h = Harness::new(l, &[("a", false)]);
    let alice = key("alice");
    assert!(h.submit_direct(&alice, "a", options()).is_ok());
    assert!(h.submit_direct(&alice, "a", options()).is_ok());
    let full = h.submit_direct(&alice, "a", options());
    assert!(
        matches!(full, Err(Refusal::QueueFull { capacity: 2, .. })),
        "{full:?}"
    );

    let mut l = limits();
    l.max_queued_input_bytes = 100;
    l.max_queued_input_bytes_per_client = 21;
    let mut h = Harness::new(l, &[("a", false)]);
    let mut spec = h.spec(&alice, "a", options());
    spec.input = RawValue::from_string(format!("\"{}\"", "x".repeat(10))).expect("json");
    let (tx, rx) = oneshot::channel();
    h.command(Command::Submit {
        spec,
        reply: Reply::Direct(tx),
    });
    assert!(rx.blocking_recv_now().is_some_and(|r| r.is_ok()));
    let mut spec = h.spec(&alice, "a", options());
    spec.input = RawValue::from_string(format!("\"{}\"", "x".repeat(10))).expect("json");
    let (tx, rx) = oneshot::channel();
    h.command(Command::Submit {
        spec,
        reply: Reply::Direct(tx),
    });
    let refused = rx.blocking_recv_now().expect("answered");
    assert!(
        matches!(refused, Err(Refusal::ClientShareFull { max: 21, .. })),
        "{refused:?}"
    );
    // Another client still gets through; starting a task gives its bytes back.
    assert!(h.submit_direct(&key("bob"), "a", options()).is_ok());
    let w = h.executor("w", 5, &["a"]);
    assert_eq!(h.assigned(w).len(), 2);
    assert_eq!(h.core.queued_bytes, 0);
}

#[test]
fn a_deadline_fails_the_task_and_a_late_report_is_ignored() {
    let mut h = Harness::new(limits(), &[("a", false)]);
    let alice = key("alice");
    let w = h.executor("w", 1, &["a"]);
    let (id, mut rx) = h.submit(
        &alice,
        "a",
        TaskOptions {
            timeout: 5 * SEC,
            ..options()
        },
    );
    assert_eq!(h.assigned(w), vec![(id, 1)]);
    h.advance(4 * SEC);
    assert_eq!(kinds(&mut rx), vec!["accepted", "started"]);
    h.advance(SEC);
    assert_eq!(kinds(&mut rx), vec!["failed"]);
    assert!(matches!(h.orders(w).as_slice(), [Order::Stop { .. }]));
    // The slot stays busy until the executor lets go of the attempt.
    let next = h.submit(&alice, "a", options()).0;
    assert!(h.assigned(w).is_empty());
    h.finish(w, id, 1, Outcome::Cancelled);
    assert_eq!(h.assigned(w), vec![(next, 1)]);
    assert_eq!(
        kinds(&mut rx),
        Vec::<String>::new(),
        "one terminal event only"
    );
}

#[test]
fn reports_about_another_attempt_are_ignored() {
    let mut h = Harness::new(limits(), &[("a", true)]);
    let alice = key("alice");
    let w1 = h.executor("w1", 1, &["a"]);
    let (id, mut rx) = h.submit(&alice, "a", options());
    assert_eq!(h.assigned(w1), vec![(id, 1)]);
    // A report from an executor that does not hold it, and for attempt 2.
    let w2 = h.executor("w2", 1, &["a"]);
    h.complete(w2, id, 1);
    h.complete(w1, id, 2);
    let progress = Report::Progress {
        task_id: id,
        attempt: 7,
        progress: Progress::default(),
    };
    h.report(w1, progress);
    assert_eq!(kinds(&mut rx), vec!["accepted", "started"]);
    h.complete(w1, id, 1);
    assert_eq!(kinds(&mut rx), vec!["completed"]);
}

#[test]
fn a_lost_executor_requeues_retry_safe_tasks_and_fails_the_others() {
    let mut h = Harness::new(limits(), &[("safe", true), ("unsafe", false)]);
    let alice = key("alice");
    let w1 = h.executor("w1", 2, &["safe", "unsafe"]);
    let (safe, mut safe_rx) = h.submit(&alice, "safe", options());
    let (unsafe_id, mut unsafe_rx) = h.submit(&alice, "unsafe", options());
    assert_eq!(h.assigned(w1).len(), 2);
    h.report(
        w1,
        Report::Gone {
            cause: Some(LostCause::Exit {
                code: None,
                signal: Some(9),
            }),
        },
    );
    assert_eq!(kinds(&mut unsafe_rx), vec!["accepted", "started", "failed"]);
    assert_eq!(kinds(&mut safe_rx), vec!["accepted", "started", "requeued"]);
    let view = h.snapshot(&alice, unsafe_id).expect("held");
    match view.terminal.as_deref().map(|r| &r.event) {
        Some(TaskEvent::Failed(TaskFailure {
            message, details, ..
        })) => {
            assert!(message.contains("signal 9"), "{message}");
            assert_eq!(
                details.as_ref().map(|d| d["cause"].clone()),
                Some("exit".into())
            );
        }
        other => panic!("not failed: {other:?}"),
    }
    // Attempt 2 runs on the next executor; a second loss is final.
    let w2 = h.executor("w2", 1, &["safe"]);
    assert_eq!(h.assigned(w2), vec![(safe, 2)]);
    assert_eq!(kinds(&mut safe_rx), vec!["started"]);
    h.report(
        w2,
        Report::Gone {
            cause: Some(LostCause::Hung),
        },
    );
    assert_eq!(kinds(&mut safe_rx), vec!["failed"]);
}

#[test]
fn cancelling_a_running_task_answers_every_canceller() {
    let mut h = Harness::new(limits(), &[("a", false)]);
    let alice = key("alice");
    let w = h.executor("w", 1, &["a"]);
    let (id, mut rx) = h.submit(&alice, "a", options());
    h.assigned(w);
    // Two cancels before the executor answers (one batch).
    let mut c1 = h.cancel(&alice, id);
    let mut c2 = h.cancel(&alice, id);
    let stops: Vec<_> = h.orders(w);
    assert_eq!(stops.len(), 1, "one stop order");
    h.finish(w, id, 1, Outcome::Cancelled);
    assert_eq!(kinds(&mut c1), vec!["cancelled"]);
    assert_eq!(kinds(&mut c2), vec!["cancelled"]);
    assert_eq!(kinds(&mut rx), vec!["accepted", "started", "cancelled"]);
    // Cancelling again: already finished.
    let mut c3 = h.cancel(&alice, id);
    assert_eq!(kinds(&mut c3), vec!["error: the task has already finished"]);
}

#[test]
fn cancels_waiting_for_one_task_are_bounded_and_each_answered() {
    let mut h = Harness::new(limits(), &[("a", false)]);
    let alice = key("alice");
    let w = h.executor("w", 1, &["a"]);
    let (id, _rx) = h.submit(&alice, "a", options());
    h.assigned(w);
    let mut waiting: Vec<_> = (0..super::MAX_CANCELS_WAITING)
        .map(|_| h.cancel(&alice, id))
        .collect();
    let mut one_more = h.cancel(&alice, id);
    assert_eq!(
        kinds(&mut one_more),
        vec![format!(
            "error: {} cancels of this task already wait for its end",
            super::MAX_CANCELS_WAITING
        )]
    );
    h.finish(w, id, 1, Outcome::Cancelled);
    for rx in &mut waiting {
        assert_eq!(kinds(rx), vec!["cancelled"]);
    }
}

#[test]
fn an_executor_that_ignores_a_stop_does_not_hold_the_task_forever() {
    let mut h = Harness::new(limits(), &[("a", false)]);
    let alice = key("alice");
    let w = h.executor("w", 1, &["a"]);
    let (id, mut rx) = h.submit(&alice, "a", options());
    h.assigned(w);
    let _c = h.cancel(&alice, id);
    h.advance(10 * SEC);
    assert_eq!(kinds(&mut rx), vec!["accepted", "started"]);
    h.advance(3 * SEC);
    assert_eq!(kinds(&mut rx), vec!["cancelled"]);
}

#[test]
fn questions_are_asked_validated_answered_once_and_time_out() {
    let mut h = Harness::new(limits(), &[("ask", false)]);
    let alice = key("alice");
    let w = h.executor("w", 1, &["ask"]);
    let (id, mut rx) = h.submit(
        &alice,
        "ask",
        TaskOptions {
            timeout: 10 * SEC,
            ..options()
        },
    );
    h.assigned(w);
    let question = |id: &str, default: Option<serde_json::Value>| QuestionSpec {
        question_id: id.to_owned(),
        prompt: "Continue or abort?".to_owned(),
        choices: Some(vec![
            Choice {
                value: "continue".into(),
                label: None,
            },
            Choice {
                value: "abort".into(),
                label: None,
            },
        ]),
        schema: None,
        default,
        timeout: Some(30 * SEC),
    };
    h.report(
        w,
        Report::Ask {
            task_id: id,
            attempt: 1,
            question: question("q1", None),
        },
    );
    assert_eq!(kinds(&mut rx), vec!["accepted", "started", "question"]);
    assert_eq!(
        h.snapshot(&alice, id).map(|v| v.state.as_str()),
        Some("waiting")
    );
    // The deadline is paused while it waits.
    h.advance(20 * SEC);
    assert_eq!(kinds(&mut rx), Vec::<String>::new());
    // Only the owner may answer; only a valid value is taken; once.
    assert!(matches!(
        h.answer(&key("bob"), id, "q1", "continue".into()),
        Err(Refusal::NotFound)
    ));
    assert!(matches!(
        h.answer(&alice, id, "q1", "maybe".into()),
        Err(Refusal::InvalidAnswer(_))
    ));
    assert!(h.answer(&alice, id, "q1", "continue".into()).is_ok());
    assert!(matches!(
        h.answer(&alice, id, "q1", "abort".into()),
        Err(Refusal::AlreadyAnswered)
    ));
    assert_eq!(kinds(&mut rx), vec!["answered"]);
    match h.orders(w).as_slice() {
        [Order::Answer { answer, .. }] => assert_eq!(answer.value, Some("continue".into())),
        other => panic!("{other:?}"),
    }
    // A second question times out to its default.
    h.report(
        w,
        Report::Ask {
            task_id: id,
            attempt: 1,
            question: question("q2", Some("abort".into())),
        },
    );
    h.advance(30 * SEC);
    assert_eq!(kinds(&mut rx), vec!["question", "answered"]);
    match h.orders(w).as_slice() {
        [Order::Answer { answer, .. }] => {
            assert_eq!(answer.outcome, crate::task::AnswerOutcome::TimedOut);
            assert_eq!(answer.value, Some("abort".into()));
        }
        other => panic!("{other:?}"),
    }
    // The deadline resumed with what it had left (10 s): not yet, then yes.
    h.advance(9 * SEC);
    assert_eq!(kinds(&mut rx), Vec::<String>::new());
    h.advance(2 * SEC);
    assert_eq!(kinds(&mut rx), vec!["failed"]);
    assert!(h.core.timers.is_empty(), "{:?}", h.core.timers);
}

#[test]
fn a_task_that_may_not_ask_gets_its_default_at_once() {
    let mut h = Harness::new(limits(), &[("ask", false)]);
    let alice = key("alice");
    let w = h.executor("w", 1, &["ask"]);
    let (id, mut rx) = h.submit(
        &alice,
        "ask",
        TaskOptions {
            interactive: false,
            ..options()
        },
    );
    h.assigned(w);
    let question = QuestionSpec {
        question_id: "q".to_owned(),
        prompt: "?".to_owned(),
        choices: Some(vec![Choice {
            value: "yes".into(),
            label: None,
        }]),
        schema: None,
        default: Some("yes".into()),
        timeout: None,
    };
    h.report(
        w,
        Report::Ask {
            task_id: id,
            attempt: 1,
            question,
        },
    );
    assert_eq!(kinds(&mut rx), vec!["accepted", "started"]);
    match h.orders(w).as_slice() {
        [Order::Answer { answer, .. }] => {
            assert_eq!(answer.outcome, crate::task::AnswerOutcome::NotInteractive);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_task_nobody_serves_fails_with_no_worker_unless_one_comes() {
    let mut h = Harness::new(limits(), &[("a", false), ("b", false)]);
    let alice = key("alice");
    let (lonely, mut rx) = h.submit(&alice, "a", options());
    let (saved, _) = h.submit(&alice, "b", options());
    h.advance(30 * SEC);
    let w = h.executor("w", 1, &["b"]);
    assert_eq!(h.assigned(w), vec![(saved, 1)]);
    h.advance(30 * SEC);
    assert_eq!(kinds(&mut rx), vec!["accepted", "failed"]);
    assert!(
        h.snapshot(&alice, lonely)
            .is_some_and(|v| v.state.is_terminal())
    );
}

#[test]
fn the_drain_cancels_queued_tasks_and_stops_running_ones_after_the_grace() {
    let mut h = Harness::new(limits(), &[("a", false)]);
    let alice = key("alice");
    let w = h.executor("w", 1, &["a"]);
    let (running, mut running_rx) = h.submit(&alice, "a", options());
    let (_, mut queued_rx) = h.submit(&alice, "a", options());
    h.assigned(w);
    let (tx, mut done) = oneshot::channel();
    h.command(Command::Drain { reply: tx });
    assert_eq!(kinds(&mut queued_rx), vec!["accepted", "cancelled"]);
    assert!(matches!(h.orders(w).as_slice(), [Order::Drain]));
    assert!(done.try_recv().is_err(), "a task still runs");
    assert!(matches!(
        h.submit_direct(&alice, "a", options()),
        Err(Refusal::ShuttingDown)
    ));
    h.advance(30 * SEC);
    assert!(matches!(h.orders(w).as_slice(), [Order::Stop { .. }]));
    h.finish(w, running, 1, Outcome::Cancelled);
    assert_eq!(
        kinds(&mut running_rx),
        vec!["accepted", "started", "cancelled"]
    );
    assert!(done.try_recv().is_ok(), "the drain is done");
}

#[test]
fn finished_tasks_are_forgotten_by_time_count_and_bytes() {
    let mut l = limits();
    l.result_ttl = 100 * SEC;
    l.max_held_tasks = 2;
    let mut h = Harness::new(l, &[("a", false)]);
    let alice = key("alice");
    let w = h.executor("w", 1, &["a"]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (id, _) = h.submit(&alice, "a", options());
        h.assigned(w);
        h.complete(w, id, 1);
        ids.push(id);
    }
    assert!(h.snapshot(&alice, ids[0]).is_none(), "over max_held_tasks");
    assert!(h.snapshot(&alice, ids[1]).is_some());
    h.advance(101 * SEC);
    assert!(h.snapshot(&alice, ids[2]).is_none(), "past result_ttl");
}

#[test]
fn a_browser_token_sees_only_its_own_tasks_unless_minted_wide() {
    let mut h = Harness::new(limits(), &[("a", false)]);
    let editor_1 = token("indico", 1, TokenScope::Own);
    let editor_2 = token("indico", 2, TokenScope::Own);
    let backend = key("indico");
    let wide = token("indico", 3, TokenScope::Key);
    let (id, _) = h.submit(&editor_1, "a", options());
    assert!(h.snapshot(&editor_1, id).is_some());
    assert!(h.snapshot(&editor_2, id).is_none());
    assert!(h.snapshot(&backend, id).is_some());
    assert!(h.snapshot(&wide, id).is_some());
    assert!(h.snapshot(&key("other"), id).is_none());
    let mut denied = h.cancel(&editor_2, id);
    assert_eq!(kinds(&mut denied), vec!["error: no such task"]);
}

#[test]
fn one_lost_attempt_is_requeued_while_its_executor_lives_on() {
    let mut h = Harness::new(limits(), &[("safe", true)]);
    let alice = key("alice");
    let w = h.executor("w", 1, &["safe"]);
    let (id, mut rx) = h.submit(&alice, "safe", options());
    assert_eq!(h.assigned(w), vec![(id, 1)]);
    h.report(
        w,
        Report::Lost {
            task_id: id,
            attempt: 1,
            cause: LostCause::Disconnected,
        },
    );
    // Its slot is free again, so attempt 2 goes to the same executor.
    assert_eq!(h.assigned(w), vec![(id, 2)]);
    assert_eq!(
        kinds(&mut rx),
        vec!["accepted", "started", "requeued", "started"]
    );
}
