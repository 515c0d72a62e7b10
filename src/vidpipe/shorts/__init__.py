"""The content side of faceless shorts: templates, scripts and scene visuals.

Pure-ish building blocks the job engine calls: ``templates`` (what a kind of short
looks and sounds like, as data), ``script`` (the narration plan, written offline, by
the user or by an OpenAI-compatible language model) and ``visuals`` (procedural stills
and chat screenshots the composer animates). Nothing here knows about jobs or steps.
"""
