"""engine.control over a real Pipe, in one process: progress ticks, cancels and stops."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from engine import control as ctl
from shared import messages as m


@pytest.fixture
def pipe():
    gateway, engine = multiprocessing.Pipe(duplex=True)
    yield gateway, engine
    gateway.close()
    engine.close()


def received(conn) -> list:
    out = []
    while conn.poll():
        out.append(m.decode_reply(conn.recv_bytes()))
    return out


def test_ticks_send_progress_at_most_every_interval(pipe, monkeypatch):
    gateway, engine = pipe
    monkeypatch.setattr(ctl, "PROGRESS_INTERVAL_S", 0.2)
    control = ctl.Control(engine, "job")
    control.tick("transcribing", 1, 10)  # the first is sent
    control.tick("transcribing", 2, 10)  # too soon
    time.sleep(0.25)
    control.tick("transcribing", 3, 10)
    control.tick("transcribing", 4, 10)  # too soon
    time.sleep(0.25)
    control.heartbeat()  # a step with no position of its own: the last one again
    assert received(gateway) == [m.Progress(job_id="job", step="transcribing", done=d, total=10.0)
                                 for d in (1.0, 3.0, 4.0)]


def test_a_cancel_for_this_job_stops_the_step_and_others_are_ignored(pipe):
    gateway, engine = pipe
    control = ctl.Control(engine, "job")
    gateway.send_bytes(m.encode(m.Cancel(job_id="another job")))
    control.check()  # not ours: read and dropped
    gateway.send_bytes(m.encode(m.Cancel(job_id="job")))
    with pytest.raises(ctl.Cancelled):
        control.tick("decoding", 0, 0)
    assert not control.stopping


def test_a_stop_cancels_and_marks_the_engine_stopping(pipe):
    gateway, engine = pipe
    control = ctl.Control(engine, "job")
    gateway.send_bytes(m.encode(m.Stop()))
    with pytest.raises(ctl.Cancelled):
        control.heartbeat()
    assert control.stopping


def test_the_current_control_is_the_serving_one(pipe):
    _, engine = pipe
    assert isinstance(ctl.current(), ctl.NoControl)
    control = ctl.Control(engine, "job")
    with ctl.serving(control):
        assert ctl.current() is control
    assert isinstance(ctl.current(), ctl.NoControl)
    ctl.current().heartbeat()  # outside a request: nothing to check or send
