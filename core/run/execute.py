"""Running one job's task with a channel as its context, whatever runs it (a local worker process,
a Ray actor): every end becomes a `JobOutcome`, never an exception.
"""
from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field

from core.base.cancel import Cancelled
from core.base.errors import describe_failure
from core.run.channels import JobChannel
from core.store.jobstore import Job
from core.tasks import TaskContext, run_task


@dataclass
class JobOutcome:
    state: str                       # done | failed | cancelled | interrupted (a signal)
    columns: dict = field(default_factory=dict)

    def exit_code(self) -> int:
        return 0 if self.state in ("done", "cancelled", "interrupted") else 1


EXIT_CANNOT_WRITE = 75   # the worker could not record its end: reap reads this as "disk full or I/O error"
EXIT_NOT_CLAIMED = 2     # refused: the job was not claimed for this worker (it runs at most once)


def requested_device(config: dict) -> str:
    """The device a job's config asks for (its training settings' first): cuda, cpu or auto."""
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    return str(train.get("device") or config.get("device") or "auto")


def execute_job(job: Job, channel: JobChannel, workspace, *, save_variant=None, fanout=None) -> JobOutcome:
    """Run `job`'s task with `channel` as its context; never raises: every end is an outcome.
    `save_variant` and `fanout` come from a runner whose workers cannot write the workspace (Ray)."""
    ctx = TaskContext(workspace, on_event=channel.on_event, should_stop=channel.should_stop, log=channel.log,
                      on_progress=channel.on_progress, job_id=job.id, save_variant=save_variant, fanout=fanout)
    channel.start()
    try:
        out = run_task(job.kind, job.config, ctx)
        msg = f"done: variant {out.variant_id}" if out.variant_id else "done"
        return JobOutcome("done", {"progress": 1.0, "variant_id": out.variant_id, "result": out.result,
                                   "message": msg})
    except Cancelled as e:
        if channel.terminated:    # a signal, not a person: the job was interrupted, and says by what
            why = f"terminated ({channel.terminated})"
            _try_log(channel, f"{why}: {e}")
            return JobOutcome("interrupted", {"message": f"{why}, {e}", "error": why})
        _try_log(channel, f"cancelled: {e}")
        return JobOutcome("cancelled", {"message": str(e) or "cancelled"})   # "cancelled at step 7 of 6400"
    except BaseException as e:  # noqa: BLE001 - everything ends the job; record it and exit non-zero
        line = describe_failure(e)
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        _try_log(channel, f"FAILED {line}\n" + "\n".join(tb.splitlines()[-25:]))
        return JobOutcome("failed", {"error": line, "message": f"failed: {line}"[:300]})
    finally:
        try:
            channel.close()
        except Exception as e:   # e.g. the disk filled up: the outcome still says what happened
            print(f"closing the job channel failed: {describe_failure(e)}", file=sys.stderr, flush=True)


def _try_log(channel: JobChannel, line: str) -> None:
    try:
        channel.log(line)
    except Exception as e:  # a full disk must not hide the job's real end
        print(f"could not log: {describe_failure(e)}", file=sys.stderr, flush=True)
