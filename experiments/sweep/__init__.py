"""The theory wing: a linear-model experiment's config, its presets, the sweep runner that computes
its cells in resumable chunks, and the submitit jobs that spread the chunks over a cluster."""
