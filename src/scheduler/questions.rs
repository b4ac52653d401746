//! Questions a running task asks its submitter (`docs/protocol.md` §7).
//!
//! One question per task at a time. While it is open the task's deadline is
//! paused (the time waited is added to it) and the task shows as `waiting`.
//! It closes with the first valid answer, at its expiry (the default, or
//! "nobody answered"), or when the attempt ends any other way.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::core::{Core, Timer};
use super::{Refusal, Reply};
use crate::auth::Principal;
use crate::catalog::InvalidInput;
use crate::directory::{compile_schema, schema_check};
use crate::exec::{ExecutorId, Order};
use crate::task::{Answer, AnswerOutcome, QuestionSpec, TaskEvent, TaskId, TaskState};

/// Longest prompt, in bytes.
pub(crate) const MAX_PROMPT_BYTES: usize = 4096;
/// Most choices a question may offer.
pub(crate) const MAX_CHOICES: usize = 64;
/// Longest question id, in bytes.
pub(crate) const MAX_QUESTION_ID_BYTES: usize = 128;

#[derive(Debug)]
pub(crate) struct OpenQuestion {
    pub(crate) spec: QuestionSpec,
    validator: Option<Arc<jsonschema::Validator>>,
    pub(crate) expires_at: SystemTime,
}

impl OpenQuestion {
    /// A question another node's task asked (cluster mode): answers are
    /// checked here before they are sent to that node.
    pub(crate) fn mirrored(spec: QuestionSpec, expires_at: SystemTime) -> OpenQuestion {
        let validator = match (&spec.choices, &spec.schema) {
            (None, Some(schema)) => compile_schema(schema).ok().map(Arc::new),
            _ => None,
        };
        OpenQuestion {
            spec,
            validator,
            expires_at,
        }
    }
}

/// Checks a question's shape; compiles its schema.
pub(crate) fn check(spec: &QuestionSpec) -> Result<Option<jsonschema::Validator>, String> {
    if spec.question_id.is_empty() || spec.question_id.len() > MAX_QUESTION_ID_BYTES {
        return Err(format!(
            "question_id must be 1 to {MAX_QUESTION_ID_BYTES} bytes"
        ));
    }
    if spec.prompt.len() > MAX_PROMPT_BYTES {
        return Err(format!("prompt must be at most {MAX_PROMPT_BYTES} bytes"));
    }
    match (&spec.choices, &spec.schema) {
        (Some(choices), None) => {
            if choices.is_empty() || choices.len() > MAX_CHOICES {
                return Err(format!("choices must hold 1 to {MAX_CHOICES} entries"));
            }
            Ok(None)
        }
        (None, Some(schema)) => compile_schema(schema).map(Some),
        _ => Err("a question has either choices or a schema".to_owned()),
    }
}

/// Whether `value` answers the question.
pub(super) fn fits(open: &OpenQuestion, value: &serde_json::Value) -> Result<(), InvalidInput> {
    if let Some(choices) = &open.spec.choices {
        if choices.iter().any(|c| &c.value == value) {
            return Ok(());
        }
        return Err(InvalidInput::new(
            "$.value",
            "not one of the question's choices",
        ));
    }
    match &open.validator {
        Some(validator) => schema_check(validator, value).map_err(|e| {
            let path = e.path.strip_prefix('$').unwrap_or(&e.path);
            InvalidInput::new(format!("$.value{path}"), e.reason)
        }),
        None => Ok(()),
    }
}

impl Core {
    /// An executor's `Ask`, for the current attempt.
    pub(super) fn on_ask(
        &mut self,
        executor: ExecutorId,
        task_id: TaskId,
        attempt: u32,
        spec: QuestionSpec,
        now: Instant,
    ) {
        let max_wait = self.limits.max_question_wait;
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let refuse = |reason: String| Order::AskRefused {
            task_id,
            attempt,
            question_id: spec.question_id.clone(),
            reason,
        };
        if !task.interactive {
            let answer = Answer {
                question_id: spec.question_id.clone(),
                outcome: AnswerOutcome::NotInteractive,
                value: spec.default.clone(),
            };
            let order = task.answer_order(answer, now);
            return self.order(executor, order);
        }
        if task.question.is_some() {
            let order = refuse("a question is already open".to_owned());
            return self.order(executor, order);
        }
        let validator = match check(&spec) {
            Ok(validator) => validator.map(Arc::new),
            Err(reason) => return self.order(executor, refuse(reason)),
        };
        let wait = spec.timeout.map_or(max_wait, |t| t.min(max_wait));
        let expires = now + wait;
        let expires_at = SystemTime::now() + wait;
        if let Some(run) = &mut task.run {
            run.pause(now);
        }
        task.state = TaskState::Waiting;
        task.question = Some(OpenQuestion {
            spec: spec.clone(),
            validator,
            expires_at,
        });
        self.clear_timers(task_id, |t| matches!(t, Timer::Run(_)));
        self.set_timer(task_id, expires, Timer::Question(attempt));
        let event = TaskEvent::Question {
            question: spec,
            expires_at,
        };
        self.emit(task_id, event, Vec::new());
    }

    /// A client's answer.
    pub(super) fn answer(
        &mut self,
        task_id: TaskId,
        principal: &Principal,
        question_id: &str,
        value: serde_json::Value,
        reply: Reply<()>,
        now: Instant,
    ) {
        let Some(task) = self.tasks.get(&task_id).filter(|t| t.visible_to(principal)) else {
            return self.refuse(reply, Refusal::NotFound);
        };
        let Some(open) = task
            .question
            .as_ref()
            .filter(|q| q.spec.question_id == question_id)
        else {
            let refusal = if task.answered.iter().any(|id| id == question_id) {
                Refusal::AlreadyAnswered
            } else {
                Refusal::NoSuchQuestion
            };
            return self.refuse(reply, refusal);
        };
        if let Err(invalid) = fits(open, &value) {
            return self.refuse(reply, Refusal::InvalidAnswer(invalid));
        }
        let copies = match reply {
            Reply::Mailbox { mailbox, reference } => vec![(mailbox, reference)],
            Reply::Direct(tx) => {
                let _ = tx.send(Ok(()));
                Vec::new()
            }
        };
        self.close_question(task_id, AnswerOutcome::Answered, Some(value), copies, now);
    }

    /// The question's expiry passed.
    pub(super) fn question_expired(&mut self, task_id: TaskId, attempt: u32, now: Instant) {
        let Some(task) = self.tasks.get(&task_id) else {
            return;
        };
        if task.attempt != attempt {
            return;
        }
        let Some(default) = task.question.as_ref().map(|q| q.spec.default.clone()) else {
            return;
        };
        self.close_question(task_id, AnswerOutcome::TimedOut, default, Vec::new(), now);
    }

    /// Closes the open question: `answered` for every subscriber, and the
    /// answer (with the moved deadline) for the executor unless the attempt
    /// is ending anyway (`outcome: Cancelled`).
    pub(super) fn close_question(
        &mut self,
        task_id: TaskId,
        outcome: AnswerOutcome,
        value: Option<serde_json::Value>,
        copies: Vec<(super::Mailbox, Option<Box<str>>)>,
        now: Instant,
    ) {
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let Some(open) = task.question.take() else {
            return;
        };
        let question_id = open.spec.question_id;
        task.answered.push(question_id.clone());
        if task.answered.len() > MAX_CHOICES {
            task.answered.remove(0);
        }
        let answer = Answer {
            question_id,
            outcome,
            value,
        };
        let mut order = None;
        let mut deadline = None;
        if outcome != AnswerOutcome::Cancelled
            && let Some(run) = &mut task.run
        {
            task.state = TaskState::Running;
            deadline = Some((run.resume(now), task.attempt));
            order = Some((run.executor, task.answer_order(answer.clone(), now)));
        }
        self.clear_timers(task_id, |t| matches!(t, Timer::Question(_)));
        if let Some((at, attempt)) = deadline {
            self.set_timer(task_id, at, Timer::Run(attempt));
        }
        self.emit(task_id, TaskEvent::Answered(answer), copies);
        if let Some((executor, order)) = order {
            self.order(executor, order);
        }
    }
}

/// The time a paused deadline had left.
pub(super) fn remaining(deadline: Instant, now: Instant) -> Duration {
    deadline.saturating_duration_since(now)
}
