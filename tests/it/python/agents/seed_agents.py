"""Agents written as the seed writes them: classes with ``process_task(self, data)``,
knowing nothing of the fleet. ``python3 -m swarmd.agent seed_agents:EmailAgent`` serves
them unchanged."""

import re


class EmailAgent:
    def process_task(self, data):
        address = data.get("to", "")
        valid = re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", address) is not None
        return {"to": address, "valid": valid, "subject": data.get("subject", "").strip()}


class QualityScorer:
    def process_task(self, data):
        words = data["text"].split()
        distinct = len(set(w.lower() for w in words))
        return {"words": len(words), "score": round(100 * distinct / max(len(words), 1))}


class DraftReviewAgent:
    def process_task(self, data):
        body = data["body"]
        findings = [marker for marker in ("TODO", "{{") if marker in body]
        return {"approved": not findings, "findings": findings}
