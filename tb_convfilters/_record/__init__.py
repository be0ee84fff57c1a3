"""The stored record: what one logged step of one layer is on disk, byte for byte.

``metadata`` (plugin name, SummaryMetadata), ``layouts`` (axis letters), ``encoding`` (the
four blobs ``[header, payload, stats, checks]``), ``stats`` and ``stats_compiled`` (per-filter
statistics), ``firing`` (activation firing rates), ``gradients`` (kernel gradient norms),
``record`` (a user's array checked and made into one step's record), ``events`` (TFRecord
framing of event records), ``files`` (log paths and URLs).
"""
