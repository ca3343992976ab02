"""All of the desk's SQL: typed rows out, never a commit (the unit of work commits)."""
