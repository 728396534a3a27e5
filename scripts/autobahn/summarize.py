#!/usr/bin/env python3
"""Summarise a kosoku (Autobahn|Testsuite fuzzingclient) report for hubbub.

Usage: summarize.py REPORT_DIR [--gate raw|codec] [--strict]

Reads REPORT_DIR/index.json and the per-case JSON files kosoku writes, prints

1. the raw Autobahn verdicts (what kosoku reports), counted per behaviour and per case group;
2. a "codec" verdict per case that separates real RFC 6455 codec problems from failures caused
   only by hubbub not being an echo server (see below);
3. every case whose codec verdict is not clean, with what the server did.

and writes REPORT_DIR/summary.json with all of it. Exit status: 0 when the gate passes, 1 when it
does not, 2 on a usage or input error.

The codec verdict. On /ws hubbub first sends a JSON welcome frame ({"type":"connection_ack",...})
and answers every text message that is not a JSON command, and every binary message, with a JSON
error frame ({"type":"error",...}) instead of echoing it. Autobahn compares the exact list of
messages/pings/pongs received, so nearly every case is FAILED for that alone. For the codec
verdict the welcome frame is dropped and each hub error reply is matched against one expected
echoed message; if the resulting sequence (including pings, pongs and their order) matches one
of the case's expected outcomes, the case's codec behaviour is that outcome. Because Autobahn
starts its own close handshake only once everything expected has arrived, the close verdict of
such a case is "NOT EXERCISED" when the only close problem is that the client timed out and
dropped the connection. Cases that check echoed messages in their own code (9.x, 12.x, 13.x)
have no expected list and are "NOT EVALUABLE" without an echo endpoint. Once hubbub has an echo
endpoint (run with --path), the raw and codec verdicts coincide.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

BEHAVIOURS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR"]
CODEC_BEHAVIOURS = BEHAVIOURS + ["NOT EVALUABLE"]
CLOSE_BEHAVIOURS = ["OK", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED BY CLIENT", "WRONG CODE", "UNCLEAN", "FAILED"]
CODEC_CLOSE_BEHAVIOURS = CLOSE_BEHAVIOURS + ["NOT EXERCISED"]
BAD_CLOSE = {"FAILED", "WRONG CODE", "UNCLEAN"}

GROUPS = {
    "1": "framing",
    "2": "ping/pong",
    "3": "reserved bits",
    "4": "opcodes",
    "5": "fragmentation",
    "6": "UTF-8",
    "7": "close handling",
    "9": "limits/performance",
    "10": "auto-fragmentation",
    "12": "permessage-deflate",
    "13": "permessage-deflate params",
}

def reply(binary: bool) -> tuple:
    """Stands for one hub JSON error frame answering a text (False) or binary (True) message."""
    return ("hub-reply", "binary" if binary else "text")


def case_key(case_id: str) -> list[int]:
    return [int(p) for p in case_id.split(".")]


def is_hub_json(event: list) -> bool:
    return event[0] == "message" and not event[2] and isinstance(event[1], str) and event[1].startswith('{"type":"')


def normalise_received(received: list) -> list:
    out = []
    for ev in received:
        if is_hub_json(ev):
            if ev[1].startswith('{"type":"connection_ack"'):
                continue  # the welcome frame
            out.append(reply('"code":"binary_not_supported"' in ev[1]))
        else:
            out.append(tuple(ev))
    return out


def normalise_expected(events: list) -> list:
    return [reply(bool(ev[2])) if ev[0] == "message" else tuple(ev) for ev in events]


def codec_verdict(case: dict) -> tuple[str, str, str]:
    """Returns (codec behaviour, codec close behaviour, note)."""
    raw, raw_close = case["behavior"], case["behaviorClose"]
    expected = case.get("expected") or {}
    if raw in ("OK", "INFORMATIONAL", "UNIMPLEMENTED"):
        # Passed as it is, or a verdict the case code sets by itself (7.1.6, 7.13.x, 12.x, 13.x).
        return raw, raw_close, ""
    if (
        raw == "ERROR"
        and case["id"].split(".")[0] in ("12", "13")
        and "sec-websocket-extensions" not in (case.get("httpResponse") or "").lower()
    ):
        # The case would report UNIMPLEMENTED (no permessage-deflate in the 101), but its onMessage
        # hashes the hub's unsolicited text welcome frame as str and raises first.
        return "UNIMPLEMENTED", "NOT EXERCISED", "kosoku case error on the welcome frame; no permessage-deflate negotiated"
    if not expected:
        close = raw_close if raw_close == "OK" else "NOT EXERCISED"
        return "NOT EVALUABLE", close, "case checks echoed messages itself; needs an echo endpoint"
    received = normalise_received(case.get("received") or [])
    match = None
    for outcome in BEHAVIOURS:  # prefer OK over NON-STRICT etc. when several match
        if outcome in expected and normalise_expected(expected[outcome]) == received:
            match = outcome
            break
    if match is None:
        return raw, raw_close, "events differ beyond the missing echo"
    close = raw_close
    exp_close = case.get("expectedClose") or {}
    if (
        match != raw
        and raw_close in BAD_CLOSE
        and exp_close.get("closedByMe")
        and not case.get("closedByMe")
        and case.get("droppedByMe")
    ):
        close = "NOT EXERCISED"
    return match, close, "matches once hub replies stand in for echoes" if match != raw else ""


def fails(behaviour: str, close: str, strict: bool, raw: bool) -> bool:
    # The echo endpoint negotiates permessage-deflate, so on the raw gate an UNIMPLEMENTED
    # 12.x/13.x case means compression stopped being negotiated: a regression.
    return (behaviour in ("FAILED", "ERROR") or close in BAD_CLOSE or (strict and behaviour == "NON-STRICT")
            or (raw and behaviour == "UNIMPLEMENTED"))


def table(title: str, rows: dict[str, Counter], columns: list[str]) -> str:
    cols = [c for c in columns if any(r[c] for r in rows.values())] or columns[:1]
    head = ["group"] + cols + ["total"]
    lines = [title, "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, counts in rows.items():
        lines.append("| " + " | ".join([name] + [str(counts[c]) for c in cols] + [str(sum(counts.values()))]) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report_dir", type=Path)
    ap.add_argument("--gate", choices=["raw", "codec"], default="raw",
                    help="which verdict decides the exit status (default: raw)")
    ap.add_argument("--strict", action="store_true", help="NON-STRICT cases fail the gate too")
    args = ap.parse_args()

    try:
        index = json.loads((args.report_dir / "index.json").read_text())
    except (OSError, ValueError) as e:
        print(f"summarize: cannot read {args.report_dir}/index.json: {e}", file=sys.stderr)
        return 2
    cases = []
    for agent, entries in index.items():
        for case_id, entry in entries.items():
            case = json.loads((args.report_dir / entry["reportfile"]).read_text())
            cb, cc, note = codec_verdict(case)
            cases.append({
                "id": case_id,
                "group": case_id.split(".")[0],
                "behavior": case["behavior"],
                "behaviorClose": case["behaviorClose"],
                "codecBehavior": cb,
                "codecBehaviorClose": cc,
                "note": note,
                "result": case.get("result"),
                "resultClose": case.get("resultClose"),
                "remoteCloseCode": case.get("remoteCloseCode"),
                "remoteCloseReason": case.get("remoteCloseReason"),
                "received": case.get("received"),
                "expected": case.get("expected"),
                "expectedClose": case.get("expectedClose"),
                "description": case.get("description"),
                "httpResponse": case.get("httpResponse"),
            })
    cases.sort(key=lambda c: case_key(c["id"]))

    def by_group(field: str) -> dict[str, Counter]:
        rows: dict[str, Counter] = defaultdict(Counter)
        for c in cases:
            g = c["group"]
            rows[f"{g}.x {GROUPS.get(g, '')}".strip()][c[field]] += 1
        total = Counter()
        for r in list(rows.values()):
            total.update(r)
        rows["all"] = total
        return rows

    print(f"Autobahn fuzzingclient: {len(cases)} cases ({args.report_dir})\n")
    print(table("Raw Autobahn behaviour (messages):", by_group("behavior"), BEHAVIOURS) + "\n")
    print(table("Raw Autobahn close behaviour:", by_group("behaviorClose"), CLOSE_BEHAVIOURS) + "\n")
    print(table("Codec behaviour (hub replies count as echoes):", by_group("codecBehavior"), CODEC_BEHAVIOURS) + "\n")
    print(table("Codec close behaviour:", by_group("codecBehaviorClose"), CODEC_CLOSE_BEHAVIOURS) + "\n")

    problems = [c for c in cases if fails(c["codecBehavior"], c["codecBehaviorClose"], True, False)]
    print(f"Cases with a codec problem (FAILED / NON-STRICT / bad close after discounting the missing echo): {len(problems)}")
    for c in problems:
        print(f"  {c['id']:>8}  {c['codecBehavior']}/{c['codecBehaviorClose']}  close={c['remoteCloseCode']} "
              f"{(c['remoteCloseReason'] or '')[:50]!r}  -- {c['result']} / {c['resultClose']}")

    gate_fields = ("behavior", "behaviorClose") if args.gate == "raw" else ("codecBehavior", "codecBehaviorClose")
    raw = args.gate == "raw"
    failing = [c["id"] for c in cases if fails(c[gate_fields[0]], c[gate_fields[1]], args.strict, raw)]
    (args.report_dir / "summary.json").write_text(json.dumps(
        {"gate": args.gate, "strict": args.strict, "failing": failing, "cases": cases}, indent=1))
    rule = ("FAILED/ERROR" + ("/UNIMPLEMENTED" if raw else "") + " or a FAILED/WRONG CODE/UNCLEAN close"
            + (" or NON-STRICT" if args.strict else ""))
    print(f"\nGate ({args.gate} verdicts; fails on {rule}): "
          + ("PASS" if not failing else f"FAIL, {len(failing)} cases"))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
