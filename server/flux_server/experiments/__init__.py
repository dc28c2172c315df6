"""A/B experiments between style presets: assigning a request to an arm, the served
records that feedback refers to, and the counts of the report."""
