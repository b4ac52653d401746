//! `abstract_booklet`: the pure builder in [`crate::booklet`] wrapped as a
//! task: it runs off the async threads and its `.odt` goes to the files area.

use std::io::Write;

use futures::future::BoxFuture;
use serde_json::value::RawValue;

use super::{FileWriter, InvalidInput, TaskCtx, TaskError, TaskHandler, TaskOutput};
use crate::booklet;
use crate::task::Progress;

pub(super) struct AbstractBooklet;

/// The OpenDocument text content type.
const ODT: &str = "application/vnd.oasis.opendocument.text";

struct Observer<'a> {
    ctx: &'a TaskCtx,
}

impl booklet::Observer for Observer<'_> {
    fn progress(&mut self, progress: booklet::Progress) {
        self.ctx.progress_blocking(Progress {
            fraction: Some(progress.fraction),
            message: Some(progress.message),
            data: serde_json::value::to_raw_value(&progress.data).ok(),
        });
    }

    fn cancelled(&self) -> bool {
        self.ctx.is_cancelled()
    }
}

fn invalid(error: booklet::InputError) -> InvalidInput {
    InvalidInput::new(error.path, error.reason)
}

fn build(ctx: &TaskCtx, input: &RawValue) -> Result<TaskOutput, TaskError> {
    let built = booklet::build(input.get(), &mut Observer { ctx }).map_err(|e| match e {
        booklet::BuildError::InvalidInput(e) => TaskError::invalid_input(&invalid(e)),
        booklet::BuildError::Cancelled => TaskError::task("cancelled"),
        other => TaskError::task(other.to_string()),
    })?;
    let mut file = ctx.create_file(&built.filename, ODT)?;
    file.write_all(&built.odt)
        .map_err(|e| FileWriter::write_error(&e))?;
    file.finish()?;
    TaskOutput::json(&built.result)
}

impl TaskHandler for AbstractBooklet {
    fn name(&self) -> &'static str {
        "abstract_booklet"
    }

    fn description(&self) -> &'static str {
        booklet::DESCRIPTION
    }

    fn input_schema(&self) -> serde_json::Value {
        booklet::input_schema()
    }

    fn validate(&self, input: &RawValue) -> Result<(), InvalidInput> {
        booklet::check(input.get()).map_err(invalid)
    }

    fn run(
        &self,
        input: Box<RawValue>,
        ctx: TaskCtx,
    ) -> BoxFuture<'static, Result<TaskOutput, TaskError>> {
        Box::pin(async move {
            let work = ctx.clone();
            ctx.spawn_blocking(move || build(&work, &input)).await?
        })
    }
}
