"""Task statistics from the instructions table: tasks and entries per image (IMAX's measure).

IMAX (image-centric multi-annotation) reports 4.10 tasks and 7.46 training entries per
chest X-ray; these figures are the same measure, per source (the sample's canonical
member) and overall, over every sample the index keeps (a sample with no entry counts
as zero). ``entries_per_image_en`` counts English entries only, the monolingual figure
comparable with IMAX's.
"""

from __future__ import annotations

IMAX_TASKS_PER_IMAGE = 4.10
IMAX_ENTRIES_PER_IMAGE = 7.46

PER_SOURCE = """
WITH kept AS (
    SELECT s.sample_id, c.source_id FROM samples s
    JOIN members c ON c.sample_id = s.sample_id AND c.canonical
    WHERE s.status = 'keep'
), per_image AS (
    SELECT k.sample_id, k.source_id, count(i.entry_id) AS entries,
           count(i.entry_id) FILTER (WHERE i.language = 'en') AS entries_en, count(DISTINCT i.task) AS tasks
    FROM kept k LEFT JOIN instructions i ON i.sample_id = k.sample_id
    GROUP BY 1, 2
)
SELECT {key} AS source, count(*) AS images, count(*) FILTER (WHERE entries > 0) AS with_entries,
       round(avg(tasks), 2) AS tasks_per_image, round(avg(entries), 2) AS entries_per_image,
       round(avg(entries_en), 2) AS entries_per_image_en, sum(entries)::BIGINT AS entries
FROM per_image {group}
"""


def task_stats(con) -> list[dict]:
    """One row per source and a last row 'all': images, tasks_per_image, entries_per_image, ..."""
    from curator.audit.db import rows

    by_source = rows(con, PER_SOURCE.format(key="source_id", group="GROUP BY 1 ORDER BY 1"))
    overall = rows(con, PER_SOURCE.format(key="'all'", group=""))
    return by_source + [r for r in overall if r["images"]]


def task_mix(con) -> list[dict]:
    """Entries per task family, task and form, with the share of all entries."""
    from curator.audit.db import rows

    return rows(
        con,
        """
        SELECT family, task, form, count(*) AS entries, count(DISTINCT sample_id) AS images,
               round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS percent
        FROM instructions GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        """,
    )
