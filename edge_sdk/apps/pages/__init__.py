"""Pages and pictures: the daemon's status page, the gateway's fleet page, plan and bundle reports.

Each module renders data it is given into one self-contained HTML document (inline CSS and SVG, no script, no
file or font fetched from anywhere), so a report opens offline and a page needs nothing but the server that
sent it. Rendering only: the daemon, the gateway and the CLI gather the data and serve or write the result.

    html.py         escaping, the document frame, tables, definition lists, badges
    svg.py          charts drawn in Python: scatter (size × latency × accuracy), bars
    keys.py         the pages' API key: given once, kept in a cookie, or asked for by a form
    status.py       the daemon's status page          fleet.py       the gateway's fleet page
    plan_report.py  `plan --html`                      bundle_report.py  `inspect --html`
"""
