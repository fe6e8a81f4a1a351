"""Care management: assessment and scoring, SDOH derivation, care plans, coordination,
follow-up, goals, eligibility and the worklist."""
