"""Text that stages share: protected spans (:mod:`~curate.text.spans`, the grammar; ``_spans.c``, its
native scanner), masking them for translation (:mod:`~curate.text.masking`), and the prose of a row's
conversations (:mod:`~curate.text.conversation`)."""
