"""Caption generators and their parts.

- ``prompts``: versioned prompt files and their rendering into chat messages
- ``client``: the OpenAI-compatible chat client (retries, backoff, caps, accounting, format fallback)
- ``pace``: adaptive concurrency: as many requests in flight as the endpoint sustains
- ``reply``: the caption list's JSON schema and the classification of a reply (ok, prose, refusal...)
- ``captioner``: one (triplet, language) job: ask, validate, re-ask for what is missing
- ``validate``: the checks every caption must pass, whatever wrote it
- ``cache``: content-addressed answers stored in the corpus
- ``offline``: the deterministic template generator (``generator=template``)
- ``diversity``: distinct-1/2 and length, per generator and language, beside UniMed's reference
"""
