"""The controller: page-align, coalesce, de-duplicate and rate-limit ranges,
then send them to the kernel's hint buffer."""
