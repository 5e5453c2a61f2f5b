"""A browser-free Streamlit session for bench/load.py: speaks the app's websocket protocol.

It sends what the browser sends (a `rerun_script` BackMsg with the page, the query string and the
widget values) and reads ForwardMsgs until the run's `script_finished`, so the time it measures is
the server's own: running the page script, serializing its elements and sending them, with no
page rendering. Like the browser, it reruns fragments that asked for `run_every` (the job
view's polling) while it "thinks" between actions, so a running job costs the server what it
costs with real tabs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.sync.client import connect

FULL_RUN_DONE = (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR)


@dataclass
class RunResult:
    seconds: float
    bytes: int
    exception: str = ""                     # text of the first exception box, if any
    widgets: dict = field(default_factory=dict)   # label -> (widget id, element) of the run's widgets


class WsSession:
    """One user's session against `streamlit run app.py` at `url` (http://host:port)."""

    def __init__(self, url: str, query_string: str = "", timeout_s: float = 300.0):
        self.ws = connect(url.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit"],
                          max_size=None, open_timeout=60)
        self.query_string = query_string
        self.timeout_s = timeout_s
        self.pages: dict[str, str] = {}     # url path ("" for Home) -> page_script_hash
        self.page_hash = ""
        self.widgets: dict[str, WidgetState] = {}   # id -> the value we hold for it (sent on every rerun)
        self.fragments: dict[str, tuple[float, float]] = {}   # fragment id -> (interval s, when it last ran)

    def close(self) -> None:
        self.ws.close()

    # ------------------------------------------------------------ runs

    def open_page(self, path: str = "") -> RunResult:
        """A click on the page's sidebar link (the first call opens the app, as a page load does)."""
        if self.pages:
            self.page_hash = self.pages[path]
        self.widgets = {}     # another page: its widgets start from their defaults
        return self._run()

    def set_widgets(self, values: dict[str, WidgetState]) -> RunResult:
        """A widget change on the current page (values by widget id), then the rerun it triggers."""
        self.widgets.update(values)
        return self._run()

    def think(self, seconds: float, on_poll=None) -> None:
        """Idle for `seconds`, rerunning fragments with `run_every` when they are due (as the
        browser's timers do); `on_poll(result)` receives each fragment run's timing."""
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            due = [(last + every, fid) for fid, (every, last) in self.fragments.items()]
            nxt = min(due, default=None)
            if nxt is None or nxt[0] >= end:
                time.sleep(max(0.0, end - now))
                return
            time.sleep(max(0.0, nxt[0] - now))
            res = self._run(fragment_id=nxt[1])
            if on_poll is not None:
                on_poll(res)

    def _run(self, fragment_id: str = "") -> RunResult:
        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string = self.query_string
        cs.page_script_hash = self.page_hash
        cs.widget_states.widgets.extend(self.widgets.values())
        if fragment_id:
            cs.fragment_id = fragment_id
            cs.is_auto_rerun = True
        else:
            self.fragments = {}   # a full run redraws the page: only the fragments it draws poll
        t0 = time.perf_counter()
        self.ws.send(msg.SerializeToString())
        res = RunResult(0.0, 0)
        started = bool(fragment_id)   # a full run's messages start with new_session
        while True:
            data = self.ws.recv(timeout=self.timeout_s)
            res.bytes += len(data)
            fm = ForwardMsg()
            fm.ParseFromString(data)
            kind = fm.WhichOneof("type")
            if kind == "new_session":
                started = True
            elif kind == "navigation":
                self.pages = {p.url_pathname: p.page_script_hash for p in fm.navigation.app_pages}
                self.page_hash = fm.navigation.page_script_hash or self.page_hash
            elif kind == "page_info_changed":
                self.query_string = fm.page_info_changed.query_string
            elif kind == "auto_rerun":
                self.fragments[fm.auto_rerun.fragment_id] = (fm.auto_rerun.interval, time.monotonic())
            elif kind == "stop_auto_rerun":
                self.fragments.pop(fm.stop_auto_rerun.fragment_id, None)
            elif kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                self._note_element(fm.delta.new_element, res)
            elif kind == "script_finished" and started:
                if fragment_id and fragment_id in self.fragments:
                    every, _ = self.fragments[fragment_id]
                    self.fragments[fragment_id] = (every, time.monotonic())
                if fragment_id or fm.script_finished in FULL_RUN_DONE:
                    res.seconds = time.perf_counter() - t0
                    return res

    @staticmethod
    def _note_element(el, res: RunResult) -> None:
        which = el.WhichOneof("type")
        if which == "exception" and not res.exception:
            res.exception = f"{el.exception.type}: {el.exception.message}"
        elif which in ("slider", "radio"):
            w = getattr(el, which)
            res.widgets[w.label] = (w.id, w)


def slider_value(widget_id: str, value: float) -> WidgetState:
    w = WidgetState(id=widget_id)
    w.double_array_value.data.append(value)
    return w


def radio_value(widget_id: str, option_label: str) -> WidgetState:
    return WidgetState(id=widget_id, string_value=option_label)
