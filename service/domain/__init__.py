"""Pure domain model: facts in, assessment and recommendations out. Imports nothing of ours."""
