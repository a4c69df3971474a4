"""The offline critic as a gate: degenerate outputs against real answers, and critic-curator agreement.

Run as: python bench/critic_gate.py [critic/data/gate.jsonl]

The set (critic/data/gate.jsonl, one {"label", "kind", "question", "answer", "origin"} per
line): real answers from the Talks excerpts in tests/data (label good), and degenerate
outputs of each kind (label degenerate): hand-written ones and twenty samples of a real
tiny model (training.tiny) at random weights and after 50, 150 and 400 steps of training.

Baseline: the same critic's signals without the degeneracy rule (offline-signals-v1, the
score `base + sum(signals)` held to the floor), measured in the same run. Printed: per kind,
how many score <= 2 (the goal for degenerate ones) and at or above 6 (the seed's gate) with
and without the rule; the good answers' mean; and the critic against the set's labels as
curators' decisions (good = accept, degenerate = reject) through curation.review's
critic_agreement, at the review threshold (7) and the seed's gate (6).
Also: false alarms of the rule on every answer of the Talks books in ../shared/data, when there.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from critic.degenerate import degeneracy  # noqa: E402
from critic.offline import OfflineCritic  # noqa: E402
from curation.review import critic_agreement, kappa_words  # noqa: E402

GATE = 6.0
DEGENERATE_MAX = 2.0
BOOKS = ROOT.parent / "shared" / "data" / "books"


def baseline_score(critic: OfflineCritic, question: str, answer: str) -> float:
    """The score before the degeneracy rule: the signals alone."""
    total = round(critic.config.base + sum(s.delta for s in critic.signals(question, answer)), 1)
    return min(10.0, max(critic.config.floor, total))


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "critic" / "data" / "gate.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    critic = OfflineCritic()
    started = time.perf_counter()
    for row in rows:
        record = critic.critique(row["question"], row["answer"])
        row["score"] = record.score
        row["rationale"] = record.rationale
        row["baseline"] = baseline_score(critic, row["question"], row["answer"])
    elapsed = time.perf_counter() - started
    by_kind: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        by_kind[(row["label"], row["kind"])].append(row)

    print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {len(rows)} outputs, {elapsed * 1000 / len(rows):.2f} ms each")
    print(f"{'label':<11}{'kind':<22}{'n':>4}  {'<=2 now':>8}{'<=2 base':>9}  {'>=6 now':>8}{'>=6 base':>9}  mean now / base")
    for (label, kind), group in sorted(by_kind.items()):
        now = [r["score"] for r in group]
        base = [r["baseline"] for r in group]
        low_now = sum(s is not None and s <= DEGENERATE_MAX for s in now)
        low_base = sum(s <= DEGENERATE_MAX for s in base)
        pass_now = sum(s is not None and s >= GATE for s in now)
        pass_base = sum(s >= GATE for s in base)
        mean_now = statistics.fmean(s for s in now if s is not None)
        print(f"{label:<11}{kind:<22}{len(group):>4}  {low_now:>8}{low_base:>9}  {pass_now:>8}{pass_base:>9}  {mean_now:.2f} / {statistics.fmean(base):.2f}")
    degenerate = [r for r in rows if r["label"] == "degenerate"]
    caught = sum(r["score"] <= DEGENERATE_MAX for r in degenerate)
    caught_base = sum(r["baseline"] <= DEGENERATE_MAX for r in degenerate)
    passed = sum(r["score"] >= GATE for r in degenerate)
    passed_base = sum(r["baseline"] >= GATE for r in degenerate)
    print(f"degenerate scored <= 2: {caught}/{len(degenerate)} (baseline {caught_base}/{len(degenerate)}); "
          f"passing the seed's gate of {GATE:g}: {passed}/{len(degenerate)} (baseline {passed_base}/{len(degenerate)})")
    missed = [r for r in degenerate if r["score"] > DEGENERATE_MAX]
    for row in missed:
        print(f"  missed ({row['kind']}, {row['score']}): {row['answer'][:90]!r}")

    frame = pl.DataFrame(
        {
            "item_id": [str(i) for i in range(len(rows))],
            "critic_score": [r["score"] for r in rows],
            "decision_state": ["accept" if r["label"] == "good" else "reject" for r in rows],
        }
    )
    base_frame = frame.with_columns(pl.Series("critic_score", [r["baseline"] for r in rows]))
    for threshold in (7.0, GATE):
        now, base = critic_agreement(frame, threshold), critic_agreement(base_frame, threshold)
        print(
            f"critic vs curators' labels, keep at >= {threshold:g}: agreement {now.agreement:.1%}, kappa {now.kappa:.2f} "
            f"({kappa_words(now.kappa)}); baseline {base.agreement:.1%}, kappa {base.kappa:.2f} ({kappa_words(base.kappa)})"
        )

    if BOOKS.is_dir():
        from curation.dialogue import parse_dialogue

        n = 0
        alarms = []
        started = time.perf_counter()
        for book in sorted(BOOKS.glob("talks-*.txt")):
            for item in parse_dialogue(book.read_text(encoding="utf-8"), book.stem).items:
                if item["is_silence"] or not item["answer"].strip():
                    continue
                n += 1
                found = degeneracy(item["question"], item["answer"])
                if found is not None:
                    alarms.append((book.name, item["section"], found.describe(), item["answer"][:80]))
        elapsed = time.perf_counter() - started
        print(f"false alarms on the Talks books: {len(alarms)} of {n} real answers ({elapsed:.1f} s with parsing)")
        for alarm in alarms[:5]:
            print("  ", *alarm)


if __name__ == "__main__":
    main()
