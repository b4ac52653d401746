//! The worker session, driven synchronously: frames and orders in, effects
//! out, the clock moved by hand.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;
use crate::exec::StopReason;
use crate::task::CancelReason;

const HB: Duration = Duration::from_secs(5);

fn settings() -> Settings {
    Settings {
        heartbeat_interval: HB,
        heartbeat_timeout: 3 * HB,
        hello_timeout: Duration::from_secs(60),
        reconnect_grace: Duration::from_secs(10),
        max_violations: 3,
        max_message_bytes: 4096,
        max_file_bytes: 1 << 20,
        task_filter: None,
        declared: Arc::new(HashMap::new()),
    }
}

struct Harness {
    session: Session,
    now: Instant,
}

fn id(n: u128) -> TaskId {
    format!("{n:032x}")
        .parse()
        .unwrap_or_else(|_| unreachable!())
}

impl Harness {
    fn managed() -> Harness {
        Harness::with(
            settings(),
            ExecutorKind::Managed {
                group: Arc::from("g"),
                pid: Some(7),
            },
        )
    }

    fn remote() -> Harness {
        Harness::with(
            settings(),
            ExecutorKind::Remote {
                peer: "127.0.0.1:9".to_owned(),
            },
        )
    }

    fn with(settings: Settings, kind: ExecutorKind) -> Harness {
        let now = Instant::now();
        let name = matches!(kind, ExecutorKind::Managed { .. }).then(|| Arc::from("g-1"));
        Harness {
            session: Session::new(settings, kind, name, now),
            now,
        }
    }

    fn frame(&mut self, value: Value) -> Vec<Effect> {
        self.text(&value.to_string())
    }

    fn text(&mut self, text: &str) -> Vec<Effect> {
        let mut out = Vec::new();
        self.session.on_frame(text, self.now, &mut out);
        out
    }

    fn order(&mut self, order: Order) -> Vec<Effect> {
        let mut out = Vec::new();
        self.session
            .on_order(order, Place::OutputDir("/tmp/out"), self.now, &mut out);
        out
    }

    fn tick(&mut self, by: Duration) -> Vec<Effect> {
        self.now += by;
        let mut out = Vec::new();
        self.session.on_tick(self.now, &mut out);
        out
    }

    /// hello with `slots`, registered: returns the welcome.
    fn ready(&mut self, slots: u32) -> Value {
        let out = self.frame(
            json!({"type": "hello", "protocol": 1, "worker": {"name": "w1"},
            "slots": slots, "tasks": [{"name": "sync", "retry_safe": true,
            "input_schema": {"type": "object"}}]}),
        );
        assert!(matches!(out.as_slice(), [Effect::Register(_)]), "{out:?}");
        let mut out = Vec::new();
        self.session
            .registered("w-1".to_owned(), self.now, &mut out);
        sent(&out)[0].clone()
    }

    fn assign(&mut self, task: TaskId, attempt: u32) -> Value {
        sent(&self.assign_out(task, attempt))[0].clone()
    }

    fn assign_out(&mut self, task: TaskId, attempt: u32) -> Vec<Effect> {
        let input = RawValue::from_string(r#"{"device":"17"}"#.to_owned())
            .unwrap_or_else(|_| unreachable!());
        self.order(Order::Assign(Assignment {
            task_id: task,
            attempt,
            task: Arc::from("sync"),
            input,
            deadline: self.now + Duration::from_secs(60),
            deadline_at: SystemTime::now() + Duration::from_secs(60),
            timeout: Duration::from_secs(60),
            interactive: true,
        }))
    }
}

fn sent(out: &[Effect]) -> Vec<Value> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Send(text) => serde_json::from_str(text).ok(),
            _ => None,
        })
        .collect()
}

fn reports(out: &[Effect]) -> Vec<&Report> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Report(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn closed(out: &[Effect]) -> Option<(u16, Option<&LostCause>)> {
    out.iter().find_map(|e| match e {
        Effect::Close { code, cause } => Some((code.code(), cause.as_ref())),
        _ => None,
    })
}

fn gone(out: &[Effect]) -> Option<Option<&LostCause>> {
    reports(out).into_iter().find_map(|r| match r {
        Report::Gone { cause } => Some(cause.as_ref()),
        _ => None,
    })
}

#[test]
fn hello_registers_and_welcome_carries_the_limits() {
    let mut h = Harness::managed();
    let out = h.frame(json!({"type": "hello", "protocol": 1, "worker": {"name": "ignored"},
        "slots": 2, "tasks": [{"name": "sync", "description": "d", "timeout_s": 30, "retry_safe": true}]}));
    let [Effect::Register(spec)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        &*spec.name, "g-1",
        "a managed worker keeps the supervisor's name"
    );
    assert_eq!(spec.slots, 2);
    assert_eq!(&*spec.tasks[0].name, "sync");
    assert!(spec.tasks[0].retry_safe);
    assert_eq!(spec.tasks[0].timeout, Some(Duration::from_secs(30)));
    let mut out = Vec::new();
    h.session.registered("w-4".to_owned(), h.now, &mut out);
    let welcome = &sent(&out)[0];
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["worker_id"], "w-4");
    assert_eq!(welcome["heartbeat_interval_s"], 5.0);
    assert_eq!(welcome["limits"]["max_message_bytes"], 4096);
    assert_eq!(h.session.phase(), Phase::Ready);
}

#[test]
fn a_remote_worker_is_named_by_its_hello() {
    let mut h = Harness::remote();
    let out = h.frame(json!({"type": "hello", "protocol": 1, "worker": {"name": "edge-7"}, "tasks": [{"name": "t"}]}));
    let [Effect::Register(spec)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(&*spec.name, "edge-7");
    assert_eq!(spec.slots, 1);
}

#[test]
fn a_bad_hello_is_answered_then_closed() {
    for hello in [
        json!({"type": "hello", "protocol": 1, "worker": {"name": "w"}, "tasks": [{"name": "t", "input_schema": {"type": "nope"}}]}),
        json!({"type": "hello", "protocol": 9, "worker": {"name": "w"}, "tasks": [{"name": "t"}]}),
    ] {
        let mut h = Harness::managed();
        let out = h.frame(hello);
        assert_eq!(sent(&out)[0]["error"]["code"], "bad_message", "{out:?}");
        assert_eq!(closed(&out).map(|c| c.0), Some(4400));
        assert!(
            gone(&out).is_none(),
            "never registered, so nothing to report"
        );
    }
}

#[test]
fn only_hello_may_come_first() {
    let mut h = Harness::managed();
    let out = h.frame(json!({"type": "heartbeat"}));
    assert_eq!(sent(&out)[0]["error"]["code"], "bad_message");
    assert!(closed(&out).is_none());
}

#[test]
fn the_group_filter_and_config_declarations_apply() {
    let mut s = settings();
    s.task_filter = Some(vec!["b".to_owned()]);
    let mut declared = HashMap::new();
    declared.insert(
        Arc::from("b"),
        TaskDecl {
            name: Arc::from("b"),
            description: String::new(),
            input_schema: Some(json!({"type": "string"})),
            retry_safe: true,
            timeout: None,
        },
    );
    s.declared = Arc::new(declared);
    let mut h = Harness::with(
        s.clone(),
        ExecutorKind::Managed {
            group: Arc::from("g"),
            pid: None,
        },
    );
    let out = h.frame(json!({"type": "hello", "protocol": 1, "worker": {"name": "w"},
        "tasks": [{"name": "a"}, {"name": "b", "description": "from the worker", "input_schema": {"type": "object"}}]}));
    let [Effect::Register(spec)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(spec.tasks.len(), 1);
    assert_eq!(
        spec.tasks[0].input_schema,
        Some(json!({"type": "string"})),
        "config wins"
    );
    assert!(spec.tasks[0].retry_safe);
    assert_eq!(spec.tasks[0].description, "from the worker");

    let mut h = Harness::with(
        s,
        ExecutorKind::Managed {
            group: Arc::from("g"),
            pid: None,
        },
    );
    let out = h.frame(
        json!({"type": "hello", "protocol": 1, "worker": {"name": "w"}, "tasks": [{"name": "a"}]}),
    );
    assert!(
        sent(&out)[0]["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("filter")
    );
    assert_eq!(closed(&out).map(|c| c.0), Some(4400));
}

#[test]
fn an_attempt_runs_reports_and_completes_once() {
    let mut h = Harness::managed();
    h.ready(1);
    let task = id(1);
    let assign = h.assign(task, 1);
    assert_eq!(assign["type"], "assign");
    assert_eq!(assign["task_id"], task.to_string());
    assert_eq!(assign["input"]["device"], "17");
    assert_eq!(assign["output_dir"], "/tmp/out");
    assert!(assign["deadline"].as_str().unwrap_or("").ends_with('Z'));

    let out = h.frame(json!({"type": "progress", "task_id": task.to_string(), "attempt": 1, "progress": 0.5, "message": "half"}));
    let [
        Report::Progress {
            progress,
            attempt: 1,
            ..
        },
    ] = reports(&out).as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!(progress.fraction, Some(0.5));

    let complete = json!({"type": "complete", "ref": "c1", "task_id": task.to_string(), "attempt": 1,
        "result": {"n": 1}, "files": [{"name": "a.txt"}]});
    let out = h.frame(complete.clone());
    let [
        Effect::Complete {
            task_id,
            attempt: 1,
            result,
            files,
            reference,
        },
    ] = out.as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!(*task_id, task);
    assert_eq!(result.get(), r#"{"n":1}"#);
    assert_eq!(files[0].name, "a.txt");
    assert_eq!(reference.as_deref(), Some("c1"));

    // A replay (say, after the worker missed the `ok`) is acknowledged, not applied.
    let out = h.frame(complete);
    assert_eq!(sent(&out), vec![json!({"type": "ok", "ref": "c1"})]);
    assert!(!out.iter().any(|e| matches!(e, Effect::Complete { .. })));
    // Late progress about it is stale, and not a violation.
    for _ in 0..10 {
        let out = h.frame(json!({"type": "progress", "task_id": task.to_string(), "attempt": 1}));
        assert_eq!(sent(&out)[0]["error"]["code"], "stale_attempt");
        assert!(closed(&out).is_none());
    }
}

#[test]
fn fail_keeps_the_worker_code_and_is_acknowledged() {
    let mut h = Harness::managed();
    h.ready(1);
    let task = id(2);
    h.assign(task, 1);
    let out = h.frame(json!({"type": "fail", "ref": "f", "task_id": task.to_string(), "attempt": 1,
        "error": {"message": "device 17 is locked", "code": "DeviceLocked", "details": {"device": 17}}}));
    let [
        Report::Finished {
            outcome: Outcome::Failed(failure),
            slot_free: true,
            ..
        },
    ] = reports(&out).as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!(failure.kind, FailureKind::TaskError);
    assert_eq!(failure.message, "device 17 is locked");
    assert_eq!(
        failure.details,
        Some(json!({"worker_code": "DeviceLocked", "worker_details": {"device": 17}}))
    );
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::Release { attempt: 1, .. }))
    );
    assert_eq!(sent(&out), vec![json!({"type": "ok", "ref": "f"})]);
}

#[test]
fn reports_about_other_attempts_are_fenced() {
    let mut h = Harness::managed();
    h.ready(2);
    let task = id(3);
    h.assign(task, 2);
    let out = h.frame(json!({"type": "complete", "task_id": task.to_string(), "attempt": 1}));
    assert_eq!(sent(&out)[0]["error"]["code"], "stale_attempt");
    assert!(!out.iter().any(|e| matches!(e, Effect::Complete { .. })));
    let out = h.frame(
        json!({"type": "complete", "ref": "x", "task_id": id(99).to_string(), "attempt": 1}),
    );
    assert_eq!(sent(&out)[0]["error"]["code"], "not_assigned");
    assert_eq!(sent(&out)[0]["ref"], "x");
    let out = h.frame(json!({"type": "progress", "task_id": "not-an-id", "attempt": 1}));
    assert_eq!(sent(&out)[0]["error"]["code"], "not_assigned");
}

#[test]
fn repeated_violations_end_the_session_and_lose_its_attempts() {
    let mut h = Harness::managed();
    h.ready(1);
    h.assign(id(4), 1);
    for _ in 0..3 {
        let out = h.text("this is not json");
        assert_eq!(sent(&out)[0]["error"]["code"], "bad_message");
        assert!(closed(&out).is_none());
    }
    let out = h.text("{\"type\":\"nope\"}");
    assert_eq!(gone(&out), Some(Some(&LostCause::Violations)));
    assert_eq!(closed(&out).map(|c| c.0), Some(4400));
    assert!(out.iter().any(|e| matches!(e, Effect::Release { .. })));
    // Violations older than the window do not count.
    let mut h = Harness::managed();
    h.ready(1);
    for _ in 0..10 {
        let out = h.text("[]");
        assert!(closed(&out).is_none());
        h.now += Duration::from_secs(21);
    }
}

#[test]
fn too_large_messages_are_refused() {
    let mut h = Harness::managed();
    h.ready(1);
    let big = format!(r#"{{"type":"log","message":"{}"}}"#, "x".repeat(5000));
    let out = h.text(&big);
    assert_eq!(sent(&out)[0]["error"]["code"], "too_large");
}

#[test]
fn heartbeats_both_ways() {
    let mut h = Harness::managed();
    h.ready(1);
    let out = h.tick(HB);
    assert_eq!(sent(&out), vec![json!({"type": "heartbeat"})]);
    h.frame(json!({"type": "heartbeat"}));
    // Heard 0 s ago: another interval passes, we send again, nothing is lost.
    let out = h.tick(HB);
    assert_eq!(sent(&out), vec![json!({"type": "heartbeat"})]);
    assert!(gone(&out).is_none());
    h.assign(id(5), 1);
    h.tick(HB);
    let out = h.tick(HB);
    assert_eq!(gone(&out), Some(Some(&LostCause::Hung)));
    assert_eq!(closed(&out), Some((4408, Some(&LostCause::Hung))));
}

#[test]
fn no_hello_in_time_closes_with_4408() {
    let mut h = Harness::managed();
    assert!(h.tick(Duration::from_secs(59)).is_empty());
    let out = h.tick(Duration::from_secs(1));
    assert_eq!(closed(&out).map(|c| c.0), Some(4408));
    assert!(gone(&out).is_none());
}

#[test]
fn cancel_is_forwarded_and_must_be_answered_within_its_grace() {
    let mut h = Harness::managed();
    h.ready(2);
    let (a, b) = (id(6), id(7));
    h.assign(a, 1);
    h.assign(b, 1);
    let stop = |task| Order::Stop {
        task_id: task,
        attempt: 1,
        reason: StopReason::Cancelled(CancelReason::Client),
        grace: Duration::from_secs(2),
    };
    let out = h.order(stop(a));
    assert_eq!(
        sent(&out)[0],
        json!({"type": "cancel", "task_id": a.to_string(), "attempt": 1, "reason": "client", "grace_s": 2.0})
    );
    let out = h.frame(json!({"type": "cancelled", "task_id": a.to_string(), "attempt": 1}));
    assert!(matches!(
        reports(&out).as_slice(),
        [Report::Finished {
            outcome: Outcome::Cancelled,
            ..
        }]
    ));

    h.order(stop(b));
    h.frame(json!({"type": "heartbeat"}));
    assert!(gone(&h.tick(Duration::from_secs(1))).is_none());
    let out = h.tick(Duration::from_secs(1));
    assert_eq!(gone(&out), Some(Some(&LostCause::CancelIgnored)));
    assert_eq!(
        closed(&out).map(|c| c.1),
        Some(Some(&LostCause::CancelIgnored))
    );
}

#[test]
fn an_unasked_cancelled_fails_the_task() {
    let mut h = Harness::managed();
    h.ready(1);
    h.assign(id(8), 1);
    let out = h.frame(json!({"type": "cancelled", "task_id": id(8).to_string(), "attempt": 1}));
    assert!(matches!(
        reports(&out).as_slice(),
        [Report::Finished {
            outcome: Outcome::Failed(_),
            ..
        }]
    ));
}

#[test]
fn one_question_at_a_time() {
    let mut h = Harness::managed();
    h.ready(1);
    let task = id(9);
    h.assign(task, 1);
    let ask = json!({"type": "ask", "task_id": task.to_string(), "attempt": 1, "question_id": "q1",
        "prompt": "Continue?", "choices": [{"value": "yes"}, {"value": "no"}], "default": "no", "timeout_s": 30});
    let out = h.frame(ask.clone());
    let [Report::Ask { question, .. }] = reports(&out).as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(question.question_id, "q1");
    assert_eq!(question.choices.as_ref().map(Vec::len), Some(2));
    assert_eq!(question.timeout, Some(Duration::from_secs(30)));
    let out = h.frame(ask.clone());
    assert_eq!(sent(&out)[0]["error"]["code"], "bad_message");
    let out = h.order(Order::Answer {
        task_id: task,
        attempt: 1,
        answer: crate::task::Answer {
            question_id: "q1".to_owned(),
            outcome: AnswerOutcome::Answered,
            value: Some(json!("yes")),
        },
        deadline: h.now,
        deadline_at: SystemTime::now(),
    });
    let answer = &sent(&out)[0];
    assert_eq!(answer["type"], "answer");
    assert_eq!(answer["value"], "yes");
    assert_eq!(answer["outcome"], "answered");
    assert_eq!(
        reports(&h.frame(ask)).len(),
        1,
        "a new question may follow the answer"
    );
}

#[test]
fn drain_and_draining() {
    let mut h = Harness::managed();
    h.ready(1);
    let out = h.order(Order::Drain);
    assert_eq!(sent(&out), vec![json!({"type": "drain"})]);
    let mut h = Harness::managed();
    h.ready(1);
    let out = h.frame(json!({"type": "draining", "reason": "SIGTERM"}));
    assert!(matches!(reports(&out).as_slice(), [Report::Draining]));
    let out = h.frame(json!({"type": "bye"}));
    assert_eq!(gone(&out), Some(None));
    assert_eq!(closed(&out).map(|c| c.0), Some(1001));
}

#[test]
fn a_managed_exit_loses_running_attempts_with_its_status() {
    let mut h = Harness::managed();
    h.ready(1);
    h.assign(id(10), 1);
    let mut out = Vec::new();
    let exit = LostCause::Exit {
        code: None,
        signal: Some(9),
    };
    h.session.on_closed(Some(exit.clone()), h.now, &mut out);
    assert_eq!(gone(&out), Some(Some(&exit)));
    // An idle worker that leaves loses nothing.
    let mut h = Harness::managed();
    h.ready(1);
    let mut out = Vec::new();
    h.session.on_closed(Some(exit), h.now, &mut out);
    assert_eq!(gone(&out), Some(None));
}

#[test]
fn a_remote_worker_gets_its_reconnect_grace() {
    let mut h = Harness::remote();
    h.ready(1);
    h.assign(id(11), 1);
    let mut out = Vec::new();
    h.session.on_closed(None, h.now, &mut out);
    assert!(
        reports(&out).is_empty(),
        "the scheduler sees no gap: {out:?}"
    );
    assert!(gone(&h.tick(Duration::from_secs(9))).is_none());
    let out = h.tick(Duration::from_secs(1));
    assert_eq!(gone(&out), Some(Some(&LostCause::Disconnected)));
}

#[test]
fn a_fresh_session_keeps_nothing_it_is_asked_to_resume() {
    let mut h = Harness::remote();
    let task = id(12);
    let out = h.frame(json!({"type": "hello", "protocol": 1, "worker": {"name": "edge"}, "tasks": [{"name": "sync"}],
        "resume": [{"task_id": task.to_string(), "attempt": 1}]}));
    assert!(matches!(out.as_slice(), [Effect::Register(_)]), "{out:?}");
    let mut out = Vec::new();
    h.session.registered("w-9".to_owned(), h.now, &mut out);
    assert_eq!(
        sent(&out)[0]["resumed"],
        json!([{"task_id": task.to_string(), "attempt": 1, "kept": false}])
    );
}

#[test]
fn a_reconnecting_worker_takes_its_session_back() {
    let mut h = Harness::remote();
    h.ready(3);
    let (a, b, c) = (id(13), id(14), id(15));
    h.assign(a, 1);
    h.assign(b, 1);
    let mut out = Vec::new();
    h.session.on_closed(None, h.now, &mut out);
    // Meanwhile: a new assignment and a cancel, held for the worker.
    assert!(
        sent(&h.order(Order::Stop {
            task_id: b,
            attempt: 1,
            reason: StopReason::Cancelled(CancelReason::Client),
            grace: Duration::from_secs(2),
        }))
        .is_empty()
    );
    assert!(
        h.tick(Duration::from_secs(5)).is_empty(),
        "no heartbeat to nobody, no cancel grace while away"
    );
    let assign_c = h.assign_out(c, 1);
    assert!(sent(&assign_c).is_empty());
    let mut out = Vec::new();
    let hello = json!({"type": "hello", "protocol": 1, "worker": {"name": "w1"}, "slots": 3, "tasks": [{"name": "sync"}],
        "resume": [{"task_id": a.to_string(), "attempt": 1}, {"task_id": id(99).to_string(), "attempt": 1}]});
    h.session.reattach(&hello.to_string(), h.now, &mut out);
    let lost: Vec<_> = reports(&out)
        .into_iter()
        .filter_map(|r| match r {
            Report::Lost { task_id, cause, .. } => Some((*task_id, cause.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        lost,
        vec![(b, LostCause::Disconnected)],
        "b was not resumed"
    );
    let frames = sent(&out);
    assert_eq!(frames[0]["type"], "welcome");
    assert_eq!(frames[0]["worker_id"], "w-1", "the same registration");
    assert_eq!(
        frames[0]["resumed"],
        json!([{"task_id": a.to_string(), "attempt": 1, "kept": true}, {"task_id": id(99).to_string(), "attempt": 1, "kept": false}])
    );
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "assign" && f["task_id"] == c.to_string()),
        "{frames:?}"
    );
    assert_eq!(h.session.phase(), Phase::Ready);
    let out = h.frame(json!({"type": "complete", "task_id": a.to_string(), "attempt": 1}));
    assert!(matches!(out.as_slice(), [Effect::Complete { .. }]));
    let out = h.frame(json!({"type": "complete", "task_id": c.to_string(), "attempt": 1}));
    assert!(matches!(out.as_slice(), [Effect::Complete { .. }]));
}
