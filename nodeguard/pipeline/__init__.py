"""The bookkeeping every stage shares: stored results reused or computed, resumable work, ranks."""
