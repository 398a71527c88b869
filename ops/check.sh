#!/usr/bin/env bash
# Checks the operator artefacts in ops/: the alert rules parse and pass their
# unit tests (promtool), the dashboard is valid JSON and every query in it is
# valid PromQL. Needs promtool (Debian/Ubuntu: `apt-get install prometheus`)
# and python3. Whether the metrics they name exist is the metrics test's job
# (`cargo test -p switchboard-tests --test metrics`).
set -euo pipefail
cd "$(dirname "$0")"

promtool check rules prometheus/alerts.yml
promtool test rules prometheus/alerts_test.yml
python3 -m json.tool grafana/switchboard.json >/dev/null
echo "grafana/switchboard.json: valid JSON"

# The dashboard's queries, as recording rules with Grafana's variables
# filled in, so promtool parses each one.
queries=$(mktemp --suffix=.yml)
trap 'rm -f "$queries"' EXIT
python3 - grafana/switchboard.json >"$queries" <<'EOF'
import json
import sys

def exprs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from exprs(item)

found = list(exprs(json.load(open(sys.argv[1]))))
if not found:
    sys.exit("no queries found in the dashboard")
rules = [
    {
        "record": f"dashboard:query_{i}",
        "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*"),
    }
    for i, e in enumerate(found)
]
# JSON is YAML: promtool reads it as is.
print(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
EOF
echo "grafana/switchboard.json queries:"
promtool check rules "$queries"
