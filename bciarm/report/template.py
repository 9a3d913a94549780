"""The report's Jinja2 template (kept in Python so it ships with the package)."""

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title>
<style>
 body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1000px;
        color: #222; padding: 0 16px; }
 h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px;
 border-bottom: 1px solid #ddd; padding-bottom: 3px; }
 table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 9px;
 border-bottom: 1px solid #eee; text-align: right; } th { background: #f4f4f4; }
 td:first-child, th:first-child, td.t, th.t { text-align: left; } tr.total td { font-weight: 600;
 border-top: 2px solid #ccc; } img { max-width: 100%; } .note { color: #666; font-size: 12px; }
 .warn { color: #a00; } dl { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; }
 dt { color: #666; } dd { margin: 0; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="note">bciarm {{ version }} · session folder <code>{{ session_name }}</code> ·
 {{ mode }} runtime. Subjects appear only under their pseudonymous ID.</p>
<dl>{% for k, v in meta.items() %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>
{% if truncated %}<p class="warn">The message log ends in a torn record (crash?);
 everything before it is intact and shown.</p>{% endif %}

<h2 id="metrics">Metrics per block</h2>
<table><tr><th>block</th><th class="t">kind</th><th class="t">decoder</th>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in rows %}<tr{% if r.total %} class="total"{% endif %}><td>{{ r.name }}</td><td class="t">{{ r.kind }}</td>
<td class="t">{{ r.decoder }}</td>{% for c in r.cells %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>
<p class="note">Calibration is open loop (the effector moved by itself); "closed loop (all)"
 pools every closed-loop trial. Decoder: the file in force when the block started.</p>

{% if plan %}<h2 id="plan">Session plan</h2>
<p>Plan <code>{{ plan.name }}</code>{% if plan.unattended %} (run unattended, --yes){% endif %}.</p>
<table><tr><th>block</th><th class="t">kind</th><th class="t">started by</th>
<th class="t">decoder at start</th><th class="t">decoder after</th></tr>
{% for b in plan.blocks %}<tr><td>{{ b.name }}</td><td class="t">{{ b.kind }}</td>
<td class="t">{{ b.confirmed_by }}</td><td class="t">{{ b.decoder_at_start or "—" }}</td>
<td class="t">{{ b.decoder_after or "—" }}</td></tr>{% endfor %}</table>{% endif %}

<h2 id="trajectories">Trajectories</h2>
{% if fig_traj %}<img alt="trajectories" src="data:image/png;base64,{{ fig_traj }}">
{% else %}<p class="note">No effector states recorded.</p>{% endif %}

<h2 id="success">Success over time</h2>
{% if fig_success %}<img alt="success over time" src="data:image/png;base64,{{ fig_success }}">
{% else %}<p class="note">No finished trials.</p>{% endif %}

<h2 id="ttt">Time to target</h2>
{% if fig_ttt %}<img alt="time to target" src="data:image/png;base64,{{ fig_ttt }}">
{% else %}<p class="note">No successful trials.</p>{% endif %}

<h2 id="tuning">Tuning curves</h2>
{% if fig_tuning %}<p>Cosine fits of every channel's rate against the intended direction
 (target − effector position at frame acquisition, reach and hold phases; {{ tuned.bins }} bins):
 {{ tuned.modulated }} of {{ tuned.channels }} channels with R² &gt; 0.05, median depth
 {{ tuned.median_depth }} Hz. The {{ 8 }} most modulated: mean rate by direction
 (intended, blue; decoded intent direction in closed loop, orange) and the fitted cosine.</p>
<img alt="tuning curves" src="data:image/png;base64,{{ fig_tuning }}">
{% else %}<p class="note">Not enough neural frames during reaches to fit tuning.</p>{% endif %}

<h2 id="latency">Latency</h2>
{% if latency %}<table><tr><th>path (from message headers)</th><th>messages</th><th>p50 ms</th>
<th>p99 ms</th><th>max ms</th></tr>{% for l in latency %}<tr><td>{{ l.name }}</td><td>{{ l.n }}</td>
<td>{{ l.p50 }}</td><td>{{ l.p99 }}</td><td>{{ l.max }}</td></tr>{% endfor %}</table>
<img alt="latency" src="data:image/png;base64,{{ fig_latency }}">
<p class="note">Acquisition time of the neural frame each message derives from to its publish
 time. In the inline runtime both are on the simulated clock (whole ticks).</p>
{% else %}<p class="note">No messages carried neural provenance (no closed loop).</p>{% endif %}

<h2 id="safety">Safety events</h2>
{% if fig_safety %}<img alt="safety" src="data:image/png;base64,{{ fig_safety }}">{% endif %}
{% if safety_events %}<table><tr><th>time (s)</th><th>event</th><th>from</th><th>details</th></tr>
{% for e in safety_events %}<tr><td>{{ '%.3f' % e.t_s }}</td><td>{{ e.kind }}</td><td>{{ e.src }}</td>
<td>{{ e.data }}</td></tr>{% endfor %}</table>{% else %}<p>No e-stop, fault or collision
 events.</p>{% endif %}
{% if guards %}<p>Safety-chain interventions (effector ticks on which a guard acted):
{% for g, n in guards %}<b>{{ g }}</b> {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}.</p>{% endif %}
{% if faults %}<p>Runtime faults: {{ faults|length }} (see faults.json).</p>{% endif %}

{% if operator %}<h2 id="operator">Operator actions</h2>
<table><tr><th>time (s)</th><th>action</th><th>details</th></tr>
{% for e in operator %}<tr><td>{{ '%.3f' % e.t_s }}</td><td>{{ e.kind }}</td><td>{{ e.data }}</td></tr>
{% endfor %}</table>{% endif %}
</body></html>
"""
