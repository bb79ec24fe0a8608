"""The technician's pages: HTML5 rendered on the gateway from a ``WebView``, no script at all.

Why no JavaScript: the page must work on any phone or laptop on the LAN with scripts off, and a
page that runs no script cannot run an injected one either. One small inline stylesheet
(allowed by its hash in the Content-Security-Policy, which forbids everything else), the plots
inline SVG (``plots.py``), a ``<meta http-equiv="refresh">`` on the live pages.

``route(path, query, view)`` answers a GET (``None``: 404):

    /                      overview: uplink, backlog and drain, evictions, buffer, clock, key, process
    /devices               every device's health, with its last values in brief
    /devices/<name>        its health, its last records exactly as on the wire, plots of its numbers
    /events                the newest events;     /audit   the command audit log and its chain state
    /metrics               Prometheus text (``metrics.py``)
    /plot/<device>/<point>.svg?span=1h|24h, /plot/backlog.svg?span=1h|24h

``path`` is the request's path as sent (percent-encoded, without the query); ``query`` is
``urllib.parse.parse_qs`` of the query. Every value shown is escaped (``html.escape``, quotes
too): device and point names, values, error texts, event data. The view hands over only wire
bodies (pseudonyms, masks, seals), so no page can show more than ``edge-agent tail`` does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from html import escape
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote, unquote

from ..units import format_duration, format_size
from . import metrics, plots
from .view import Response, WebView

__all__ = ["route", "SPANS", "CSP"]

SPANS = {"1h": 3600, "24h": 86400}
REFRESH_S = 10
EVENTS_SHOWN, AUDIT_SHOWN = 100, 100

CSS = ("body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fff}"
       "header{background:#1d2733;color:#fff;padding:.5rem 1rem}header h1{font-size:1.1rem;margin:0 0 .3rem}"
       "nav a{color:#cfe0ff;margin-right:1rem;white-space:nowrap}main{padding:.25rem 1rem 2rem;max-width:64rem}"
       "h2{font-size:1.05rem;border-bottom:1px solid #ddd;margin:1.2rem 0 .5rem}h3{font-size:1rem;margin:.8rem 0 .3rem}"
       ".scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}"
       "th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eee;vertical-align:top}"
       "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}"
       ".ok{color:#1b5e20;font-weight:bold}.bad{color:#b71c1c;font-weight:bold}.warn{color:#8a5a00}.muted{color:#777}"
       "dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}dt{color:#555}dd{margin:0}"
       "svg.plot{width:100%;height:auto;max-width:48rem;display:block;margin:.3rem 0 .8rem}"
       "code,pre{font:13px ui-monospace,monospace;white-space:pre-wrap;overflow-wrap:anywhere}"
       "@media (max-width:40rem){dl{grid-template-columns:1fr}dt{font-weight:bold;margin-top:.3rem}"
       "body{font-size:14px}th,td{padding:.2rem .3rem}}")
CSP = ("default-src 'none'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       f"style-src 'sha256-{base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()}'")
HTML_HEADERS = {"Cache-Control": "no-store", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
SVG_HEADERS = {"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'",
               "X-Content-Type-Options": "nosniff"}
NAV = (("/", "Overview"), ("/devices", "Devices"), ("/events", "Events"), ("/audit", "Audit"), ("/metrics", "Metrics"))


def e(value: Any) -> str:
    """Any value as HTML text, quotes escaped too (safe in an attribute as in a text node)."""
    return escape(value if isinstance(value, str) else str(value), quote=True)


def _wire(value: Any) -> str:
    """A value as the wire's JSON carries it (``"p1:6Q2W..."``, ``1.23``, ``null``), escaped."""
    return e(json.dumps(value, ensure_ascii=False, sort_keys=True))


def _stamp(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + "Z"


def _when(ms: Any, now_ms: int) -> str:
    if not isinstance(ms, int):
        return '<span class="muted">never</span>'
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
    return f'<time datetime="{iso}">{_stamp(ms)}</time> <span class="muted">({_age(ms, now_ms)})</span>'


def _ago(ms: Any, now_ms: int) -> str:
    """A time in a table cell: its age, the stamp in its ``datetime`` and ``title`` (narrow columns on a phone)."""
    if not isinstance(ms, int):
        return '<span class="muted">never</span>'
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
    return f'<time datetime="{iso}" title="{_stamp(ms)}">{_age(ms, now_ms)}</time>'


def _age(ms: int, now_ms: int) -> str:
    return f"{format_duration(max(0, now_ms - ms) / 1000)} ago"


def _dl(rows: Sequence[tuple[str, str]]) -> str:
    """A definition list; the values are HTML already escaped by the caller."""
    return "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table that scrolls sideways on a phone; cells are HTML already escaped by the caller."""
    th = "".join(f'<th{" class=n" if i in numeric else ""}>{e(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def _page(title: str, status: Mapping[str, Any] | None, body: str, *, refresh: bool = False) -> Response:
    where = f"{status.get('gateway', '')} · site {status.get('site', '')}" if status else "edge-agent"
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    nav = "".join(f'<a href="{href}">{e(text)}</a>' for href, text in NAV)
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
            f"<title>{e(title)} · {e(where)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>edge-agent · {e(where)}</h1><nav>{nav}</nav></header>"
            f"<main><h2>{e(title)}</h2>{body}</main></body></html>\n")
    return Response(200, "text/html; charset=utf-8", html.encode("utf-8"), dict(HTML_HEADERS))


def _svg(text: str) -> Response:
    return Response(200, "image/svg+xml; charset=utf-8", text.encode("utf-8"), dict(SVG_HEADERS))


def _state(state: Any) -> str:
    cls = {"online": "ok", "offline": "bad"}.get(state, "muted")
    return f'<span class="{cls}">{e(state or "unknown")}</span>'


def _href(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


# -- overview --------------------------------------------------------------------------------------
def _uplink(s: Mapping[str, Any], now_ms: int) -> str:
    up = s.get("uplink")
    if up is None:
        return _dl([("State", '<span class="bad">not running</span>'),
                    ("Last publish", _when(s.get("last_sent_at"), now_ms))])
    state = '<span class="ok">connected</span>' if up.get("connected") else '<span class="bad">NOT connected</span>'
    error = e(up["last_error"]) if up.get("last_error") else '<span class="muted">none</span>'
    return _dl([("State", state), ("Broker", e(up.get("broker", ""))),
                ("Last publish", _when(up.get("last_publish") or s.get("last_sent_at"), now_ms)),
                ("Reconnects", e(up.get("reconnects", 0))), ("Last error", error),
                ("Published / acked", f"{e(up.get('published_items', 0))} / {e(up.get('acked_items', 0))} "
                                      "records and events since start")])


def _backlog(s: Mapping[str, Any], now_ms: int, view: WebView) -> str:
    by_prio = s.get("pending_by_prio") or {}
    evicted = s.get("evicted") or {}
    rows = [[e(p), e(n), e(evicted.get(p, 0))] for p, n in by_prio.items()]
    rows.append(["<b>all</b>", f"<b>{e(s.get('pending', 0))}</b>", f"<b>{e(sum(evicted.values()))}</b>"])
    drain = s.get("drain") or {}
    rate, eta = drain.get("rate_per_s"), drain.get("eta_s")
    rate_text = "not measured yet" if rate is None else f"{plots.number(rate)} rows/s acked over the last " \
                f"{format_duration(drain.get('window_s') or 0)}"
    if not s.get("pending"):
        eta_text = "nothing waits"
    elif eta is None:
        eta_text = '<span class="warn">unknown</span> (' + ("disconnected" if s.get("uplink") and
                                                            not s["uplink"].get("connected") else "no drain") + ")"
    else:
        eta_text = e(format_duration(eta))
    oldest = s.get("oldest_pending_ts")
    plot = plots.line_plot(view.backlog_history(3600), title="backlog (rows waiting), last hour", span_s=3600,
                           now_ms=now_ms)
    return (_table(["priority", "waiting", "evicted"], rows, numeric=(1, 2))
            + _dl([("Waiting bytes", e(format_size(s.get("pending_bytes") or 0))),
                   ("Oldest waiting", _when(oldest, now_ms) if oldest else '<span class="muted">none</span>'),
                   ("Drain", e(rate_text)), ("ETA", eta_text)])
            + plot + '<p><a href="/plot/backlog.svg?span=24h">backlog over 24 h</a></p>')


def _buffer(s: Mapping[str, Any]) -> str:
    used, cap, free = s.get("file_bytes") or 0, s.get("max_bytes") or 0, s.get("disk_free_bytes")
    meter = (f' <meter min="0" max="{e(cap)}" value="{e(min(used, cap))}" high="{e(int(cap * 0.8))}"></meter>'
             if cap else "")
    rows = [("File", f"<code>{e(s.get('buffer', ''))}</code>"),
            ("Size", f"{e(format_size(used))} of {e(format_size(cap))} cap{meter}"),
            ("Disk free", '<span class="muted">unknown</span>' if free is None else e(format_size(free))),
            ("Sent, retained", f"{e(s.get('retained_sent', 0))} rows kept for replay")]
    if s.get("write_errors"):
        rows.append(("Write errors", f'<span class="bad">{e(s["write_errors"])}</span> failed commits since start'))
    return _dl(rows)


def _gateway(s: Mapping[str, Any]) -> str:
    clock = s.get("clock") or {}
    synced = clock.get("synced")
    clock_text = ('<span class="ok">synchronised</span>' if synced else '<span class="muted">unknown</span>'
                  if synced is None else '<span class="bad">NOT synchronised</span> (stamps marked clk "unsynced")')
    if clock:
        clock_text += f' <span class="muted">({e(clock.get("source"))}: {e(clock.get("detail"))})</span>'
    if clock.get("unsynced_items"):
        clock_text += f"; {e(clock['unsynced_items'])} items marked unsynced since start"
    key = s.get("key_in_use")
    key_text = (f"v{e(key.get('active_version'))} <code>{e(key.get('fingerprint'))}</code>" if key
                else '<span class="muted">none configured</span>')
    daemon = s.get("daemon") or {}
    process = s.get("process") or {}
    cpu = process.get("cpu_pct")
    rss = process.get("rss_bytes")
    return _dl([("Clock", clock_text), ("Pseudonym key", key_text),
                ("Version", e(daemon.get("version", "?"))),
                ("Up", e(format_duration(daemon.get("uptime_s") or 0)) + f" (pid {e(daemon.get('pid', '?'))})"),
                ("CPU", ("?" if cpu is None else e(f"{cpu:g}%")) + f" over the last minute "
                        f"({e(plots.number(process.get('cpu_s') or 0))} s in all)"),
                ("RSS", "?" if rss is None else e(format_size(rss)))])


def overview(view: WebView, now_ms: int) -> Response:
    s = view.status()
    counts = s.get("device_counts") or {}
    devices = ", ".join(f"{e(counts.get(k, 0))} {k}" for k in ("online", "offline", "unknown"))
    body = (f"<h3>Uplink</h3>{_uplink(s, now_ms)}<h3>Backlog</h3>{_backlog(s, now_ms, view)}"
            f"<h3>Buffer</h3>{_buffer(s)}"
            f'<h3>Devices</h3><p>{devices} · <a href="/devices">all devices</a></p>'
            f"<h3>Gateway</h3>{_gateway(s)}")
    return _page("Overview", s, body, refresh=True)


# -- devices ---------------------------------------------------------------------------------------
def _brief(records: Sequence[Mapping[str, Any]]) -> str:
    """A device's last values in one cell: its own record's pairs, or how many units it has."""
    units = [r for r in records if "sub" in r]
    own = next((r for r in records if "sub" not in r), None)
    parts = []
    if own is not None:
        pairs = [f"{e(pt)}={_wire(v)}" for pt, v in (own.get("vals") or {}).items()]
        if "sealed" in own:
            pairs.append("&lt;sealed&gt;")
        parts.append(" ".join(pairs[:6]) + (" …" if len(pairs) > 6 else ""))
    if units:
        parts.append(f"{len(units)} unit(s)")
    return f"<code>{' · '.join(parts)}</code>" if parts else '<span class="muted">none yet</span>'


def devices(view: WebView, now_ms: int) -> Response:
    s = view.status()
    rows = []
    for d in s.get("devices") or []:
        name = str(d.get("name", ""))
        error = (f"{e(d['last_error'])} <span class=muted>({_age(d['last_error_ms'], now_ms)})</span>"
                 if d.get("last_error") and isinstance(d.get("last_error_ms"), int) else e(d.get("last_error") or ""))
        rows.append([f'<a href="{_href("devices", name)}">{e(name)}</a>', _state(d.get("state")),
                     _ago(d.get("last_good_ms"), now_ms), e(d.get("polls", 0)), e(d.get("errors", 0)),
                     e(d.get("bad_frames", 0)), error, _brief(view.last_records(name))])
    table = _table(["device", "health", "last good poll", "polls", "errors", "bad frames", "last error",
                    "last values"], rows, numeric=(3, 4, 5)) if rows else "<p>No device configured.</p>"
    return _page("Devices", s, table, refresh=True)


def _record(body: Mapping[str, Any], now_ms: int) -> str:
    quality = body.get("q") or {}
    rows = [[f"<code>{e(pt)}</code>", f"<code>{_wire(v)}</code>",
             f'<span class="{"ok" if pt not in quality else "bad"}">{e(quality.get(pt, "good"))}</span>']
            for pt, v in (body.get("vals") or {}).items()]
    sealed = body.get("sealed")
    if sealed is not None:
        kid = sealed.get("kid", "") if isinstance(sealed, Mapping) else ""
        rows.append(["<code>&lt;sealed&gt;</code>", f'<span class="muted">for platform key {e(kid)}</span>', ""])
    head = f"unit {e(body['sub'])} · " if "sub" in body else ""
    clock = ' · <span class="warn">clk unsynced</span>' if body.get("clk") else ""
    wire = json.dumps(body, ensure_ascii=False, sort_keys=True)
    return (f"<h3>{head}{_when(body.get('ts'), now_ms)}{clock}</h3>" + _table(["point", "value", "quality"], rows)
            + f"<details><summary>wire body</summary><pre>{e(wire)}</pre></details>")


def device(view: WebView, name: str, span: str, now_ms: int) -> Response | None:
    s = view.status()
    health = next((d for d in s.get("devices") or [] if d.get("name") == name), None)
    records = list(view.last_records(name))
    points = list(view.points(name))
    if health is None and not records and not points:
        return None
    parts = []
    if health is not None:
        error = e(health.get("last_error")) if health.get("last_error") else '<span class="muted">none</span>'
        parts.append(_dl([("Health", _state(health.get("state"))), ("Bus", e(health.get("bus", ""))),
                          ("Last good poll", _when(health.get("last_good_ms"), now_ms)),
                          ("Polls / errors", f"{e(health.get('polls', 0))} / {e(health.get('errors', 0))}"),
                          ("Bad frames", e(health.get("bad_frames", 0))), ("Events", e(health.get("events", 0))),
                          ("Last error", error + (f" <span class=muted>({_age(health['last_error_ms'], now_ms)})</span>"
                                                  if isinstance(health.get("last_error_ms"), int) else ""))]))
    parts.append("<h2>Last values, as on the wire</h2>")
    parts += [_record(r, now_ms) for r in records] or ['<p class="muted">Nothing received since the agent started.</p>']
    seconds = SPANS[span]
    here = _href("devices", name)
    links = " · ".join(f"<b>{label}</b>" if key == span else f'<a href="{here}?span={key}">{label}</a>'
                       for key, label in (("1h", "last hour"), ("24h", "last 24 h")))
    parts.append(f"<h2>Plots</h2><p>{links}</p>")
    parts += [plots.line_plot(view.history(name, pt, seconds), title=pt, span_s=seconds, now_ms=now_ms,
                              thresholds=view.thresholds(name, pt)) for pt in points] \
        or ['<p class="muted">No numeric point has values yet.</p>']
    return _page(f"Device {name}", s, "".join(parts), refresh=True)


# -- events and audit ------------------------------------------------------------------------------
def events(view: WebView, limit: int, now_ms: int) -> Response:
    rows = []
    for ev in view.events(limit):
        prio = str(ev.get("prio", ""))
        cls = {"critical": "bad", "high": "warn"}.get(prio, "")
        dev = str(ev.get("dev", ""))
        rows.append([_ago(ev.get("ts"), now_ms), f'<a href="{_href("devices", dev)}">{e(dev)}</a>',
                     e(ev.get("type", "")), f'<span class="{cls}">{e(prio)}</span>',
                     f"<code>{_wire(ev.get('data', {}))}</code>" + (' <span class="warn">clk unsynced</span>'
                                                                     if ev.get("clk") else "")])
    body = (_table(["time", "device", "type", "priority", "data (as on the wire)"], rows) if rows
            else '<p class="muted">No event since the agent started.</p>')
    return _page("Events", view.status(), f"<p>The newest {len(rows)}, newest first.</p>{body}")


def audit(view: WebView, limit: int, now_ms: int) -> Response:
    rows = list(view.audit(limit))
    s = view.status()
    if rows and "error" in rows[0]:
        return _page("Audit", s, f'<p class="bad">The audit log cannot be read: {e(rows[0]["error"])}</p>')
    if not rows:
        return _page("Audit", s, '<p class="muted">No audit log yet (no command or privileged action '
                                    "recorded).</p>")
    chain = str(rows[0].get("chain", ""))
    state = f'<p class="{"ok" if chain.startswith("intact") else "bad"}">Hash chain: {e(chain)}</p>'
    table = []
    for r in reversed(rows):
        outcome = str(r.get("outcome", "")) + (f" {r['code']}" if r.get("code") else "")
        cls = "ok" if r.get("outcome") in ("accepted", "done") else "bad"
        mark = ('<span class="ok">✓</span>' if r.get("verified")
                else f'<span class="bad">✗ {e(r.get("problem") or "")}</span>')
        table.append([e(r.get("seq", "")), _ago(r.get("ts"), now_ms), e(r.get("kind", "")), e(r.get("actor", "")),
                      f'<span class="{cls}">{e(outcome)}</span>', e(r.get("op") or ""), e(r.get("target") or ""),
                      f"<code>{e(r.get('cmd_id') or '')}</code>", e(r.get("detail") or ""), mark])
    return _page("Audit", s, state + _table(["seq", "time", "kind", "actor", "outcome", "op", "target", "command",
                                                "detail", "chain"], table, numeric=(0,)))


# -- routing ---------------------------------------------------------------------------------------
def _int(query: Mapping[str, list[str]], key: str, default: int, top: int) -> int:
    try:
        return max(1, min(top, int((query.get(key) or [str(default)])[0])))
    except ValueError:
        return default


def route(path: str, query: Mapping[str, list[str]], view: WebView, *, now_ms: int | None = None) -> Response | None:
    """The page, plot or metrics text at ``path``; None when there is none (404)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    span = (query.get("span") or ["1h"])[0]
    span = span if span in SPANS else "1h"
    simple: dict[tuple[str, ...], Callable[[], Response]] = {
        (): lambda: overview(view, now_ms),
        ("devices",): lambda: devices(view, now_ms),
        ("events",): lambda: events(view, _int(query, "n", EVENTS_SHOWN, 200), now_ms),
        ("audit",): lambda: audit(view, _int(query, "n", AUDIT_SHOWN, 1000), now_ms),
        ("metrics",): lambda: Response(200, metrics.CONTENT_TYPE, metrics.render(view.status()).encode("utf-8"),
                                       {"Cache-Control": "no-store"}),
        ("plot", "backlog.svg"): lambda: _svg(plots.line_plot(
            view.backlog_history(SPANS[span]), title=f"backlog (rows waiting), last {span}", span_s=SPANS[span],
            now_ms=now_ms)),
    }
    if tuple(parts) in simple:
        return simple[tuple(parts)]()
    if len(parts) == 2 and parts[0] == "devices" and parts[1]:
        return device(view, parts[1], span, now_ms)
    if len(parts) == 3 and parts[0] == "plot" and parts[2].endswith(".svg"):
        name, point = parts[1], parts[2][:-4]
        if point not in view.points(name):
            return None
        return _svg(plots.line_plot(view.history(name, point, SPANS[span]), title=f"{name} {point}, last {span}",
                                    span_s=SPANS[span], now_ms=now_ms, thresholds=view.thresholds(name, point)))
    return None
