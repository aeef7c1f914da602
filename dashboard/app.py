"""finsent's trend dashboard: ``streamlit run dashboard/app.py`` (``make dashboard``).

Pages: Overview (is sentiment turning negative, where, since when), Alerts (what fired and why, silences),
Explorer (find the stories), Model (what scores them). Reads go through ``dashboard.queries`` on a
read-only connection; the silence form is the only write.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts this file's folder on sys.path, not the project root the pages import from.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

st.set_page_config(page_title="finsent", page_icon=":material/monitoring:", layout="wide")

from dashboard import queries  # noqa: E402  (needs the project root on sys.path, set above)

problem = queries.database_problem()
if problem:
    # One line naming the setting and the server (never the password), not a traceback on every page.
    st.error(f"{problem[0].upper()}{problem[1:]}. Fix the setting and reload.", icon=":material/error:")
    st.stop()

pages = [
    st.Page("pages/overview.py", title="Overview", icon=":material/monitoring:", default=True),
    st.Page("pages/alerts.py", title="Alerts", icon=":material/notifications_active:"),
    st.Page("pages/explorer.py", title="Explorer", icon=":material/search:"),
    st.Page("pages/model.py", title="Model", icon=":material/neurology:"),
]
st.navigation(pages).run()
