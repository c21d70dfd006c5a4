"""Building blocks every part uses: input checks, thread limits, progress.  Internal."""
