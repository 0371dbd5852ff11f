"""Mutation check of the core (issue 24): hand-written mutants of the rewards, the GRPO loss and
advantages, the group step and the collapse guard, each run against the tests that cover its file.

    python tests/mutation.py                  all mutants (7 minutes on 2 idle CPU cores, 15 under load)
    python tests/mutation.py --only G12,S3    some of them
    python tests/mutation.py --list           the list, each snippet checked to occur once
    python tests/mutation.py --out FILE       also write the table (markdown) to FILE

Never touches the checkout it is run from: the tracked and untracked (not ignored) files are
copied into a temporary folder, ONE mutant at a time is applied there (an exact source snippet
replaced, the file checked to compile), the covering tests run there (pytest -x, a per-mutant
timeout), and the file is restored. A mutant is killed when the tests fail (or time out) and
survives when they pass. The covering tests are first run unmutated: a failing baseline stops
the run, since every mutant would then look killed.

A mutant marked `equivalent` computes what the original does for every input the library can
give it (the reason is its note); it is counted, and expected to survive. Not part of CI (too
slow); the last result is in bench/RESULTS.md ("Mutation check (issue 24)").
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str            # relative to the repository root
    old: str             # an exact snippet, found exactly once in the file
    new: str
    what: str            # one line: the defect planted
    equivalent: str = ""  # why it cannot be told apart (empty: a test must kill it)


R, G, S, U = "ttrv_core/method/rewards.py", "ttrv_core/method/grpo.py", "ttrv_core/method/step.py", "ttrv_core/method/guard.py"

MUTANTS: tuple[Mutant, ...] = (
    # ------------------------------------------------------------------ rewards.py
    Mutant("R1", R, "return [counts[v] / n for v in votes]", "return [counts[v] / (n + 1) for v in votes]",
           "frequency: count / (N + 1), off by one"),
    Mutant("R2", R, "return Counter(votes).most_common(1)[0][0]", "return Counter(votes).most_common()[-1][0]",
           "majority answer: the least common one"),
    Mutant("R3", R, "return [float(v == maj) for v in votes]", "return [float(v != maj) for v in votes]",
           "majority reward: comparison flipped"),
    Mutant("R4", R, "return -sum((c / n) * math.log(c / n)", "return sum((c / n) * math.log(c / n)",
           "entropy: sign dropped"),
    Mutant("R5", R, "math.log(c / n) for c in Counter(votes).values()",
           "math.log2(c / n) for c in Counter(votes).values()", "entropy: bits instead of nats"),
    Mutant("R6", R, "return entropy(votes) / math.log(m) if m > 1 else 0.0",
           "return entropy(votes) / math.log(m) if m > 2 else 0.0", "normalized_entropy: 0 also for M = 2"),
    Mutant("R7", R, "return entropy(votes) / math.log(m) if m > 1 else 0.0",
           "return entropy(votes) / math.log(len(votes)) if m > 1 else 0.0",
           "normalized_entropy: ln N instead of ln M (the paper's normalisation lost)"),
    Mutant("R8", R, "return entropy(votes) / math.log(n) if n > 1 else 0.0",
           "return entropy(votes) / math.log(len(set(votes))) if len(set(votes)) > 1 else 0.0",
           "vote_entropy: ln M instead of ln N (the plotted measure)"),
    Mutant("R9", R, "total = [r - alpha * h for r in r1]", "total = [r + alpha * h for r in r1]",
           "ttrv: entropy term added instead of subtracted"),
    Mutant("R10", R, '"entropy_norm": [h] * len(votes)', '"entropy_norm": [0.0] * len(votes)',
           "ttrv: the entropy component reported as 0"),
    Mutant("R11", R, "lam: float = 1.0) -> tuple[list[float], dict[str, list[float]]]:\n    \"\"\"Dispatch",
           "lam: float = 1.0) -> tuple[list[float], dict[str, list[float]]]:\n    alpha = 0.75\n    \"\"\"Dispatch",
           "compute_rewards: the alpha asked for ignored (0.75 always)"),
    Mutant("R12", R, "scale = n / math.log(n)", "scale = 1.0",
           "ttrv_marginal: the N / ln N scale dropped"),
    Mutant("R13", R, "(1 if b == a else 0)) / (n - 1)", "(1 if b == a else 0)) / n",
           "ttrv_marginal: leave-one-out shares over N, not N - 1"),
    Mutant("R14", R, "loo[a] = scale * (h_rest - h_all)", "loo[a] = scale * (h_all - h_rest)",
           "ttrv_marginal: the entropy credit's sign flipped"),
    Mutant("R15", R, "if n < 2:\n        return r1", "if n < 1:\n        return r1",
           "ttrv_marginal: a single vote no longer special-cased (ln 1 = 0)"),
    Mutant("R16", R, "k = max(k or len(counts), len(counts), 1)", "k = max(k or len(counts), 1)",
           "answer_prior: a K below the distinct answers seen is taken as given (priors sum over 1)"),
    Mutant("R17", R, "return {a: (c + 1) / total for a, c in counts.most_common()}",
           "return {a: c / total for a, c in counts.most_common()}", "answer_prior: add-one smoothing dropped"),
    Mutant("R18", R, "total = len(valid_votes) + k", "total = len(valid_votes) + len(counts)",
           "answer_prior: K ignored (distinct answers seen instead)"),
    Mutant("R19", R, 'return prior.get(answer, prior.get("", 0.0))', "return prior.get(answer, 0.0)",
           "prior_of: an answer no vote gave gets 0, not the smoothing floor"),
    Mutant("R20", R, "counts = Counter(v for v, ok in zip(votes, valid) if ok)", "counts = Counter(votes)",
           "calibrated: invalid votes counted toward answers",
           equivalent="validity is a function of the answer string (answers.is_valid): an invalid vote never "
                      "equals a valid one, so a valid vote's count is the same"),
    Mutant("R21", R, "freq = [counts[v] / n if ok", "freq = [counts[v] / sum(valid) if ok",
           "calibrated: frequency over the valid votes, not all N"),
    Mutant("R22", R, "total = [f - lam * p if ok", "total = [f + lam * p if ok",
           "calibrated: the prior added instead of subtracted"),
    Mutant("R23", R, "return calibrated_reward(votes, valid, prior, lam)",
           "return calibrated_reward(votes, valid, prior, 1.0)", "compute_rewards: lambda ignored"),
    Mutant("R24", R, "if valid is None or prior is None:", "if valid is None and prior is None:",
           "compute_rewards: calibrated without a prior is not refused"),
    Mutant("R25", R, "majority_share=counts[maj] / len(votes)", "majority_share=counts[maj] / len(counts)",
           "vote_stats: majority share over distinct answers, not votes"),
    # ------------------------------------------------------------------ grpo.py
    Mutant("G1", G, "if rewards.numel() < 2:", "if rewards.numel() < 1:",
           "group_advantages: a group of one no longer gets 0 (std of one value: NaN)"),
    Mutant("G2", G, "return ((r - r.mean()) / (r.std() + eps))", "return ((r - r.mean()) / (r.std(unbiased=False) + eps))",
           "group_advantages: biased std (verl's is unbiased)"),
    Mutant("G3", G, "return ((r - r.mean()) / (r.std() + eps))", "return (r / (r.std() + eps))",
           "group_advantages: the mean not subtracted"),
    Mutant("G4", G, "r = rewards.double()", "r = rewards",
           "group_advantages: float32 arithmetic (spurious advantage when all rewards are equal)"),
    Mutant("G5", G, "def group_advantages(rewards: torch.Tensor, eps: float = 1e-6)",
           "def group_advantages(rewards: torch.Tensor, eps: float = 0.0)", "group_advantages: eps 1e-6 -> 0"),
    Mutant("G6", G, "return (x * mask).sum() / mask.sum().clamp(min=1.0)", "return (x * mask).mean()",
           "masked_mean: padding counted in the token mean"),
    Mutant("G7", G, "return (x * mask).sum() / mask.sum().clamp(min=1.0)",
           "return ((x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()",
           "masked_mean: mean of the answers' means instead of the token mean"),
    Mutant("G8", G, "d = torch.where(mask.bool(), a - b, torch.zeros_like(a))", "d = (a - b) * mask",
           "masked_log_ratio: mask by multiplication (NaN gradient from a padded -1e4)"),
    Mutant("G9", G, "LOG_RATIO_CLAMP = 20.0", "LOG_RATIO_CLAMP = 100.0",
           "log-ratio clamp 20 -> 100 (exp overflows in fp32)"),
    Mutant("G10", G, "d = masked_log_ratio(ref_logp, logp, mask)", "d = masked_log_ratio(logp, ref_logp, mask)",
           "low_var_kl: KL in the other direction"),
    Mutant("G11", G, "return (torch.exp(d) - d - 1).clamp(-10, 10)", "return torch.exp(d) - d - 1",
           "low_var_kl: the [-10, 10] clamp dropped"),
    Mutant("G12", G, "ratio = torch.exp(masked_log_ratio(logp, old_logp, mask))",
           "ratio = torch.exp(masked_log_ratio(old_logp, logp, mask))", "ratio: pi_old / pi instead of pi / pi_old"),
    Mutant("G13", G, "pg2 = -a * ratio.clamp(1 - eps_clip, 1 + eps_clip)",
           "pg2 = -a * ratio.clamp(1 - eps_clip, 1 + 1.5 * eps_clip)", "clip: upper bound 1.2 -> 1.3"),
    Mutant("G14", G, "clipped = torch.maximum(pg1, pg2)", "clipped = torch.minimum(pg1, pg2)",
           "clip: the optimistic side (min) instead of the pessimistic (max)"),
    Mutant("G15", G, "pg = torch.where(a < 0, torch.minimum(clipped, -a * dual_clip), clipped)",
           "pg = clipped", "dual clip dropped"),
    Mutant("G16", G, "pg = torch.where(a < 0,", "pg = torch.where(a > 0,", "dual clip on the wrong sign of A"),
    Mutant("G17", G, "pg = torch.where(a < 0,", "pg = torch.where(a <= 0,", "dual clip also where A = 0",
           equivalent="where A = 0, pg1 = pg2 = 0 and -A c = 0: min(0, 0) = 0, the same value and gradient"),
    Mutant("G18", G, "loss = pg_loss + beta * kl", "loss = pg_loss", "the KL term dropped from the loss"),
    Mutant("G19", G, "clip_frac = masked_mean((pg2 > pg1).float(), mask)",
           "clip_frac = masked_mean((pg2 >= pg1).float(), mask)", "clip_frac counts ties as clipped"),
    Mutant("G20", G, "loss=loss, pg=pg_loss.detach()", "loss=loss, pg=loss.detach()",
           "loss/pg reported with the KL term in it"),
    Mutant("G21", G, "norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)",
           "norm = torch.nn.utils.clip_grad_norm_(params, float('inf'))", "apply (an update of one prompt or of k): gradient clip dropped"),
    Mutant("G22", G, "w = mask[s].sum() / total", "w = 1.0",
           "micro-batches: each part's token mean summed, not weighted by its share of tokens"),
    Mutant("G23", G, "    optimizer.zero_grad(set_to_none=True)\n    total = mask.sum()", "    total = mask.sum()",
           "_backward: gradients not cleared first (accumulate across calls)"),
    Mutant("G24", G, "(parts.loss * w if scale == 1.0 else parts.loss * (w * scale)).backward()",
           "(parts.loss * w).backward()", "gradient: `scale` ignored (an FSDP stand-in would count)"),
    Mutant("G25", G, "sums += w * torch.stack(", "sums = w * torch.stack(",
           "micro-batches: the stats of the last part only"),
    Mutant("G26", G, "policy.answers_per_forward = (chunk + 1) // 2", "policy.answers_per_forward = chunk - 1",
           "out of memory: one answer fewer instead of half"),
    # ------------------------------------------------------------------ step.py
    Mutant("S1", S, "torch.tensor(rewards[:cfg.n_train]", "torch.tensor(rewards[-cfg.n_train:]",
           "score: advantages from the last G rewards, not those of the G answers trained on"),
    Mutant("S2", S, "torch.tensor(rewards[:cfg.n_train]", "torch.tensor(rewards[:cfg.n_votes]",
           "score: N advantages for G trained answers (G vs N)"),
    Mutant("S3", S, "if st.majority_share < cfg.consensus:", "if st.majority_share <= cfg.consensus:",
           "consensus: a share equal to tau zeroed"),
    Mutant("S4", S, "adv = torch.zeros_like(adv)\n", "adv = adv\n", "consensus: never zeroes"),
    Mutant("S5", S, "invalid=1 - mean(map(float, valid))", "invalid=mean(map(float, valid))",
           "score: the valid share reported as invalid"),
    Mutant("S6", S, "st.entropy, mean(rewards),", "st.entropy, mean(rewards[:cfg.n_train]),",
           "score: the item's mean reward over the G trained, not the N votes"),
    Mutant("S7", S, '"grad/norm": mean(u.grad_norm for u in ups)', '"grad/norm": ups[-1].grad_norm',
           "step_metrics: grad/norm of the last update only"),
    Mutant("S8", S, '"time/train_s": t2 - t1', '"time/train_s": t2 - t0', "step_metrics: train time from t0"),
    Mutant("S9", S, '"answers/majority_share": mean(iv.majority_share', '"answers/majority_share": max(iv.majority_share',
           "step_metrics: max instead of mean majority share"),
    Mutant("S10", S, "updates = [range(i, min(i + k, len(batch)))", "updates = [range(i, min(i + k + 1, len(batch)))",
           "step: k + 1 prompts an update (an update overlaps the next)"),
    Mutant("S11", S, "scale=float(i >= 0))", "scale=float(i > 0))",
           "step: the first prompt weighted 0 like a stand-in"),
    Mutant("S12", S, "a += p.grad", "a.copy_(p.grad)", "step: the last prompt's gradient, not the sum"),
    Mutant("S13", S, "p.grad = a.div_(len(u))", "p.grad = a", "step: the sum over the update's prompts, not the mean"),
    Mutant("S14", S, "if cfg.prompts_per_update else gen", "if cfg.prompts_per_update else None",
           "step: k = 0 samples from the global RNG, not the run's stream"),
    Mutant("S15", S, "if not done:\n            kept.undo()", "if not done:\n            pass",
           "step: a step cut short is not undone"),
    Mutant("S16", S, "            done = True\n", "            done = False\n",
           "step: a completed step undone too"),
    # ------------------------------------------------------------------ guard.py
    Mutant("U1", U, "most_common(1)[0][1] / len(majorities)", "most_common(1)[0][1] / len(set(majorities))",
           "concentration: over distinct answers, not items"),
    Mutant("U2", U, "return max(FLOOR, (self.baseline or 0.0) + MARGIN, chance + MARGIN)",
           "return max(FLOOR, (self.baseline or 0.0) + MARGIN)", "threshold: chance level of K options ignored"),
    Mutant("U3", U, "chance = 1 / self.n_answers if self.n_answers else 0.0",
           "chance = 1 / (self.n_answers + 1) if self.n_answers else 0.0", "threshold: chance 1 / (K + 1)"),
    Mutant("U4", U, "FLOOR = 0.4", "FLOOR = 0.5", "floor 0.4 -> 0.5"),
    Mutant("U5", U, "MARGIN = 0.25", "MARGIN = 0.3", "margin 0.25 -> 0.3"),
    Mutant("U6", U, "WINDOW = 4", "WINDOW = 3", "window 4 -> 3 steps"),
    Mutant("U7", U, "PATIENCE = 2", "PATIENCE = 1", "patience 2 -> 1"),
    Mutant("U8", U, "if len(latest) < MIN_ITEMS:", "if len(latest) <= MIN_ITEMS:",
           "a window of exactly MIN_ITEMS items not judged"),
    Mutant("U9", U, "if c >= self.threshold():", "if c > self.threshold():",
           "a concentration exactly at the threshold judged healthy"),
    Mutant("U10", U, "            self.unhealthy = 0\n", "            pass\n",
           "unhealthy windows need not be in a row"),
    Mutant("U11", U, "self.restored_step, weights = self._healthy[0]", "self.restored_step, weights = self._healthy[-1]",
           "restore: the newest healthy state, not the oldest"),
    Mutant("U12", U, "            self.keep(step, model)\n", "            pass\n",
           "check: healthy states not kept"),
    Mutant("U13", U, "for d in self._window:", "for d in list(self._window)[-1:]:",
           "check: the latest step only, not the window"),
    Mutant("U14", U, "self.fired_at = step\n", "self.fired_at = step - 1\n", "fired_at one step early"),
)

# The tests that cover each file, fastest first (-x stops at the first failure).
COVER: dict[str, list[str]] = {
    R: ["ttrv_core/method/rewards.py", "tests/test_rewards.py", "tests/test_calibrated.py", "tests/test_entropy.py",
        "tests/test_properties.py"],
    G: ["ttrv_core/method/grpo.py", "tests/test_grpo_loss.py", "tests/test_rewards.py", "tests/test_mutants.py",
        "tests/test_grpo_update.py", "tests/test_microbatch.py"],
    S: ["tests/test_calibrated.py", "tests/test_mutants.py", "tests/test_stop.py", "tests/test_engine.py"],
    U: ["ttrv_core/method/guard.py", "tests/test_guard.py"],
}


def copy_tree(src: Path, dst: Path) -> None:
    """The checkout's tracked and untracked, not ignored, files (what git would see), no .git."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=src, check=True,
                         capture_output=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        s = src / rel
        if s.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, dst / rel)


def mutated(text: str, m: Mutant) -> str:
    n = text.count(m.old)
    if n != 1:
        raise ValueError(f"{m.name}: the snippet occurs {n} times in {m.file} (must be once): {m.old!r}")
    out = text.replace(m.old, m.new)
    compile(out, m.file, "exec")
    return out


def run_tests(tree: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """('pass' | 'fail' | 'timeout' | 'error', seconds, the last lines of the output)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    tests = [t for t in tests if (tree / t.split("::")[0]).exists()]
    if not tests:   # pytest with no paths would run the whole suite
        return "error", 0.0, "none of the covering tests exists"
    t = time.time()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                           cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.time() - t, ""
    tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-3:])
    status = {0: "pass", 1: "fail", 2: "fail", 3: "fail"}.get(p.returncode, "error")
    return status, time.time() - t, tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], help="mutant names, comma-separated (repeatable)")
    ap.add_argument("--out", type=Path, help="also write the table, in markdown, to this file")
    ap.add_argument("--list", action="store_true", help="list the mutants (snippets checked) and exit")
    ap.add_argument("--source", type=Path, default=ROOT, help="the checkout to copy (default: this one)")
    args = ap.parse_args(argv)
    only = {n for part in args.only for n in part.split(",") if n}
    chosen = [m for m in MUTANTS if not only or m.name in only]
    if unknown := only - {m.name for m in MUTANTS}:
        ap.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="ttrv-mutation-") as tmp:
        tree = Path(tmp)
        copy_tree(args.source.resolve(), tree)
        originals = {f: (tree / f).read_text() for f in COVER}
        for m in chosen:
            mutated(originals[m.file], m)           # every snippet found once and compiling, before any run
        if args.list:
            for m in chosen:
                print(f"{m.name:4} {m.file:22} {m.what}" + (f"  [equivalent: {m.equivalent}]" if m.equivalent else ""))
            return 0
        budget: dict[str, float] = {}
        for f in sorted({m.file for m in chosen}):
            status, secs, tail = run_tests(tree, COVER[f], 1800)
            print(f"baseline {f}: {status} in {secs:.0f}s  ({' '.join(COVER[f])})", flush=True)
            if status != "pass":
                print(f"the unmutated tests of {f} do not pass; fix them first:\n{tail}", file=sys.stderr)
                return 2
            budget[f] = 3 * secs + 60
        rows = []
        for m in chosen:
            (tree / m.file).write_text(mutated(originals[m.file], m))
            try:
                status, secs, _ = run_tests(tree, COVER[m.file], budget[m.file])
            finally:
                (tree / m.file).write_text(originals[m.file])
            result = {"fail": "killed", "timeout": "killed (timeout)", "pass": "SURVIVED"}.get(status, "error")
            rows.append((m, result, secs))
            note = f" [equivalent: {m.equivalent}]" if m.equivalent and result == "SURVIVED" else ""
            print(f"{m.name:4} {result:16} {secs:5.0f}s  {m.file:22} {m.what}{note}", flush=True)
    killed = sum(r.startswith("killed") for _, r, _ in rows)
    errors = [m.name for m, r, _ in rows if r == "error"]
    survivors = [(m, r) for m, r, _ in rows if r == "SURVIVED"]
    equivalent = sum(bool(m.equivalent) for m, _ in survivors)
    line = (f"mutation: {killed} killed of {len(rows)} ({100 * killed / max(len(rows), 1):.0f}%); "
            f"{len(survivors)} survived ({equivalent} equivalent)" + (f"; errors: {', '.join(errors)}" if errors else ""))
    print(line)
    if args.out:
        table = ["| mutant | file | result | s | mutation |", "|---|---|---|---|---|"]
        table += [f"| {m.name} | {m.file} | {r} | {s:.0f} | {m.what}"
                  + (f" (equivalent: {m.equivalent})" if m.equivalent else "") + " |" for m, r, s in rows]
        args.out.write_text("\n".join(table + ["", line, ""]))
    return 1 if errors or any(not m.equivalent for m, _ in survivors) else 0


if __name__ == "__main__":
    sys.exit(main())
