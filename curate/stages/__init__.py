"""The pipeline's stages, one file each: ``translate`` → ``structure`` → ``lid`` → ``equivalence``.

A stage takes a batch of whole parallel groups and returns the rows it keeps and the rows it rejects with
a reason (:mod:`curate.stages.base`); it never touches files or knows which executor runs it.
"""
