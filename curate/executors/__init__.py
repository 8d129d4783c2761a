"""What runs the stages: :mod:`~curate.executors.local` in this process (the default) or
:mod:`~curate.executors.ray` on a Ray cluster (imported only when chosen). Both share
:mod:`~curate.executors.base` and produce byte-identical output."""
