"""Stage summaries as printed tables: what a person reads after each stage."""

from __future__ import annotations

import click


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def print_ingest(results) -> None:
    click.echo("ingest")
    w = max([20, *(len(r.source_id) for r in results)])
    click.echo(f"  {'source':<{w}} {'seen':>6} {'indexed':>8} {'images':>7} {'rejected':>9}  rejects by reason")
    total = [0, 0, 0, 0]
    for r in results:
        s = r.stats
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(s.rejects.items())) or "-"
        note = "  (unchanged, skipped)" if r.skipped else ""
        click.echo(
            f"  {r.source_id:<{w}} {s.seen:>6} {s.indexed_items:>8} {s.images:>7} {s.rejected:>9}  {reasons}{note}"
        )
        notes = [f"{k}={v}" for k, v in sorted(s.skipped.items()) if v]
        if notes:
            click.echo(f"  {'':<{w}} skipped, not inputs: {', '.join(notes)}")
        if s.split_conflicts:
            click.echo(f"  {'':<{w}} {s.split_conflicts} image(s) given different splits by their rows: strictest kept")
        if getattr(r, "root_used", ".") != ".":
            click.echo(f"  {'':<{w}} read {r.root_used}/ below --root (the archive's top folder)")
        for i, v in enumerate((s.seen, s.indexed_items, s.images, s.rejected)):
            total[i] += v
    if len(results) > 1:
        click.echo(f"  {'total':<{w}} {total[0]:>6} {total[1]:>8} {total[2]:>7} {total[3]:>9}")
    for r in results:  # videos, cine loops and slides: what the policy left out, and failed parts of indexed files
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(r.stats.skipped_frames.items()))
        parts = ", ".join(f"{k}={v}" for k, v in sorted(r.stats.part_rejects.items()))
        if skipped or parts:
            click.echo(
                f"  {r.source_id}: frames/tiles skipped {skipped or '-'}; failed parts of indexed files {parts or '-'}"
            )
    failed = sorted((uid, err) for r in results for uid, err in r.failed.items())
    if failed:
        click.echo(f"  {len(failed)} unit(s) failed (the finished ones are kept; re-run to retry these):")
        for uid, err in failed:
            click.echo(f"  failed {uid}: {err}")


def print_caption_plan(plan, dry_run: bool) -> None:
    click.echo("caption plan")
    if plan.generator == "template":
        click.echo("  generator   template (offline; no LLM endpoint configured)")
    else:
        click.echo(
            f"  generator   llm: model {plan.model or '(asked of the endpoint at run time)'} at {plan.endpoint.host}"
        )
    images = sum(plan.images.values())
    click.echo(
        f"  {images} label-only images, {len(plan.triplets)} unique triplets x {len(plan.languages)} languages "
        f"({', '.join(plan.languages)}) = {plan.planned} calls planned"
    )
    if plan.generator == "llm":
        cached = "unknown (model not set)" if plan.cached is None else str(plan.cached)
        to_call = "?" if plan.to_call is None else str(plan.to_call)
        cost = f", estimated cost {plan.est_cost:.4f}" if plan.est_cost is not None else ""
        click.echo(
            f"  cached {cached}, to call {to_call}; estimated tokens {plan.est_prompt_tokens:,} prompt + "
            f"{plan.est_completion_tokens:,} completion (before retries){cost}"
        )
    if dry_run:
        click.echo(f"  {'triplet_id':<16}  {'images':>6}  label | anatomy | modality")
        for t in plan.triplets:
            click.echo(f"  {t.id:<16}  {plan.images[t]:>6}  {t.label or '-'} | {t.anatomy} | {t.modality}")
        click.echo("  dry run: nothing called, nothing written")


def print_index(r) -> None:
    note = "  (unchanged, skipped)" if r.skipped else ""
    click.echo(f"index\n  {r.images} images -> {r.samples} samples, {r.kept} kept{note}")
    click.echo(
        f"  exact duplicates merged: {r.exact_same_source} within a source, {r.exact_cross_source} across sources "
        f"({r.merged_samples} samples hold several sources)"
    )
    action = "dropped" if r.near_dropped else "flagged"
    click.echo(
        f"  near-duplicates: {r.near_pairs} {action}"
        + (f" ({r.near_cross_split} across splits)" if r.near_cross_split else "")
    )
    click.echo(
        f"  splits: {r.split_conflicts} samples with disagreeing members, {r.split_moved} moved to the stricter split"
    )
    click.echo(f"  hold-out benchmarks: {r.held_out} samples excluded, {r.leak_flagged} near matches flagged")


def print_caption(result) -> None:
    gens = ", ".join(f"{k}={v}" for k, v in sorted(result.by_generator.items())) or "none"
    checks = ", ".join(f"{k}={v}" for k, v in sorted(result.by_validation.items())) or "-"
    note = "  (unchanged, skipped)" if result.skipped else ""
    click.echo(
        f"caption\n  {result.triplets} unique triplets, {result.captions} captions by generator: {gens}; "
        f"validation: {checks}{note}"
    )
    if result.generator == "llm":
        cost = f", cost {result.cost:.4f}" if result.cost is not None else ""
        click.echo(
            f"  llm {result.model} at {result.endpoint}: {result.jobs} jobs, {result.cached_jobs} cached, "
            f"{result.failed_jobs} failed; {result.requests} requests ({result.retries} retries); "
            f"tokens {result.prompt_tokens:,} prompt + {result.completion_tokens:,} completion{cost}"
        )
    if result.pace is not None:
        for line in pace_lines(result.pace, result.response_format):
            click.echo(f"  {line}")
    if "template" in result.by_generator:
        if result.generator == "llm":
            click.echo(
                f"  fallback: {result.fallback_jobs} triplet-languages completed by the offline generator "
                "(generator=template) where the LLM gave too few usable captions"
            )
        else:
            click.echo("  note: generator=template is the offline generator (no LLM endpoint configured)")
    if result.diversity:
        for line in diversity_lines(result.diversity):
            click.echo(f"  {line}")


def pace_lines(p, response_format: str | None) -> list[str]:
    """What pace the endpoint sustained, and what to set next time (a PaceStats)."""
    median = f"{p.median_latency:.2f} s" if p.median_latency is not None else "-"
    slowest = f"{max(p.latencies):.2f} s" if p.latencies else "-"
    lines = [
        f"pace {p.mode}: settled at {p.sustained} in flight (most {p.max_in_flight}, ceiling {p.ceiling}); "
        f"median reply {median}, slowest {slowest}; {p.backoffs} back-offs, {p.timeouts} timeouts, "
        f"{p.overloaded} overloaded (429/5xx); structured output: {response_format}"
    ]
    advice = p.advice()
    if p.mode == "adaptive":
        tip = [f"caption.concurrency_start = {advice['concurrency']}"]
        if advice["timeout"] is not None:
            tip.append(f"caption.timeout = {advice['timeout']:g}")
        if p.sustained >= p.ceiling:
            tip.append(f"caption.concurrency above {p.ceiling} (the endpoint kept up at the ceiling)")
        lines.append("next time against this endpoint: " + ", ".join(tip))
    return lines


def diversity_lines(rows: list[dict]) -> list[str]:
    """The diversity table (curator.llm.diversity.measure) beside UniMed's released captions."""
    from curator.llm.diversity import REFERENCE

    def f(v) -> str:
        return "-" if v is None else f"{v:.2f}"

    head = (
        f"{'generator':<31} {'lang':<4} {'triplets':>8} {'d1 in':>6} {'d2 in':>6} {'d1 all':>6} {'d2 all':>6}  length"
    )
    lines = ["diversity: distinct-1/2 within a triplet (in) and across the corpus (all); mean length +- sd", head]
    for r in [*rows, REFERENCE]:
        sd = f" +- {r['length_sd']:.1f}" if r["length_sd"] is not None else ""
        lines.append(
            f"{r['generator']:<31} {r['language']:<4} {r['triplets']:>8} {f(r['distinct1_within']):>6} "
            f"{f(r['distinct2_within']):>6} {f(r['distinct1_corpus']):>6} {f(r['distinct2_corpus']):>6}  "
            f"{r['mean_length']:.1f}{sd} {r['unit']}"
        )
    return lines


def print_shards(result, out: str) -> None:
    total = sum(s.bytes for s in result.shards)
    note = "  (unchanged, skipped)" if result.skipped else ""
    kept = sum(s.kept for s in result.shards) if not result.skipped else 0
    resumed = f", {kept} kept from an earlier run (verified)" if kept else ""
    click.echo(f"shard\n  {result.samples} samples in {len(result.shards)} shards, {human(total)}{note}{resumed}")
    for s in result.shards:
        click.echo(f"  {s.url:<40} {s.nsamples:>5} samples  {human(s.bytes):>10}")
    if result.classes:
        click.echo(f"  {len(result.classes)} classes for .cls (shards/classes.json)")
    click.echo(f"  written to {out}")


def print_instruct(result) -> None:
    from curator.instruct.llm_pass import summary_lines
    from curator.instruct.stats import IMAX_ENTRIES_PER_IMAGE, IMAX_TASKS_PER_IMAGE

    note = "  (unchanged, skipped)" if result.skipped else ""
    tasks = ", ".join(f"{k}={v}" for k, v in sorted(result.by_task.items())) or "none"
    langs = ", ".join(f"{k}={v}" for k, v in sorted(result.by_language.items())) or "-"
    click.echo(
        f"instruct\n  {result.entries} entries for {result.with_entries} of {result.samples} images{note}\n"
        f"  by task: {tasks}; by language: {langs}"
    )
    drops = ", ".join(f"{k}={v}" for k, v in sorted(result.drops.items()))
    click.echo(f"  dropped: {drops}" if drops else "  dropped: none")
    for line in summary_lines(getattr(result, "llm", None)):  # the [instruct.llm] passes, when asked for
        click.echo(line)
    if result.stats:
        w = max([10, *(len(r["source"]) for r in result.stats)])
        click.echo(f"  {'source':<{w}} {'images':>7} {'tasks/img':>10} {'entries/img':>12} {'en/img':>7}")
        for r in result.stats:
            click.echo(
                f"  {r['source']:<{w}} {r['images']:>7} {r['tasks_per_image']:>10.2f} "
                f"{r['entries_per_image']:>12.2f} {r['entries_per_image_en']:>7.2f}"
            )
        click.echo(
            f"  reference: IMAX {IMAX_TASKS_PER_IMAGE:.2f} tasks and {IMAX_ENTRIES_PER_IMAGE:.2f} entries per image"
        )
    for name in sorted({r["mixture"] for r in result.mixtures}):
        parts = ", ".join(
            f"{r['family']} {r['percent']:.1f}% (w {r['weight']:g})" for r in result.mixtures if r["mixture"] == name
        )
        click.echo(f"  mixture {name}: {parts}")
