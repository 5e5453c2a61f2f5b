"""Learn: guided lessons, one idea at a time, each shown live on the shipped models. Without
`?lesson=` the list; with `?lesson=<id>` that lesson (a permanent link); `&present=1` for a
projector. The lessons are files in lessons/ (see the README); this page only draws them."""
import streamlit as st

from core.lessons.content import load_lessons
from ui import learn_view, nav, presenter, resources

nav.leave_legacy_mode()  # a direct link to this page right after a server start

presenter.apply_style()
try:
    lessons = load_lessons()
except ValueError as e:   # a lesson file with a mistake: say which and what, draw nothing half-parsed
    st.title("Learn")
    st.error(f"A lesson file could not be read: {e}", icon=":material/error:")
    st.stop()

if not lessons:
    st.title("Learn")
    st.info("There are no lessons yet: a lesson is a file `lessons/NN-<id>.md` (see `lessons/README.md`).",
            icon=":material/info:")
    st.stop()

wanted = st.query_params.get(learn_view.LESSON_PARAM)
lesson = next((x for x in lessons if x.id == wanted), None)
if lesson is None:
    st.title("Learn")
    if wanted:
        learn_view.unknown_lesson(wanted, lessons)
    else:
        learn_view.lesson_list(lessons)
    st.stop()

learn_view.lesson_view(resources.workspace(), lesson, lessons)
