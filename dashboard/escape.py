"""The one place that turns user strings into inert text for the dashboard's renderers.

User strings are everything the dashboard did not write itself: model and data specs from the
URL or the sidebar, file names, exception messages that quote them, tokenizer tokens, what
other sessions left in the store. Streamlit renders ``st.markdown``/``caption``/``info``/
``error``/``success``/``progress`` text as GitHub-flavoured markdown, and plotly renders
``<b>``, ``<br>``, ``<a href>`` in labels as HTML, so such a string could show an external
image (a request to another site), a disguised link, or markup. :func:`markdown` and
:func:`plotly` make them show as the characters they are.
"""

from __future__ import annotations

import html
import re

# Characters that open a markdown construct (links and images, code, emphasis, raw HTML and
# autolinks, tables, strikethrough, math, Streamlit's :directives[] and :icons:, entities).
_ACTIVE = frozenset("\\`*[]<>!#|~$:@&")
_ZWSP = "\u200b"  # invisible; breaks the URL/e-mail patterns GFM links after parsing
_WORD = re.compile(r"[^\W_]")  # a letter or digit
_LIST_START = re.compile(r"^(\s*)([-+]|\d+(?=[.)]))")  # "- x", "+ x", "1. x", "1) x"


def markdown(value: object) -> str:
    """``value`` as markdown that renders as exactly its text: one line, every active
    character backslash-escaped, and ``://``, ``www.`` and ``@`` broken with a zero-width space
    (GFM turns bare URLs and e-mail addresses into links after escapes are resolved)."""
    text = " ".join(str(value).splitlines())  # no headings, lists, quotes or tables
    out = []
    for i, ch in enumerate(text):
        intraword = 0 < i < len(text) - 1 and _WORD.match(text[i - 1]) and _WORD.match(text[i + 1])
        if ch in _ACTIVE or (ch == "_" and not intraword):  # a_b never emphasizes; _b_ does
            out.append("\\" + ch)
        else:
            out.append(ch)
    text = "".join(out)
    text = text.replace("\\://", "\\:" + _ZWSP + "//")
    text = re.sub(r"(?i)\b(www)\.", lambda m: m.group(1) + _ZWSP + ".", text)
    text = text.replace("\\@", "\\@" + _ZWSP)
    return _LIST_START.sub(_unlist, text, count=1)


def _unlist(m: re.Match) -> str:
    lead, marker = m.group(1), m.group(2)
    return lead + ("\\" + marker if not marker.isdigit() else marker + "\\")


def plotly(value: object) -> str:
    """``value`` for a plotly label, title or hover text: ``<``, ``>`` and ``&`` as entities,
    which plotly draws as the characters (a token ``<b>x</b>`` stays those eight characters)."""
    return html.escape(str(value), quote=False)
